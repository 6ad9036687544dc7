#!/usr/bin/env bash
# Kozmo's main job end to end, as far as it exists today: build the bundled
# plugins as shared libraries, open each the way the daemon does, and run the
# example tasks through them, printing every round and the outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building the bundled plugins (cdylib)"
cargo build --quiet -p kozmo-plugin-echo
lib=target/debug/libkozmo_plugin_echo.so
[ -f "$lib" ] || lib=target/debug/libkozmo_plugin_echo.dylib

echo "==> running examples/echo.json through $lib"
cargo run --quiet -p kozmo-interface --example run_plugin -- "$lib" examples/echo.json
