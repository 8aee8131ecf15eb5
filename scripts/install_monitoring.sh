#!/usr/bin/env bash
# Install Debian's Prometheus and Alertmanager (packages `prometheus` and `prometheus-alertmanager`:
# prometheus, promtool, alertmanager, amtool) for the alert-rule tests (tests/monitoring/test_monitoring_rules.py
# runs `promtool check config|rules` and `promtool test rules` on monitoring/prometheus/).
# Idempotent. Never fails the build: when it cannot install, it says why and exits 0, and the promtool
# tests then skip with that reason. Starts no service: while apt-get runs, a policy-rc.d that answers 101
# ("action forbidden") stops the packages' maintainer scripts from starting prometheus or alertmanager
# (invoke-rc.d honours it; there is no systemd in the containers this runs in).
set -u

PACKAGES=(prometheus prometheus-alertmanager)
TOOLS=(/usr/bin/prometheus /usr/bin/promtool /usr/bin/prometheus-alertmanager /usr/bin/amtool)
POLICY=/usr/sbin/policy-rc.d
# shellcheck source=scripts/apt_install.sh
. "$(dirname "$0")/apt_install.sh"

missing_tools() {
    local tool missing=()
    for tool in "${TOOLS[@]}"; do
        [ -x "$tool" ] || missing+=("$tool")
    done
    echo "${missing[*]:-}"
}

if [ -z "$(missing_tools)" ]; then
    echo "install_monitoring: prometheus and alertmanager are already installed ($(/usr/bin/promtool --version 2>&1 | head -n 1))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    apt_install install_monitoring "the promtool tests" "${PACKAGES[@]}"  # says why it cannot
    exit 0
fi

# Forbid service starts during the install; put back whatever policy was there before.
POLICY_BACKUP=""
if [ -e "$POLICY" ]; then
    POLICY_BACKUP="$(mktemp)"
    cp -p "$POLICY" "$POLICY_BACKUP"
fi
restore_policy() {
    if [ -n "$POLICY_BACKUP" ]; then
        cp -p "$POLICY_BACKUP" "$POLICY" && rm -f "$POLICY_BACKUP"
    else
        rm -f "$POLICY"
    fi
}
trap restore_policy EXIT
printf '#!/bin/sh\n# install_monitoring.sh: start no service while the monitoring packages install\nexit 101\n' >"$POLICY"
chmod 0755 "$POLICY"

apt_install install_monitoring "the promtool tests" "${PACKAGES[@]}" || exit 0

missing="$(missing_tools)"
if [ -z "$missing" ]; then
    echo "install_monitoring: installed $(/usr/bin/promtool --version 2>&1 | head -n 1)"
else
    echo "install_monitoring: apt-get finished but $missing is missing; the promtool tests will skip"
fi
# Nothing was started (policy-rc.d 101); say so if a daemon runs anyway (started by someone else).
for daemon in /usr/bin/prometheus /usr/bin/prometheus-alertmanager; do
    if command -v pgrep >/dev/null 2>&1 && pids="$(pgrep -f "^$daemon( |$)")"; then
        echo "install_monitoring: note: a $daemon process is running (pid $(echo $pids)); this script did not start it"
    fi
done
exit 0
