# Sourced by the headless-Chromium checks (.ci/dashboard-screenshot.sh,
# .ci/backtest-report-screenshot.sh): sets `browser` to a Chromium found or installed
# (Debian's `chromium` when root and apt-get exist), empty when there is none, and
# `chromium_flags` for a headless run with its profile in the given folder.
find_chromium() {
  browser=""
  for b in chromium chromium-browser google-chrome; do
    command -v "$b" >/dev/null 2>&1 && { browser="$b"; return 0; }
  done
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium"
    apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; } \
      || true
    command -v chromium >/dev/null 2>&1 && browser=chromium
  fi
  return 0
}

# chromium_flags PROFILE_DIR
chromium_flags() {
  chromium_flags=(--headless --no-sandbox --disable-gpu --disable-background-networking
    --disable-component-update --disable-sync --no-first-run --disable-dev-shm-usage
    --hide-scrollbars --user-data-dir="$1/profile")
}
