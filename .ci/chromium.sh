#!/usr/bin/env bash
# Debian's Chromium for the dashboard's real-browser test (tests/test_dashboard_browser.py).
# Playwright drives it through executable_path=/usr/bin/chromium, so no Playwright browser
# download is needed. A no-op when it is already installed. fonts-liberation: text in
# screenshots renders with real fonts on a bare machine.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation
