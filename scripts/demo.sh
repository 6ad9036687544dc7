#!/usr/bin/env bash
# Kozmo's main job end to end on a fresh machine: build the daemon and the
# bundled plugins, start `kozmo serve` on its embedded store (SQLite) with
# those plugins, run the example tasks (one fails on purpose), show their
# phases and outputs, then stop the daemon with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${KOZMO_DEMO_PROFILE:-debug}
flag=""; [ "$profile" = release ] && flag="--release"

echo "==> building kozmo and the bundled plugins ($profile)"
cargo build $flag --quiet -p kozmo-host -p kozmo-plugin-echo -p kozmo-plugin-shell -p kozmo-plugin-sleep-quota
bin=target/$profile/kozmo

work=$(mktemp -d "${TMPDIR:-/tmp}/kozmo-demo.XXXXXX")
mkdir -p "$work/plugins"
chmod 755 "$work/plugins"
for p in echo shell sleep_quota; do
  for f in target/$profile/libkozmo_plugin_$p.so target/$profile/libkozmo_plugin_$p.dylib; do
    if [ -f "$f" ]; then install -m 644 "$f" "$work/plugins/"; fi
  done
done

echo "==> plugins in $work/plugins"
"$bin" plugins list --dir "$work/plugins"

echo "==> starting the daemon (data in $work/data)"
"$bin" serve --data-dir "$work/data" --plugins-dir "$work/plugins" --listen 127.0.0.1:0 \
  --resync-interval-secs 0.2 >"$work/stdout" 2>"$work/daemon.log" &
daemon=$!
cleanup() { kill "$daemon" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  grep -q "listening on" "$work/stdout" 2>/dev/null && break
  if ! kill -0 "$daemon" 2>/dev/null; then cat "$work/daemon.log"; exit 1; fi
  sleep 0.1
done
export KOZMO_SERVER=$(sed -n 's/^kozmo: listening on //p' "$work/stdout")
echo "    listening on $KOZMO_SERVER"

status=0
for example in echo shell-hello sleep-quota shell-fail; do
  echo
  echo "==> kozmo submit examples/$example.json --wait"
  if "$bin" submit "examples/$example.json" --wait -o json; then
    echo "    => $example succeeded"
  else
    code=$?
    if [ "$example" = shell-fail ]; then
      echo "    => $example failed, as it is meant to (exit code $code)"
    else
      echo "    => $example FAILED unexpectedly (exit code $code)"; status=1
    fi
  fi
done

echo
echo "==> kozmo list"
"$bin" list

echo
echo "==> stopping the daemon (SIGTERM)"
kill -TERM "$daemon"
wait "$daemon" && echo "    daemon exited 0" || { echo "    daemon exit code $?"; status=1; }
trap - EXIT
echo "    log: $work/daemon.log"
exit $status
