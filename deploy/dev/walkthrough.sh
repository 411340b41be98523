#!/usr/bin/env bash
# Runs the README's walk-through to a first service ID exactly as written (the block between
# its walkthrough markers), in a fresh `start.sh` on a data directory of its own, and checks
# the ends it promises: OCSP says good, the card's signature verifies.
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
echo "==> the README's walk-through, in a fresh start.sh (data: $work/data)"
DATA_DIR="$work/data" TESSERA_START_SCRIPT="$work/walkthrough.sh" \
  TESSERA_BUILD_PROFILE="${TESSERA_BUILD_PROFILE:-dev}" deploy/dev/start.sh </dev/null 2>&1 \
  | tee "$work/out"
grep -q "authentication.pem: good" "$work/out" || { echo "walk-through: OCSP did not say good" >&2; exit 1; }
grep -q "^Verified OK" "$work/out" || { echo "walk-through: the signature did not verify" >&2; exit 1; }
echo "walk-through: OCSP good, signature verified"
