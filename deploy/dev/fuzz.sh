#!/usr/bin/env bash
# Runs every fuzz target (the card edge's, the IdP's request parser) for a bounded time
# (default 60 s each) with cargo-fuzz on the stable toolchain (no sanitizer: the fuzzer
# hunts panics and broken invariants; the IdP target also drives libxml2 and libxmlsec1
# through tessera-xmlsec). Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

for dir in middleware/piv/fuzz idp/fuzz; do
  (
  cd "$dir"
  for target in $(cargo fuzz list); do
    echo "==> fuzzing $target ($dir) for ${seconds}s"
    # Seed corpora are kept in the repository; new finds stay in the build cache.
    work="${CARGO_TARGET_DIR:-target}/fuzz-corpus/$target"
    mkdir -p "$work"
    log="$(mktemp)"
    if ! cargo fuzz run --sanitizer none "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
      grep -v '^#[0-9]' "$log" | tail -n 60
      echo "error: fuzz target $target failed; the input is under $dir/artifacts/$target" >&2
      exit 1
    fi
    grep -E '^(Done|stat::(number_of_executed_units|new_units_added))' "$log" || true
    rm -f "$log"
  done
  )
done
