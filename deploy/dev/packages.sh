#!/usr/bin/env bash
# Installs the Debian 12 packages Tessera needs, only those that are missing.
#   deploy/dev/packages.sh run    what building and running the system needs
#   deploy/dev/packages.sh test   that plus the peers the test suite drives
# The lists follow shared/design/TESTBED.md, limited to what the built code uses today.
set -euo pipefail

build=(build-essential pkg-config libpcsclite-dev libsqlite3-dev libtss2-dev libxmlsec1-dev)
run=(pcscd vsmartcard-vpcd opensc openssl iproute2 util-linux softhsm2 yubico-piv-tool curl jq socat)
test=(pcsc-tools postgresql python3-venv xmlsec1 gnutls-bin openssh-client libnss3-tools pamtester libpam-p11 p11-kit p11-kit-modules
      libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus swtpm swtpm-tools systemd
      chromium)

case "${1:-}" in
  run) wanted=("${build[@]}" "${run[@]}") ;;
  test) wanted=("${build[@]}" "${run[@]}" "${test[@]}") ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "error: no Rust toolchain (cargo) on PATH; install one with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
