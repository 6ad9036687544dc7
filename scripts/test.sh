#!/usr/bin/env bash
# The whole test suite: unit tests, doc tests, and the suites that build
# plugins as real shared libraries and drive them through the ABI (and, for
# the host, the real daemon). Ends with one "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee -a "$log" || status=1
cargo test --workspace --doc 2>&1 | tee -a "$log" || status=1
RUSTDOCFLAGS="-D warnings" cargo doc --quiet -p kozmo-interface --no-deps || status=1

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "\n%d passed, %d failed\n", p, f }' "$log"
exit $status
