#!/usr/bin/env bash
# Sets up and starts Tessera on its embedded default, in a data directory.
#
# Today the built part of Tessera is the card edge: this starts the reference PIV card
# (tessera-card-sim) in a private pcscd (its own mount and network namespace, so the host's
# pcscd is untouched) and opens a shell in that namespace, where OpenSC, yubico-piv-tool
# and every PC/SC program see the card. The card's state is kept in DATA_DIR (default
# ./data), so the card survives restarts. Leave the shell to stop everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

deploy/dev/packages.sh run
data="${DATA_DIR:-$root/data}"
mkdir -p "$data"
data=$(cd "$data" && pwd)

echo "==> building tessera-card-sim"
cargo build --locked --release -p tessera-card-sim
bin="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/tessera-card-sim"

mkdir -p "$data/reader.conf.d"
cat > "$data/reader.conf.d/tessera-vpcd" <<CONF
FRIENDLYNAME "Tessera vpcd"
DEVICENAME /dev/null:35963
LIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so
CHANNELID 0x8C7B
CONF

userns=()
[ "$(id -u)" -eq 0 ] || userns=(--user --map-root-user)
echo "==> starting pcscd and the reference card (state: $data/card.json)"
exec unshare "${userns[@]}" --mount --net --fork --kill-child -- bash -c '
  set -e
  mount -t tmpfs tmpfs /run && mkdir -p /run/pcscd && ip link set lo up
  pcscd -f -c "$1/reader.conf.d" >"$1/pcscd.log" 2>&1 &
  "$2" --state "$1/card.json" 2>>"$1/card.log" &
  for _ in $(seq 100); do opensc-tool -l 2>/dev/null | grep -q "Tessera vpcd 00 00" && break; sleep 0.1; done
  cat "$1/card.log"
  echo
  echo "The reference card is in reader \"Tessera vpcd 00 00\". Try:"
  echo "  opensc-tool -n"
  echo "  yubico-piv-tool -r Tessera -a status"
  echo "  pkcs11-tool --module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so --list-objects"
  echo "Leave this shell (exit) to stop the card and pcscd."
  if [ -t 0 ]; then bash -i; else sleep infinity; fi
' tessera "$data" "$bin"
