#!/usr/bin/env bash
# CI: render /dashboard and /dashboard/model in headless Chromium against the demo's
# state and keep screenshots in docs/dashboard.png and docs/dashboard-model.png.
#
# Starts examples/dashboard_demo.rs (the real daemon plus the Bitrix24 sandbox, twenty
# seed leads and their activity), asks Chromium for the DOM (must show the page's
# sections and no raw markup) and a screenshot, then stops the demo. Needs Debian's
# `chromium` package (installed here when root and apt-get exist); skips otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=.ci/chromium.sh
. .ci/chromium.sh
find_chromium
if [ -z "$browser" ]; then
  echo "== no chromium: skipping the dashboard browser check"
  exit 0
fi

out="${1:-docs/dashboard.png}"
cargo build --example dashboard_demo
work="$(mktemp -d)"
demo_pid=""
cleanup() {
  # The demo dies of our SIGTERM (status 143): expected, not a failure of this check.
  if [ -n "$demo_pid" ]; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"${CARGO_TARGET_DIR:-target}"/debug/examples/dashboard_demo --seconds 300 --url-file "$work/url" >"$work/demo.log" 2>&1 &
demo_pid=$!
for _ in $(seq 1 240); do
  [ -s "$work/url" ] && break
  kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.log" >&2; exit 1; }
  sleep 0.5
done
[ -s "$work/url" ] || { echo "the demo did not come up" >&2; cat "$work/demo.log" >&2; exit 1; }
url="$(cat "$work/url")"
echo "== $browser on $url"

chromium_flags "$work"
flags=("${chromium_flags[@]}")

"$browser" "${flags[@]}" --dump-dom "$url" >"$work/dom.html" 2>"$work/chromium.log" \
  || { cat "$work/chromium.log" >&2; exit 1; }
for needle in "Score distribution" "Recent threshold crossings" "dead letters" "Portal demo"; do
  grep -q "$needle" "$work/dom.html" || { echo "the rendered page lacks \"$needle\"" >&2; exit 1; }
done
rows="$(grep -o '<tr><td>' "$work/dom.html" | wc -l)"
[ "$rows" -ge 1 ] || { echo "no threshold crossing rows in the page" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
rm -f "$out"
"$browser" "${flags[@]}" --screenshot="$out" --window-size=1200,900 "$url" \
  >>"$work/chromium.log" 2>&1 || { cat "$work/chromium.log" >&2; exit 1; }
[ -s "$out" ] || { echo "no screenshot written" >&2; cat "$work/chromium.log" >&2; exit 1; }
echo "dashboard OK in $browser ($rows crossing rows); screenshot in $out"

# The model page: same guard, same demo; tiers and the outcome section must render.
model_url="${url/\/dashboard/\/dashboard\/model}"
model_out="$(dirname "$out")/dashboard-model.png"
"$browser" "${flags[@]}" --dump-dom "$model_url" >"$work/model.html" 2>>"$work/chromium.log" \
  || { cat "$work/chromium.log" >&2; exit 1; }
for needle in "Score distribution per tier" "Portal demo" "Conversion by tier" "Tier when closed" "No shadow scores yet"; do
  grep -q "$needle" "$work/model.html" || { echo "the model page lacks \"$needle\"" >&2; exit 1; }
done
rm -f "$model_out"
"$browser" "${flags[@]}" --screenshot="$model_out" --window-size=1200,900 "$model_url" \
  >>"$work/chromium.log" 2>&1 || { cat "$work/chromium.log" >&2; exit 1; }
[ -s "$model_out" ] || { echo "no model page screenshot written" >&2; exit 1; }
echo "model page OK in $browser; screenshot in $model_out"
