#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing, then runs
# formatting and lint checks, every test (unit, integration, interop against real peers in
# private namespaces) and a bounded fuzzing run.
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/dev/packages.sh test

# A build cache outside the clone speeds repeated runs; a machine without it builds afresh.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# pkilint (PyPI) lints the issuer's certificates, CRLs and OCSP responses; it lives in a
# virtual environment beside the build cache.
pkilint_venv="${XDG_CACHE_HOME:-$HOME/.cache}/tessera/pkilint-0.13.3"
if [ ! -x "$pkilint_venv/bin/lint_pkix_cert" ]; then
  echo "==> installing pkilint into $pkilint_venv"
  python3 -m venv "$pkilint_venv"
  "$pkilint_venv/bin/pip" install -q "pkilint==0.13.3"
fi
export TESSERA_PKILINT_BIN="$pkilint_venv/bin"

# scim2-tester (PyPI, python-scim) is the SCIM 2.0 client the /scim/v2 endpoint is checked
# against; its versions are pinned so a release of theirs cannot change our result.
scim_venv="${XDG_CACHE_HOME:-$HOME/.cache}/tessera/scim2-tester-0.5.2"
if [ ! -x "$scim_venv/bin/python" ] || ! "$scim_venv/bin/python" -c "import scim2_tester, httpx2" 2>/dev/null; then
  echo "==> installing scim2-tester into $scim_venv"
  python3 -m venv "$scim_venv"
  "$scim_venv/bin/pip" install -q "scim2-tester==0.5.2" "scim2-client==0.13.2" \
    "scim2-models==0.12.3" "httpx2==2.16.2"
fi
export TESSERA_SCIM_PYTHON="$scim_venv/bin/python"

# Playwright (PyPI) drives Debian's Chromium through the admin portal; axe-playwright-python
# runs axe-core in it. Playwright's own browser download is not used (nor reachable).
playwright_venv="${XDG_CACHE_HOME:-$HOME/.cache}/tessera/playwright-1.65.2"
if [ ! -x "$playwright_venv/bin/python" ] || ! "$playwright_venv/bin/python" -c "import playwright, axe_playwright_python" 2>/dev/null; then
  echo "==> installing Playwright into $playwright_venv"
  python3 -m venv "$playwright_venv"
  "$playwright_venv/bin/pip" install -q "playwright==1.65.2" "axe-playwright-python==0.1.8"
fi
export TESSERA_PLAYWRIGHT_PYTHON="$playwright_venv/bin/python"

# pysaml2 (PyPI) is the SAML service provider the IdP's responses are checked against (it
# verifies and decrypts with Debian's xmlsec1).
pysaml2_venv="${XDG_CACHE_HOME:-$HOME/.cache}/tessera/pysaml2-7.5.4"
if [ ! -x "$pysaml2_venv/bin/python" ] || ! "$pysaml2_venv/bin/python" -c "import saml2" 2>/dev/null; then
  echo "==> installing pysaml2 into $pysaml2_venv"
  python3 -m venv "$pysaml2_venv"
  "$pysaml2_venv/bin/pip" install -q "pysaml2==7.5.4"
fi
export TESSERA_PYSAML2_PYTHON="$pysaml2_venv/bin/python"

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
echo "==> the README's walk-through to a first service ID"
deploy/dev/walkthrough.sh
echo "==> fuzzing"
deploy/dev/fuzz.sh "${FUZZ_SECONDS:-60}"
# One closing line for the whole run (the per-binary lines above end with doc-tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
