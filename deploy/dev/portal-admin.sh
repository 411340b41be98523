#!/usr/bin/env bash
# The admin portal's first administrator, for trying Tessera in this machine's browser. Run
# it in the shell `start.sh` opens (it is on the PATH there):
#
#   portal-admin.sh [--name "Ada Admin"] [--p12-password PASSWORD]
#
# It makes, through the issuer's API and the `tessera` CLI, what a deployment's first day
# makes: the first administrator from the bootstrap token (token in admin.token; an
# existing admin.token is used instead), the issuing desk's officers (hr, anna, bo; tokens
# beside it, reused if the README's walk-through made them), the administrator as a
# person, proofed by Anna and given a service ID that Bo approves, and the administrator's
# portal officer "portal-admin" linked to that person. The service ID's key is made here
# by openssl and packed with its certificate into portal-admin.p12 for the browser's
# certificate store: a development convenience only, because the reference card lives in
# start.sh's private namespace where the host's browser cannot reach it. In production the
# key is made on the officer's card and the browser uses the card through OpenSC's or
# Tessera's PKCS#11 module (docs/portal.md).
set -euo pipefail

name="Ada Admin"
password=""
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --p12-password) password="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "portal-admin.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
: "${TESSERA_URL:?run this in the shell start.sh opens (TESSERA_URL is not set)}"
[ -e issuer/bootstrap-admin.token ] || { echo "portal-admin.sh: run it in the data directory start.sh opens its shell in" >&2; exit 2; }
[ -n "$password" ] || password=$(openssl rand -hex 6)
given="${name%% *}"
family="${name#* }"
[ "$family" != "$name" ] || family="Admin"

# 1. The first administrator, from the bootstrap token (spent by it), unless there is one.
if [ ! -s admin.token ]; then
  tessera --token-file issuer/bootstrap-admin.token officer add admin --name "$name" --role administrator > admin.token
fi
# 2. The identity provider's service account at the issuer (reads who holds a card and the
#    status feed, nothing else); its token goes where the IdP reads it.
if [ -d idp ] && [ ! -s idp/issuer-api.token ]; then
  (umask 077; tessera --token-file admin.token officer add idp --name "Identity provider" \
    --role identity_provider > idp/issuer-api.token.new && mv idp/issuer-api.token.new idp/issuer-api.token)
fi
# 3. The issuing desk: HR and two registration officers (four eyes).
for o in hr:hr_admin anna:registration_officer bo:registration_officer; do
  [ -s "${o%:*}.token" ] || tessera --token-file admin.token officer add "${o%:*}" --name "${o%:*}" --role "${o#*:}" > "${o%:*}.token"
done
# 4. The administrator as a person, proofed in person, with a service ID approved by a
#    second officer; the key and the certificate in portal-admin/.
mkdir -p portal-admin
P=$(tessera --token-file hr.token --json person add --employee-number ADMIN-1 \
  --given-name "$given" --family-name "$family" | jq -r .id)
tessera --token-file anna.token proof "$P" --document-type passport --document-number DEV0000001 \
  --issuing-country SE --document-expiry 2035-01-01 --place "start.sh" --identity-number 198703121239 >/dev/null
C=$(tessera --token-file anna.token --json carrier add PORTAL-ADMIN-1 | jq -r .id)
A=$(tessera --token-file anna.token --json carrier assign "$C" --person "$P" --terms dev | jq -r '.[0].id')
tessera --token-file bo.token approve yes "$A" >/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out portal-admin/key.pem 2>/dev/null
openssl req -new -key portal-admin/key.pem -subj "/CN=portal-admin" -out portal-admin/request.pem
tessera --token-file anna.token carrier keys "$C" --csr authentication=portal-admin/request.pem \
  --certificates-out portal-admin >/dev/null
tessera --token-file anna.token carrier activate "$C" --receipt DEV-RECEIPT-1 >/dev/null
# 5. The administrator's portal officer, on that person.
tessera --token-file admin.token officer add portal-admin --name "$name" --role administrator --person "$P" > portal-admin/officer.token
# 6. The certificate and key for the browser.
openssl pkcs12 -export -inkey portal-admin/key.pem -in portal-admin/authentication.pem \
  -certfile issuer/issuing-ca.pem -name "$name (Tessera portal, development)" \
  -out portal-admin.p12 -passout "pass:$password"
rm -f portal-admin/key.pem

url="https://localhost:${TESSERA_PORTAL_PORT:-8443}/admin/"
cat <<EOF
The first administrator, $name, can sign in to the admin portal at
  $url
from this machine's browser with the certificate in
  $PWD/portal-admin.p12   (password: $password)
Chromium: Settings → Privacy and security → Security → Manage certificates → Your
certificates → Import; Firefox: Settings → Privacy & Security → View Certificates → Your
Certificates → Import. The portal's TLS certificate comes from the deployment's own TLS CA,
$PWD/issuer/tls-ca.pem: import it as an authority, or accept the browser's warning once.
EOF
