"""A relying party we did not write: pysaml2's SP, as a small web service on loopback.

Usage:
  sp.py metadata CONFIG.json   prints the SP's metadata (for the IdP's local registry)
  sp.py serve CONFIG.json      serves https on CONFIG's port; prints "listening" when up

CONFIG: entity_id, base (https://127.0.0.1:PORT), port, key, cert (PEM files: the SP's
signing and encryption key, also its TLS key), idp_metadata (a file).

  GET  /login[?force=1][&passive=1]  a signed HTTP-Redirect AuthnRequest to the IdP
  POST /acs                          the IdP's Response: pysaml2 checks both signatures
                                     against the IdP's metadata, decrypts the assertion,
                                     checks InResponseTo, audience and times; the page
                                     shows what it got as JSON in <pre id="result">, or
                                     the error in <pre id="error">.
"""
import html
import json
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_PERSISTENT
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
                "assertion_consumer_service": [(conf["base"] + "/acs", BINDING_HTTP_POST)]
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
        if url.path != "/login":
            return self.page(404, "not here")
        q = urllib.parse.parse_qs(url.query)
        extra = {}
        if q.get("force"):
            extra["force_authn"] = "true"
        if q.get("passive"):
            extra["is_passive"] = "true"
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
                "relay_state": form.get("RelayState", [None])[0],
                "encrypted": b"EncryptedAssertion" in __import__("base64").b64decode(form["SAMLResponse"][0]),
            }
            self.page(200, f'<h1>Logged in</h1><pre id="result">{html.escape(json.dumps(result))}</pre>')
        except Exception as e:  # the page says what pysaml2 refused
            self.page(200, f'<h1>Not logged in</h1><pre id="error">{html.escape(type(e).__name__ + ": " + str(e))}</pre>')


server = ThreadingHTTPServer(("127.0.0.1", conf["port"]), Handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(conf["cert"], conf["key"])
server.socket = tls.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
