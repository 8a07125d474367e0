#!/usr/bin/env bash
# The one test command (the README's, and CI's through .ci/run):
# installs what the build needs, starts the real services, then checks
# formatting, lints, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean checkout gains nothing from incremental state but its disk.
if [[ "${CI:-}" == true ]]; then export CARGO_INCREMENTAL=0; fi

scripts/build-deps.sh
scripts/services.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"

# One closing line for the whole run; per-binary lines (doc tests with none
# among them) would otherwise end the output.
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "all test binaries: %d passed, %d failed\n", passed, failed }' "$log"
