# Sourced by bench/run and bench/callgrind: installs Debian packages without starting
# their services.

install_packages() { # PACKAGE...
    [[ $# -eq 0 ]] && return
    printf '[bench %s] installing %s\n' "$(date +%T)" "$*" >&2
    # Packages must not start their services: a policy-rc.d that says no, for this install
    # only (Debian containers often ship one already; it is left alone then).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    [[ $made_policy == 1 ]] && rm -f "$policy"
    # Belt and braces on machines where the service started anyway (systemd ignores
    # policy-rc.d for some units): stop and disable the packaged services.
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        local unit
        for unit in nginx varnish varnishncsa haproxy; do
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
        done
    fi
    return 0
}
