#!/usr/bin/env bash
# Sets up and starts Tessera on its embedded default, in a data directory (DATA_DIR,
# default ./data):
#   - the issuer's embedded deployment in DATA_DIR/issuer (SQLite database, SoftHSM2 token
#     with the CA keys), created on the first run with `tessera-issuer init`;
#   - the reference PIV card's state (DATA_DIR/card.json) and its simulated manufacturer
#     CA, which the issuer trusts for the card's key attestations;
#   - in a private mount, network and PID namespace (the host's pcscd and network are
#     untouched): the issuer (`serve` on the namespace's 127.0.0.1:8080), a pcscd and the
#     reference card (tessera-card-sim), and a shell in DATA_DIR where the `tessera` CLI,
#     OpenSC, yubico-piv-tool, the Tessera PKCS#11 module and every PC/SC program see the
#     card and the issuer. Leave the shell to stop it all;
#   - the identity provider (`tessera-idp`, data in DATA_DIR/idp, made on the first run
#     with the issuer's CA and policy): SAML SSO at http://localhost:8445 (metadata at
#     /saml/metadata) and the card login at https://localhost:8446, both reachable from
#     this machine's browser (TESSERA_IDP_PORT, TESSERA_LOGIN_PORT change the ports) the
#     way the portal is; its token at the issuer is made by `portal-admin.sh`;
#   - the admin portal (`serve --portal-listen`) reachable from this machine's browser at
#     https://localhost:8443/admin/ (TESSERA_PORTAL_PORT changes the port): a socat on the
#     host's loopback forwards to a Unix socket in DATA_DIR, which a socat in the namespace
#     forwards to the portal (TLS end to end: the portal still sees the browser's client
#     certificate). `portal-admin.sh` in the shell makes the first administrator.
# With TESSERA_START_SCRIPT=FILE the shell runs FILE (bash -e) instead and ends with it
# (the README walk-through is checked that way); TESSERA_BUILD_PROFILE=dev builds without
# optimisation (the test suite's build).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

deploy/dev/packages.sh run
data="${DATA_DIR:-$root/data}"
mkdir -p "$data"
data=$(cd "$data" && pwd)

echo "==> building Tessera"
profile="${TESSERA_BUILD_PROFILE:-release}"
case "$profile" in
  release) cargo build --locked --release -p tessera-firmware-tests -p tessera-issuer -p tessera-cli -p tessera-pkcs11-ffi -p tessera-idp ;;
  dev) cargo build --locked -p tessera-firmware-tests -p tessera-issuer -p tessera-cli -p tessera-pkcs11-ffi -p tessera-idp ;;
  *) echo "TESSERA_BUILD_PROFILE is release or dev, not $profile" >&2; exit 2 ;;
esac
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
target="$target/$([ "$profile" = release ] && echo release || echo debug)"
bin="$target/tessera-card-sim"
script="${TESSERA_START_SCRIPT:-}"
[ -z "$script" ] || script=$(cd "$(dirname "$script")" && pwd)/$(basename "$script")

if [ ! -e "$data/issuer/tessera.db" ]; then
  echo "==> creating the issuer's embedded deployment in $data/issuer"
  "$target/tessera-issuer" init --data-dir "$data/issuer"
else
  echo "==> issuer deployment in $data/issuer:"
  "$target/tessera-issuer" audit verify --data-dir "$data/issuer"
fi

idp_port="${TESSERA_IDP_PORT:-8445}"
login_port="${TESSERA_LOGIN_PORT:-8446}"
if [ ! -e "$data/idp/idp.json" ]; then
  echo "==> creating the identity provider's deployment in $data/idp"
  policy=$(sed -n 's/.*"policy_oid": *"\([0-9.]*\)".*/\1/p' "$data/issuer/issuer.json")
  "$target/tessera-idp" init --data-dir "$data/idp" --issuer-url http://127.0.0.1:8080 \
    --base-url "http://localhost:$idp_port" --login-url "https://localhost:$login_port" \
    --card-ca "$data/issuer/issuing-ca.pem" --card-policy "$policy" >/dev/null
fi

# The reference card's state, and its manufacturer's CA among those the issuer trusts for
# key attestations (the reference card stands in for a vendor's card).
# Only when this script makes the card: an operator's own roots are never added to.
if [ ! -e "$data/card.json" ]; then
  "$bin" --state "$data/card.json" --init-only
  mkdir -p "$data/issuer/attestation-roots"
  cp "$data/card.manufacturer-ca.pem" "$data/issuer/attestation-roots/tessera-card-sim.pem"
fi

mkdir -p "$data/reader.conf.d"
cat > "$data/reader.conf.d/tessera-vpcd" <<CONF
FRIENDLYNAME "Tessera vpcd"
DEVICENAME /dev/null:35963
LIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so
CHANNELID 0x8C7B
CONF

