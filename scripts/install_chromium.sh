#!/usr/bin/env bash
# Install Debian's chromium for the operator console's browser tests (tests/gateway/test_gateway_console.py).
# Idempotent. Never fails the build: when it cannot install, it says why and exits 0, and the
# console tests then skip with that reason.
set -u

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "install_chromium: $CHROMIUM is already installed ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

# shellcheck source=scripts/apt_install.sh
. "$(dirname "$0")/apt_install.sh"
apt_install install_chromium "the console browser tests" chromium || exit 0

if [ -x "$CHROMIUM" ]; then
    echo "install_chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
    echo "install_chromium: apt-get finished but $CHROMIUM is missing; the console browser tests will skip"
fi
exit 0
