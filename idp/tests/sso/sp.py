"""A relying party we did not write: pysaml2's SP, as a small web service on loopback.

Usage:
  sp.py metadata CONFIG.json   prints the SP's metadata (for the IdP's local registry)
  sp.py serve CONFIG.json      serves https on CONFIG's port; prints "listening" when up

CONFIG: entity_id, base (https://127.0.0.1:PORT), port, key, cert (PEM files: the SP's
signing and encryption key, also its TLS key), idp_metadata (a file).

  GET  /login[?force=1][&passive=1][&principal=UID@ORGNR]
                                     a signed HTTP-Redirect AuthnRequest to the IdP
                                     (principal: a PrincipalSelection for orgAffiliation)
  POST /acs                          the IdP's Response: pysaml2 checks both signatures
                                     against the IdP's metadata, decrypts the assertion,
                                     checks InResponseTo, audience and times; the page
                                     shows what it got as JSON in <pre id="result">, or
                                     the error in <pre id="error">.
  POST /slo                          the IdP's LogoutRequest over SOAP: pysaml2 checks its
                                     signature against the IdP's metadata and its times,
                                     the script its Destination; answered with a SOAP
                                     LogoutResponse
  GET  /logouts                      the LogoutRequests taken, as JSON
"""
import base64
import html
import json
import re
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, BINDING_SOAP, ExtensionElement
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_PERSISTENT
from saml2.samlp import Extensions
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

mode, config_file = sys.argv[1:3]
with open(config_file) as f:
    conf = json.load(f)

settings = {
    "entityid": conf["entity_id"],
    "key_file": conf["key"],
    "cert_file": conf["cert"],
    "encryption_keypairs": [{"key_file": conf["key"], "cert_file": conf["cert"]}],
    "xmlsec_binary": "/usr/bin/xmlsec1",
    "allow_unknown_attributes": True,
    "service": {
        "sp": {
            "name": "Test e-service",
            "endpoints": {
                "assertion_consumer_service": [(conf["base"] + "/acs", BINDING_HTTP_POST)],
                "single_logout_service": [(conf["base"] + "/slo", BINDING_SOAP)],
            },
            "want_response_signed": True,
            "want_assertions_signed": True,
            "allow_unsolicited": False,
            "authn_requests_signed": True,
            "name_id_format": [NAMEID_FORMAT_PERSISTENT],
            # What the e-service asks for beyond the attribute set's required three.
            "required_attributes": ["givenName", "sn"],
            "optional_attributes": ["mail"],
        }
    },
}
if mode == "metadata":
    config = SPConfig()
    config.load(settings)
    sys.stdout.write(create_metadata_string(None, config=config, valid=24).decode())
    sys.exit(0)

settings["metadata"] = {"local": [conf["idp_metadata"]]}
config = SPConfig()
config.load(settings)
client = Saml2Client(config=config)
outstanding = {}
logouts = []
PSC = "http://id.swedenconnect.se/authn/1.0/principal-selection/ns"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def page(self, status, body):
        data = f"<!doctype html><html lang=en><title>SP</title><main>{body}</main></html>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/logouts":
            data = json.dumps(logouts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return self.wfile.write(data)
        if url.path != "/login":
            return self.page(404, "not here")
        q = urllib.parse.parse_qs(url.query)
        extra = {}
        if q.get("force"):
            extra["force_authn"] = "true"
        if q.get("passive"):
            extra["is_passive"] = "true"
        if q.get("principal"):
            match = ExtensionElement(
                "MatchValue", namespace=PSC, attributes={"Name": "urn:oid:1.2.752.201.3.1"},
                text=q["principal"][0],
            )
            selection = ExtensionElement("PrincipalSelection", namespace=PSC, children=[match])
            extra["extensions"] = Extensions(extension_elements=[selection])
        idp = list(client.metadata.identity_providers())[0]
        req_id, info = client.prepare_for_authenticate(
            entityid=idp,
            binding=BINDING_HTTP_REDIRECT,
            relay_state="rs-" + q.get("n", ["1"])[0],
            sign=True,
            sigalg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
            **extra,
        )
        outstanding[req_id] = "/"
        location = dict(info["headers"])["Location"]
        self.send_response(303)
        self.send_header("Location", location)
        self.end_headers()

    def do_POST(self):
        if self.path == "/slo":
            return self.logout()
        if self.path != "/acs":
            return self.page(404, "not here")
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        try:
            response = client.parse_authn_request_response(
                form["SAMLResponse"][0], BINDING_HTTP_POST, outstanding=outstanding
            )
            if response is None:
                raise Exception("pysaml2 returned no response")
            outstanding.pop(response.in_response_to, None)
            info = response.authn_info()
            result = {
                "issuer": response.issuer(),
                "name_id": response.name_id.text,
                "name_id_format": response.name_id.format,
                "loa": [c for c, _, _ in info],
                "authn_instant": [i for _, _, i in info],
                "attributes": response.ava,
                "session_index": response.assertion.authn_statement[0].session_index,
                "relay_state": form.get("RelayState", [None])[0],
                "encrypted": b"EncryptedAssertion" in __import__("base64").b64decode(form["SAMLResponse"][0]),
            }
            self.page(200, f'<h1>Logged in</h1><pre id="result">{html.escape(json.dumps(result))}</pre>')
        except Exception as e:  # the page says what pysaml2 refused
            self.page(200, f'<h1>Not logged in</h1><pre id="error">{html.escape(type(e).__name__ + ": " + str(e))}</pre>')

    def logout(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        try:
            # pysaml2's own SOAP unwrapping re-serialises the message with ElementTree,
            # which renames namespace prefixes and so breaks every exclusive-c14n
            # signature it did not make itself. The LogoutRequest's own bytes are taken
            # out of the envelope instead and given to pysaml2 as the POST binding would.
            match = re.search(r"<(\w+):LogoutRequest[\s>].*</\1:LogoutRequest>", body, re.S)
            if match is None:
                raise Exception("no LogoutRequest in the SOAP body")
            element = base64.b64encode(match.group(0).encode()).decode()
            request = client.parse_logout_request(element, BINDING_HTTP_POST)
            if request is None:
                raise Exception("pysaml2 returned no request")
            message = request.message
            if message.signature is None:
                raise Exception("the LogoutRequest is not signed")
            if message.destination != conf["base"] + "/slo":
                raise Exception("the LogoutRequest is for " + str(message.destination))
            logouts.append({
                "issuer": message.issuer.text,
                "name_id": message.name_id.text,
                "session_index": [s.text for s in message.session_index],
                "reason": message.reason,
            })
            response = client.create_logout_response(message, [BINDING_SOAP])
            # (pysaml2 hands back the response as text; its SOAP helper wants an object.)
            text = re.sub(r"^<\?xml[^>]*\?>", "", str(response)).strip()
            data = (
                '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
                + text + "</s:Body></s:Envelope>"
            ).encode()
            self.send_response(200)
        except Exception as e:  # a SOAP fault says what pysaml2 refused
            logouts.append({"error": type(e).__name__ + ": " + str(e)})
            data = (
                '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
                f"<faultcode>s:Client</faultcode><faultstring>{html.escape(str(e))}</faultstring>"
                "</s:Fault></s:Body></s:Envelope>"
            ).encode()
            self.send_response(500)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", conf["port"]), Handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(conf["cert"], conf["key"])
server.socket = tls.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