portal_port="${TESSERA_PORTAL_PORT:-8443}"
# The portal's way out of the namespace: host loopback → DATA_DIR/portal.sock (a Unix
# socket crosses network namespaces) → the portal inside. Ended with this script.
# The IdP's two hosts leave the same way (the login host's TLS, too, ends in the IdP).
forwards=()
trap 'kill "${forwards[@]}" 2>/dev/null; rm -f "$data/portal.sock" "$data/idp.sock" "$data/login.sock"' EXIT
for f in "portal:$portal_port:TESSERA_PORTAL_PORT" "idp:$idp_port:TESSERA_IDP_PORT" "login:$login_port:TESSERA_LOGIN_PORT"; do
  IFS=: read -r name port var <<<"$f"
  rm -f "$data/$name.sock"
  socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$data/$name.sock" \
    2>>"$data/$name-forward.log" &
  forwards+=($!)
  sleep 0.2
  kill -0 "$!" 2>/dev/null || { echo "127.0.0.1:$port is taken: set $var to a free port" >&2; exit 1; }
done

userns=()
[ "$(id -u)" -eq 0 ] || userns=(--user --map-root-user)
echo "==> starting pcscd and the reference card (state: $data/card.json)"
# --pid: the shell is the namespace's first process, so when it ends the kernel ends pcscd
# and the card with it.
unshare "${userns[@]}" --mount --net --pid --fork --kill-child=SIGTERM -- bash -c '
  set -e
  trap "kill \$(jobs -p) 2>/dev/null" EXIT
  # As the first process of its PID namespace the shell ignores signals it does not trap.
  trap "exit 0" TERM INT HUP
  mount -t tmpfs tmpfs /run && mkdir -p /run/pcscd && ip link set lo up
  "$3/tessera-issuer" serve --data-dir "$1/issuer" --listen 127.0.0.1:8080 \
    --portal-listen 127.0.0.1:8443 --portal-origin "https://localhost:$6" >>"$1/issuer.log" 2>&1 &
  socat "UNIX-LISTEN:$1/portal.sock,fork,mode=600,unlink-early" TCP:127.0.0.1:8443 2>>"$1/portal-forward.log" &
  "$3/tessera-idp" serve --data-dir "$1/idp" --listen 127.0.0.1:8445 --login-listen 127.0.0.1:8446 \
    >>"$1/idp.log" 2>&1 &
  socat "UNIX-LISTEN:$1/idp.sock,fork,mode=600,unlink-early" TCP:127.0.0.1:8445 2>>"$1/idp-forward.log" &
  socat "UNIX-LISTEN:$1/login.sock,fork,mode=600,unlink-early" TCP:127.0.0.1:8446 2>>"$1/login-forward.log" &
  pcscd -f -c "$1/reader.conf.d" >"$1/pcscd.log" 2>&1 &
  "$2" --state "$1/card.json" 2>>"$1/card.log" &
  # The card is in when the reader says so (the simulator connects to vpcd once pcscd listens).
  ready() { for _ in $(seq 300); do "$@" && return 0; sleep 0.1; done; return 1; }
  ready sh -c "opensc-tool -l 2>/dev/null | grep -q \"Yes .*Tessera vpcd 00 00\"" \
    || { echo "the reference card did not come up: see $1/card.log and $1/pcscd.log" >&2; exit 1; }
  ready curl -sf -o /dev/null http://127.0.0.1:8080/readyz \
    || { echo "the issuer did not come up: see $1/issuer.log" >&2; exit 1; }
  ready curl -sf -o /dev/null http://127.0.0.1:8445/readyz \
    || { echo "the identity provider did not come up: see $1/idp.log" >&2; exit 1; }
  export PATH="$3:$5:$PATH" TESSERA_URL=http://127.0.0.1:8080 DATA="$1" TESSERA_PORTAL_PORT="$6"
  # Officer tokens and exports written here are the officer'"'"'s alone.
  umask 077
  cd "$1"
  if [ -n "$4" ]; then
    bash -eo pipefail "$4"
    exit
  fi
  cat "$1/card.log"
  echo
  echo "The reference card is in reader \"Tessera vpcd 00 00\", the issuer at $TESSERA_URL"
  echo "(token: $1/issuer/bootstrap-admin.token). This shell is in $1. Try:"
  echo "  opensc-tool -n"
  echo "  yubico-piv-tool -r Tessera -a status"
  echo "  pkcs11-tool --module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so --list-objects"
  echo "  pkcs11-tool --module $3/libtessera_pkcs11.so --list-objects"
  echo "  tessera-piv-conformance --reader \"Tessera vpcd 00 00\""
  echo "  tessera --help"
  echo "and the README'"'"'s walk-through to a first service ID on this card."
  echo "The admin portal: https://localhost:$6/admin/ from this machine'"'"'s browser;"
  echo "  portal-admin.sh   makes its first administrator (from the bootstrap token)."
  echo "The identity provider: http://localhost:$7/saml/metadata, the card login at"
  echo "  https://localhost:$8 (portal-admin.sh also gives it its token at the issuer)."
  echo "Leave this shell (exit) to stop the issuer, the card and pcscd."
  if [ -t 0 ]; then bash -i; else sleep infinity & wait; fi
' tessera "$data" "$bin" "$target" "$script" "$root/deploy/dev" "$portal_port" "$idp_port" "$login_port"
