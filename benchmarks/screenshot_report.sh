#!/usr/bin/env bash
# A report page as a reader's browser shows it: headless Chromium (Debian: apt install chromium).
#   benchmarks/screenshot_report.sh reports/benchmark.html runs/benchmark-html.png [WIDTH,HEIGHT]
# The page is self-contained (figures embedded), so nothing is fetched; the flags keep Chromium
# off the network, which a closed machine refuses anyway.
set -euo pipefail
page=$(realpath "$1"); out=$2; size=${3:-1400,4000}
profile=$(mktemp -d); trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
  --window-size="$size" --screenshot="$out" "file://$page" 2>/dev/null
echo "wrote $out"
