"""A relying party we did not write: pysaml2's SP reads one of our Responses.

Usage: sp.py RESPONSE_FILE IDP_METADATA SP_KEY SP_CERT SP_ENTITY_ID ACS_URL REQUEST_ID

It checks the Response's and the assertion's signatures against the IdP's metadata,
decrypts the assertion with the SP's key, checks InResponseTo, Destination, Audience and
the times, and prints what it got as JSON: the NameID, the LoA, the attributes. Any failure
is an exception: a non-zero exit with pysaml2's message.
"""
import base64
import json
import sys

from saml2 import BINDING_HTTP_POST
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.saml import NAMEID_FORMAT_PERSISTENT

response_file, idp_md, sp_key, sp_cert, entity_id, acs, request_id = sys.argv[1:8]

config = SPConfig()
config.load(
    {
        "entityid": entity_id,
        "key_file": sp_key,
        "cert_file": sp_cert,
        "encryption_keypairs": [{"key_file": sp_key, "cert_file": sp_cert}],
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "metadata": {"local": [idp_md]},
        "allow_unknown_attributes": True,
        "service": {
            "sp": {
                "endpoints": {"assertion_consumer_service": [(acs, BINDING_HTTP_POST)]},
                "want_response_signed": True,
                "want_assertions_signed": True,
                "want_assertions_or_response_signed": True,
                "allow_unsolicited": False,
                "authn_requests_signed": False,
                "name_id_format": [NAMEID_FORMAT_PERSISTENT],
            }
        },
    }
)
client = Saml2Client(config=config)
with open(response_file, "rb") as f:
    encoded = base64.b64encode(f.read()).decode()
response = client.parse_authn_request_response(
    encoded, BINDING_HTTP_POST, outstanding={request_id: "/"}
)
if response is None:
    sys.exit("pysaml2 returned no response")
info = response.authn_info()
print(
    json.dumps(
        {
            "issuer": response.issuer(),
            "name_id": response.name_id.text,
            "name_id_format": response.name_id.format,
            "loa": [c for c, _, _ in info],
            "attributes": response.ava,
        }
    )
)
