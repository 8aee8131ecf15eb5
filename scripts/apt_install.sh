# Sourced by the install_*.sh scripts: one way to install Debian packages for the tests.
# apt_install TAG SKIPS PACKAGE...: as root, `apt-get install -y --no-install-recommends PACKAGE...`, refreshing
# the package lists once if the first try fails. Never fails the build: returns 1 after saying why (not root, no
# apt-get, no network) and what will skip (SKIPS), 0 when apt-get succeeded.
apt_install() {
    local tag="$1" skips="$2"
    shift 2
    if [ "$(id -u)" -ne 0 ]; then
        echo "$tag: not installing $*: not running as root (run 'sudo apt-get install $*'); $skips will skip"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$tag: not installing $*: apt-get is not available on this system; $skips will skip"
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "$tag: apt-get install -y --no-install-recommends $*"
    if apt-get install -y --no-install-recommends "$@"; then
        return 0
    fi
    # The package lists may be missing or stale (fresh container): refresh them once and retry.
    echo "$tag: install failed; running apt-get update and trying again"
    if ! apt-get update; then
        echo "$tag: apt-get update failed (no network or no package source?); $skips will skip"
        return 1
    fi
    echo "$tag: apt-get install -y --no-install-recommends $*"
    if ! apt-get install -y --no-install-recommends "$@"; then
        echo "$tag: apt-get install $* failed; $skips will skip"
        return 1
    fi
    return 0
}
