#!/usr/bin/env bash
# CI: render the backtest HTML report of the shipped history in headless Chromium,
# check that it rendered (sections, three SVG charts, no raw markup, no script) and keep
# a screenshot (default docs/backtest-report.png).
#
# Needs Debian's `chromium` package (installed here when root and apt-get exist);
# skips otherwise, like .ci/dashboard-screenshot.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=.ci/chromium.sh
. .ci/chromium.sh
find_chromium
if [ -z "$browser" ]; then
  echo "== no chromium: skipping the backtest report browser check"
  exit 0
fi

out="${1:-docs/backtest-report.png}"
# CI passes the binary `cargo test` just built (LEADSCORE_BIN): a plain `cargo build`
# resolves features without the dev-dependencies and would rebuild half the tree.
bin="${LEADSCORE_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --bin leadscore
  bin="${CARGO_TARGET_DIR:-target}/debug/leadscore"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$bin" backtest --config config/leadscore.example.toml \
  --input examples/history/closed-leads.jsonl --capacity 0.3 \
  --model examples/history/suggested.toml --format html --out "$work/report.html"
if grep -qi '<script' "$work/report.html"; then
  echo "the report carries a script" >&2
  exit 1
fi

chromium_flags "$work"
flags=("${chromium_flags[@]}")
url="file://$work/report.html"
echo "== $browser on $url"

"$browser" "${flags[@]}" --dump-dom "$url" >"$work/dom.html" 2>"$work/chromium.log" \
  || { cat "$work/chromium.log" >&2; exit 1; }
for needle in "Backtest of" "By score decile" "Calibration" "Capacity" "DeLong" "Biggest false positives"; do
  grep -q "$needle" "$work/dom.html" || { echo "the rendered page lacks \"$needle\"" >&2; exit 1; }
done
charts="$(grep -o '<svg' "$work/dom.html" | wc -l)"
[ "$charts" -eq 3 ] || { echo "expected 3 charts in the page, found $charts" >&2; exit 1; }
if grep -q '&lt;svg\|&lt;table' "$work/dom.html"; then
  echo "raw markup shown as text" >&2
  exit 1
fi

mkdir -p "$(dirname "$out")"
rm -f "$out"
"$browser" "${flags[@]}" --screenshot="$out" --window-size=1200,1400 "$url" \
  >>"$work/chromium.log" 2>&1 || { cat "$work/chromium.log" >&2; exit 1; }
[ -s "$out" ] || { echo "no screenshot written" >&2; cat "$work/chromium.log" >&2; exit 1; }
echo "backtest report OK in $browser ($charts charts); screenshot in $out"
