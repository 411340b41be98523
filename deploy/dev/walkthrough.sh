#!/usr/bin/env bash
# Runs the README's walk-through to a first service ID exactly as written (the block between
# its walkthrough markers), in a fresh `start.sh` on a data directory of its own, and checks
# the ends it promises: OCSP says good, the card's signature verifies. Then the README's
# portal step (between its portal markers) in the same shell, and from this (the host's)
# side, as a browser would: the portal answers on its address and the first administrator
# signs in with the certificate the step wrote; the identity provider serves its metadata,
# and its card login host takes that certificate in the TLS handshake.
set -euo pipefail
cd "$(dirname "$0")/../.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -n '/<!-- walkthrough:begin -->/,/<!-- walkthrough:end -->/p' README.md \
  | sed '1,2d;$d' | sed '$d' > "$work/commands"
if [ "$(grep -cv '^#' "$work/commands")" -gt 10 ]; then
  echo "the README's walk-through has more than ten commands" >&2
  exit 1
fi
# Each command as written, in one shell (their variables carry over); the first that fails
# (any part of an && chain) stops the walk-through and is named.
while IFS= read -r line; do
  case "$line" in '#'*|'') printf '%s\n' "$line" ;; *)
    printf 'eval %q || { echo "walk-through: this step failed: %s" >&2; exit 1; }\n' "$line" "${line//\"/}" ;;
  esac
done < "$work/commands" > "$work/walkthrough.sh"
sed -n '/<!-- portal:begin -->/,/<!-- portal:end -->/p' README.md | sed '1,2d;$d' | sed '$d' > "$work/portal"
[ -s "$work/portal" ] || { echo "the README has no portal step" >&2; exit 1; }
{
  cat "$work/portal"
  # The host's side checks the portal now; the namespace (and the portal) lives until then.
  echo 'for _ in $(seq 600); do [ -e "$DATA/host-checked" ] && break; sleep 0.1; done'
} >> "$work/walkthrough.sh"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
idp_port=$(free_port)
login_port=$(free_port)
echo "==> the README's walk-through, in a fresh start.sh (data: $work/data, portal port $port, IdP ports $idp_port and $login_port)"
DATA_DIR="$work/data" TESSERA_START_SCRIPT="$work/walkthrough.sh" TESSERA_PORTAL_PORT="$port" \
  TESSERA_IDP_PORT="$idp_port" TESSERA_LOGIN_PORT="$login_port" \
  TESSERA_BUILD_PROFILE="${TESSERA_BUILD_PROFILE:-dev}" deploy/dev/start.sh </dev/null >"$work/out" 2>&1 &
started=$!
tail -f "$work/out" --pid "$started" &
# Until the portal step has printed the certificate's password (or start.sh has ended).
for _ in $(seq 12000); do
  grep -q "(password: " "$work/out" && break
  kill -0 "$started" 2>/dev/null || break
  sleep 0.1
done
checked=false
idp_checked=false
if grep -q "(password: " "$work/out"; then
  password=$(sed -n 's/.*(password: \([^)]*\)).*/\1/p' "$work/out" | head -1)
  browser() {
    curl -sS --max-time 20 --cacert "$work/data/issuer/tls-ca.pem" --cert-type P12 \
      --cert "$work/data/portal-admin.p12:$password" -b "$work/jar" -c "$work/jar" "$@"
  }
  base="https://127.0.0.1:$port"
  csrf=$(browser "$base/admin/sign-in" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' | head -1)
  if [ -n "$csrf" ] && browser -o /dev/null -d "csrf=$csrf" "$base/admin/sign-in" \
      && browser "$base/admin/" | grep -q "Ada Admin"; then
    checked=true
  fi
  # The IdP from the host: its metadata, and its login host, which completes the TLS
  # handshake only with a certificate our CA issued (here the administrator's) and then
  # answers (an unknown login: its page says so).
  if curl -sf --max-time 20 "http://127.0.0.1:$idp_port/saml/metadata" | grep -q "IDPSSODescriptor" \
      && curl -s --max-time 20 -k --cert-type P12 --cert "$work/data/portal-admin.p12:$password" \
        "https://127.0.0.1:$login_port/login?p=none" | grep -q "has expired or was finished" \
      && ! curl -s --max-time 20 -k -o /dev/null "https://127.0.0.1:$login_port/login?p=none"; then
    idp_checked=true
  fi
fi
[ ! -d "$work/data" ] || touch "$work/data/host-checked"
wait "$started"
grep -q "authentication.pem: good" "$work/out" || { echo "walk-through: OCSP did not say good" >&2; exit 1; }
grep -q "^Verified OK" "$work/out" || { echo "walk-through: the signature did not verify" >&2; exit 1; }
$checked || { echo "walk-through: the first administrator could not sign in to the portal from the host" >&2; exit 1; }
$idp_checked || { echo "walk-through: the identity provider's metadata or card login was not reachable from the host as it should be" >&2; exit 1; }
grep -q "identity_provider" "$work/data/idp/issuer-api.token" 2>/dev/null && { echo "walk-through: the IdP's token file holds more than a token" >&2; exit 1; }
[ -s "$work/data/idp/issuer-api.token" ] || { echo "walk-through: the portal step did not give the IdP its issuer token" >&2; exit 1; }
echo "walk-through: OCSP good, signature verified; the first administrator signed in to the portal from the host; the IdP answered from the host"
