#!/usr/bin/env bash
# The whole test suite: unit tests, doc tests, and the suites that build
# plugins as real shared libraries and drive them through the ABI.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --all-targets
cargo test --workspace --doc
RUSTDOCFLAGS="-D warnings" cargo doc --quiet -p kozmo-interface --no-deps
echo "docs: kozmo-interface builds without warnings"
