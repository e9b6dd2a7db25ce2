#!/usr/bin/env bash
# Regenerates docs/report.png, the picture of the report in docs/report.md: the sample data's report as
# headless Chromium (Debian's chromium package) shows it. Run from anywhere: bash docs/screenshot.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sessionize="${SESSIONIZE:-$repo/.venv/bin/sessionize}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"  # so that the page names its table without a temporary folder
"$sessionize" run "$repo/sample_data/events.csv" -o sessions.parquet -q
"$sessionize" report sessions.parquet -o report.html -q
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$work/profile" --hide-scrollbars \
    --force-device-scale-factor=1 --window-size=1280,2620 --virtual-time-budget=5000 \
    --screenshot="$repo/docs/report.png" "file://$work/report.html" 2>/dev/null
echo "wrote $repo/docs/report.png"
