# Sourced by bench/run and scripts/build-pgo (which set ROOT, the checkout, and `log` or
# `say`): makes sure a shared CARGO_TARGET_DIR builds this checkout's code.
#
# Cargo names the artifacts of a path package (Portico, its vendored Pingora crates, the
# floor, ws-bench) without the path, and takes them as fresh when they are newer than the
# package's sources. When another checkout of Portico (an A/B build of an older commit in
# a worktree) has built into the same target dir since this one's sources last changed, a
# build here finds that checkout's artifacts, newer than its own sources, and links them
# as they are: a binary of the other commit under this one's name, measured as this one.
# (It happened: bench/notes.md, session 46.) So each target dir remembers the checkout
# that last built in it, and another checkout first cleans the packages built from its
# own sources there; registry crates are shared safely and stay.

claim_target_dir() {
    local dir=$1
    local stamp=$dir/.portico-checkout
    if [[ -f $stamp && $(cat "$stamp") == "$ROOT" ]]; then
        return
    fi
    if [[ -d $dir ]]; then
        echo "[target-dir] $dir was last built from $(cat "$stamp" 2>/dev/null || echo 'an unknown checkout'): cleaning this checkout's own packages there" >&2
        (cd "$ROOT" && CARGO_TARGET_DIR=$dir cargo clean --release --quiet \
            -p portico -p pingora-proxy -p pingora-core -p pingora-cache -p pingora-http -p pingora-pool -p h2)
        local crate
        for crate in floor:pingora-floor ws-bench:ws-bench; do
            if [[ -d $ROOT/bench/${crate%%:*} ]]; then
                (cd "$ROOT/bench/${crate%%:*}" && CARGO_TARGET_DIR=$dir cargo clean --release --quiet -p "${crate#*:}")
            fi
        done
    fi
    mkdir -p "$dir"
    printf '%s\n' "$ROOT" > "$stamp"
}
