"""Runs scim2-tester's SCIM 2.0 compliance checks (python-scim, from PyPI) against a
Tessera issuer's /scim/v2: discovery, then create, read, list, attribute selection,
search, replace, delete and every PATCH add/replace/remove on the published User schema.

Usage: check.py BASE_URL TOKEN. Prints one line per check; exits 1 if any failed, or if
fewer checks ran than the endpoint should face.
"""

import sys

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

url, token = sys.argv[1], sys.argv[2]
http = httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
client = SyncSCIMClient(http)
client.discover()
results = check_server(client)
failed = [r for r in results if r.status == Status.ERROR]
for r in results:
    print(r.status.name, r.title, r.reason or "")
print(f"scim2-tester: {len(results)} checks, {len(failed)} failed")
# Every check answered (none skipped for want of a feature): discovery, CRUD, search, PATCH.
skipped = [r for r in results if r.status == Status.SKIPPED]
sys.exit(1 if failed or skipped or len(results) < 35 else 0)
