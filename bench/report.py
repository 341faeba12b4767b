#!/usr/bin/python3
"""Writes the benchmark report and chart from bench/run's raw results.

    report.py BENCH_DIR MODE

Reads BENCH_DIR/results/{raw,commands,meta}-MODE.*; writes BENCH_DIR/RESULTS.md and
BENCH_DIR/results.png for a full run, BENCH_DIR/results/RESULTS-quick.md and
BENCH_DIR/results/quick.png for --quick. Every figure is the median over the runs.
BENCH_DIR/notes.md (profiling notes, written by hand) is copied into the report.
"""
import os
import shlex
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BENCH, MODE = sys.argv[1], sys.argv[2]
RESULTS = os.path.join(BENCH, "results")
EDGES = ["portico", "nginx", "varnish", "haproxy"]
# The floor: bare Pingora 0.9.1 (bench/floor), in scenarios 1, 3, 4, 7 and 8.
SYSTEMS = ["portico", "floor", "nginx", "varnish", "haproxy", "direct"]
CACHES = ["portico", "floor", "nginx", "varnish", "haproxy"]
LABEL = {
    "portico": "Portico",
    "floor": "pingora-floor",
    "nginx": "nginx proxy_cache",
    "varnish": "Varnish",
    "haproxy": "HAProxy cache",
    "direct": "direct to origin",
}

# raw[(scenario, variant, system)][metric] = [values by run]
raw = defaultdict(lambda: defaultdict(list))
with open(os.path.join(RESULTS, f"raw-{MODE}.tsv")) as f:
    for line in f:
        scenario, variant, system, _run, metric, value = line.rstrip("\n").split("\t")
        raw[(scenario, variant, system)][metric].append(float(value))

commands = {}
with open(os.path.join(RESULTS, f"commands-{MODE}.tsv")) as f:
    for line in f:
        scenario, variant, command = line.rstrip("\n").split("\t", 2)
        commands[(scenario, variant)] = command

meta = {}
with open(os.path.join(RESULTS, f"meta-{MODE}.env")) as f:
    for line in f:
        if "=" in line:
            key, value = line.rstrip("\n").split("=", 1)
            meta[key] = " ".join(shlex.split(value)) if value else ""


def med(scenario, variant, system, metric):
    values = raw.get((scenario, variant, system), {}).get(metric)
    return statistics.median(values) if values else None


def cpu_per_request(scenario, variant, system):
    """Microseconds of the server's core per request: its busy share over its rate."""
    busy, rps = med(scenario, variant, system, "server_core_busy"), med(scenario, variant, system, "rps")
    return busy * 1e4 / rps if busy and rps else None


def spread(scenario, variant, system, metric):
    """(max - min) / median over the runs, in percent."""
    values = raw.get((scenario, variant, system), {}).get(metric)
    if not values or len(values) < 2:
        return ""
    m = statistics.median(values)
    return f"±{50 * (max(values) - min(values)) / m:.0f}%" if m else ""


def num(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "–"


def port_of(system):
    return {"portico": 18100, "nginx": 18101, "varnish": 18102, "haproxy": 18103, "floor": 18104}.get(system)


def versus(scenario, variant, metric="rps", label="req/s", lower_is_better=False):
    """The line under a table: Portico ÷ the floor (Portico's own cost on top of Pingora)
    next to Portico ÷ nginx (what users compare), for `metric` and, where measured, p99."""
    p = med(scenario, variant, "portico", metric)
    parts = []
    for other in ("floor", "nginx"):
        o = med(scenario, variant, other, metric)
        if p is None or o is None:
            continue
        text = f"{ratio(p, o)} {label}"
        p99, o99 = med(scenario, variant, "portico", "p99_ms"), med(scenario, variant, other, "p99_ms")
        if p99 is not None and o99:
            text += f", {ratio(p99, o99)} p99"
        parts.append(f"Portico ÷ {LABEL[other]}: **{text}**")
    if parts:
        better = "below 1× favours Portico" if lower_is_better else "req/s above 1×, p99 below 1× favour Portico"
        w(" · ".join(parts) + f" ({better})\n")


out = []
w = out.append

title = "Portico benchmark results" + (" (quick run)" if MODE == "quick" else "")
w(f"# {title}\n")
w(
    f"Written by `bench/run{' --quick' if MODE == 'quick' else ''}` on {meta.get('DATE')}; "
    "do not edit by hand (the profiling notes at the end come from `bench/notes.md`). "
    f"Every figure is the **median of {meta.get('RUNS')} runs** of {meta.get('SECS')} s each; "
    "the systems take turns within each round, so slow drift on the machine hits them all "
    "alike. `±` is half the range between the fastest and slowest run, relative to the median.\n"
)

w("## Machine and conditions\n")
w("| | |\n|---|---|")
w(f"| CPU | {meta.get('CPU')}, {meta.get('CORES')} cores ({meta.get('VIRT') or 'bare metal'}) |")
w(f"| memory | {meta.get('MEM')} |")
w(f"| OS, kernel | {meta.get('OS')}, Linux {meta.get('KERNEL')} |")
w(
    f"| peers | nginx {meta.get('V_NGINX')}, {meta.get('V_VARNISH')}, HAProxy {meta.get('V_HAPROXY')} "
    f"(Debian packages), wrk {meta.get('V_WRK')} |"
)
BUILD = (
    "release build with profile-guided optimisation (`scripts/build-pgo`; the floor built the same way)"
    if meta.get("V_PGO") == "1"
    else "release build"
)
w(f"| Portico | commit {meta.get('V_PORTICO')}, {BUILD}, {meta.get('V_RUSTC')} |")
load_note = ""
if meta.get("QUIET_TIMED_OUT"):
    load_note = (
        f" **The machine never got below the threshold: the run started anyway after "
        f"{meta.get('QUIET_WAITED')} s of waiting, and its numbers are less trustworthy.**"
    )
elif meta.get("QUIET_SKIPPED"):
    load_note = " **The wait for a quiet machine was skipped (BENCH_QUIET_WAIT=0).**"
w(
    f"| load average (1, 5, 15 min) | {meta.get('LOAD_START')} at the start, {meta.get('LOAD_END')} "
    f"at the end (the end includes the benchmark's own load).{load_note} |"
)
if meta.get("STEADY_SKIPPED"):
    steady = "skipped (BENCH_STEADY_WAIT=0)"
elif meta.get("STEADY_SPREAD"):
    steady = (
        f"five 2 s runs against the direct origin before the first scenario spread "
        f"{float(meta['STEADY_SPREAD']) * 100:.0f}% (max − min over the median; "
        f"{meta.get('STEADY_WAITED')} s waited for at most "
        f"{float(meta.get('STEADY_MAX', '0.15')) * 100:.0f}%)"
    )
    if meta.get("STEADY_TIMED_OUT"):
        steady += (
            " **The machine never ran steadily enough: the run started anyway, and its "
            "rates are less trustworthy.**"
        )
else:
    steady = None
if steady:
    w(f"| steadiness | {steady} |")
# Process CPU times (what the benchmark's processes used) include some of the softirq time
# that /proc/stat books apart, so the machine's busy time is user+system+irq+softirq.
busy = float(meta.get("CPU_BUSY_SECS", 0)) + float(meta.get("CPU_IRQ_SECS", 0))
ours = float(meta.get("CPU_OURS_SECS", 0))
wall = float(meta.get("WALL_SECS", 0))
others = max(busy - ours, 0.0)
if meta.get("JOINED"):
    # Scenarios measured in two sittings on the same binaries: no one CPU account covers both.
    w(f"| two sittings | **{meta.get('JOINED')}** |")
elif meta.get("PARTIAL"):
    # A run that stopped before its end has no closing CPU accounting: say what it lacks.
    w(f"| incomplete run | **{meta.get('PARTIAL')}** |")
else:
    w(
        f"| CPU used outside the benchmark | about {others:.0f} s of CPU time by other "
        f"processes during the {wall:.0f} s run "
        f"({100 * others / (2 * wall) if wall else 0:.1f}% of both cores): the machine's busy "
        f"time in `/proc/stat` (user, system, interrupts: {busy:.0f} s) less the CPU time of "
        f"the benchmark's own processes ({ours:.0f} s); hypervisor steal "
        f"{meta.get('CPU_STEAL_SECS')} s |"
    )
w("")
w(
    "Layout: the load generator (`wrk`, or `ws-bench` for WebSocket) and the origins run on "
    "**core 0**; the system under test runs alone on **core 1** (`taskset`), with one "
    "worker process or thread where the server has the choice (Portico `threads: 1`, nginx "
    "`worker_processes 1`, HAProxy `nbthread 1`; Varnish's thread pool is pinned to the "
    "core). All traffic is on loopback.\n"
)
w(
    "The origin is nginx serving static files (`bench/conf/nginx-origin.conf`): `/obj/1k`, "
    "`/obj/1m` and `/obj/4m` with `Cache-Control: public, max-age=3600`, `/pass/1k` with `no-store`. "
    "The WebSocket origin is `ws-bench echo-server` (tokio-tungstenite, one thread). "
    "**Direct to origin** means the load generator talks to a second copy of the origin "
    "(HTTP or WebSocket echo) that sits where the edge would, alone on core 1: the limit for "
    "serving that response from one core with nothing in between. Through an edge, the "
    "origin shares core 0 with the load generator, and every request crosses cores twice "
    "more; on this virtual machine a cross-core wake-up is expensive, which is most of the "
    "latency an edge adds at one connection.\n"
)
w("The servers, as `bench/run` starts them (each config rendered into a temporary directory):\n")
w("```sh")
w("taskset -c 0 nginx -c origin/nginx.conf -g 'user root;'            # bench/conf/nginx-origin.conf on :18080")
w("taskset -c 1 nginx -c origin-direct/nginx.conf -g 'user root;'     # the same on :18090 (direct)")
w("taskset -c 0 ws-bench echo-server 127.0.0.1:18081                   # WebSocket echo origin")
w("taskset -c 1 ws-bench echo-server 127.0.0.1:18091                   # the same (direct)")
w("taskset -c 1 portico run -c portico.yaml                           # bench/conf/portico/ on :18100")
w("taskset -c 1 nginx -c nginx.conf -g 'user root;'                   # bench/conf/nginx-edge.conf on :18101")
w(
    "taskset -c 1 varnishd -F -j none -n DIR -a 127.0.0.1:18102 -f default.vcl -s malloc,512m \\\n"
    "    -p thread_pools=1 -p thread_pool_max=12000 -p timeout_idle=300 -p pipe_timeout=3600   # bench/conf/varnish.vcl"
)
w("taskset -c 1 haproxy -db -f haproxy.cfg                            # bench/conf/haproxy.cfg on :18103")
w("taskset -c 1 pingora-floor cache 127.0.0.1:18104 127.0.0.1:18080    # bench/floor: Pingora + MemCache")
w("taskset -c 1 pingora-floor pass 127.0.0.1:18105 127.0.0.1:18080     # bench/floor: pass-through")
w("taskset -c 1 pingora-floor pass 127.0.0.1:18106 127.0.0.1:18081     # the same to the echo origin")
w("```\n")
w(
    "`$PORT` in the commands below is 18100 (Portico), 18101 (nginx), 18102 (Varnish), "
    "18103 (HAProxy), 18104 (pingora-floor with its cache; 18105 for pass-through, 18106 for "
    "WebSocket); direct is 18090 (18091 for WebSocket).\n"
)
w(
    f"**pingora-floor** is the floor Portico is built on: Pingora {meta.get('V_FLOOR') or '0.9.1'} "
    "as published on crates.io (not Portico's patched copies), with the least code that "
    "proxies (`bench/floor`): a `ProxyHttp` whose only hook is `upstream_peer`, and for "
    "cache hits the same plus pingora-cache's `MemCache`, storing what the origin marks "
    "cacheable. One worker thread. **Portico ÷ floor** is what Portico's own code costs on "
    "top of Pingora (1.00× means nothing); **Portico ÷ nginx** is what users compare.\n"
)

# ---- targets ----
targets = []
s1 = {s: med("s1", "hit-1k", s, "rps") for s in SYSTEMS}
s1p99 = {s: med("s1", "hit-1k", s, "p99_ms") for s in SYSTEMS}
if s1["portico"]:
    fastest = max((s for s in EDGES[1:] if s1[s]), key=lambda s: s1[s])
    r = s1["portico"] / s1[fastest]
    targets.append(
        (
            "cache-hit req/s ≥ 1.0× the fastest peer",
            f"{r:.2f}× {LABEL[fastest]} ({num(s1['portico'])} vs {num(s1[fastest])} req/s)",
            r >= 1.0,
        )
    )
    if s1p99["nginx"]:
        targets.append(
            (
                "cache-hit p99 no worse than nginx's",
                f"{s1p99['portico']:.2f} ms vs {s1p99['nginx']:.2f} ms",
                s1p99["portico"] <= s1p99["nginx"],
            )
        )
p, n = med("s3", "pass-c64", "portico", "rps"), med("s3", "pass-c64", "nginx", "rps")
p99, n99 = med("s3", "pass-c64", "portico", "p99_ms"), med("s3", "pass-c64", "nginx", "p99_ms")
if p and n and p99 and n99:
    targets.append(
        (
            "pass-through req/s ≥ 1.0× nginx, p99 no worse",
            f"{p / n:.2f}× ({num(p)} vs {num(n)} req/s), p99 {p99:.2f} ms vs {n99:.2f} ms",
            p / n >= 1.0 and p99 <= n99,
        )
    )
for size in (64, 65536):
    label = "64 B" if size == 64 else "64 KiB"
    p, d = med("s4", f"ws-{size}", "portico", "msgs_per_s"), med("s4", f"ws-{size}", "direct", "msgs_per_s")
    rates = {s: med("s4", f"ws-{size}", s, "msgs_per_s") for s in EDGES[1:]}
    rates = {s: r for s, r in rates.items() if r}
    if p and rates:
        fastest = max(rates, key=rates.get)
        targets.append(
            (
                f"WebSocket echo the fastest edge ({label})",
                f"{p / rates[fastest]:.2f}× {LABEL[fastest]} ({num(p)} vs {num(rates[fastest])} msg/s)",
                p >= rates[fastest],
            )
        )
    if p and d:
        targets.append((f"WebSocket throughput ≥ 0.9× direct ({label})", f"{p / d:.2f}× direct", p / d >= 0.9))
for scenario, variant, name in (("s1", "hit-1k", "cache hit"), ("s3", "pass-c64", "pass-through")):
    p, f = med(scenario, variant, "portico", "rps"), med(scenario, variant, "floor", "rps")
    if p and f:
        targets.append((f"{name} req/s ≥ 0.95× pingora-floor", f"{p / f:.2f}× ({num(p)} vs {num(f)} req/s)", p / f >= 0.95))
    # Where core 0 (the load generator and origin) runs out first, req/s cannot tell the
    # two servers apart: what each spends per request on its own core can.
    pc, fc = cpu_per_request(scenario, variant, "portico"), cpu_per_request(scenario, variant, "floor")
    if pc and fc:
        targets.append(
            (
                f"{name}: Portico's server CPU per request ≤ 1.05× pingora-floor's",
                f"{pc / fc:.2f}× ({pc:.1f} vs {fc:.1f} µs)",
                pc / fc <= 1.05,
            )
        )
kib = med("s7", "idle-http", "portico", "kib_per_conn")
if kib is not None:
    targets.append(("≤ 4 KiB per idle keep-alive connection", f"{kib:.1f} KiB", kib <= 4))
one, rnd = med("s8", "one-key", "portico", "rps"), med("s8", "random", "portico", "rps")
if one and rnd:
    targets.append(
        ("random hits over the filled cache within 15% of one-key hits", f"{rnd / one:.2f}× the one-key req/s", rnd / one >= 0.85)
    )
bpo = med("s8", "fill", "portico", "bytes_per_object")
if bpo is not None:
    targets.append(("≤ 256 bytes of overhead per stored 1 KiB object", f"{bpo - 1024:,.0f} bytes", bpo - 1024 <= 256))
kib = med("s5", "idle-10k", "portico", "kib_per_tunnel")
if kib is not None:
    targets.append(("≤ 6 KiB RSS per idle tunnel", f"{kib:.1f} KiB", kib <= 6))
r10, r10k = med("s6", "routes-10", "portico", "rps"), med("s6", "routes-10000", "portico", "rps")
if r10 and r10k:
    targets.append(("10,000 routes within 10% of 10 routes", f"{r10k / r10:.3f}× the 10-route req/s", r10k / r10 >= 0.9))
w("## Targets\n")
w("| target | measured | met |\n|---|---|---|")
for name, measured, met in targets:
    w(f"| {name} | {measured} | {'yes' if met else '**no**'} |")
w("")


def command_block(scenario, variant):
    command = commands.get((scenario, variant))
    if command:
        w("```sh")
        w(command)
        w("```")


def http_table(scenario, variant, main="rps", main_label="req/s", per_mb=None):
    rows = []
    rows.append(
        f"| system | {main_label} | p50 ms | p99 ms | server core busy | server CPU µs a request | Portico ÷ system ({main_label}) | Portico ÷ system (p99) |"
    )
    rows.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    pm = med(scenario, variant, "portico", main)
    pp99 = med(scenario, variant, "portico", "p99_ms")
    if per_mb:
        pm = pm * per_mb if pm else pm
    for s in SYSTEMS:
        m = med(scenario, variant, s, main)
        if m is None:
            continue
        if per_mb:
            m = m * per_mb
        p99 = med(scenario, variant, s, "p99_ms")
        busy = med(scenario, variant, s, "server_core_busy")
        errors = med(scenario, variant, s, "errors")
        err = f" ({num(errors)} errors)" if errors else ""
        rows.append(
            f"| {LABEL[s]} | {num(m, 1 if per_mb else 0)} {spread(scenario, variant, s, main)}{err} | "
            f"{num(med(scenario, variant, s, 'p50_ms'), 2)} | {num(p99, 2)} | "
            f"{num(busy)}% | {num(cpu_per_request(scenario, variant, s), 1)} | "
            f"{'' if s == 'portico' else ratio(pm, m)} | "
            f"{'' if s == 'portico' else ratio(pp99, p99)} |"
        )
    w("\n".join(rows))
    w("")


w("## Scenario 1: cache hit, 1 KiB object, keep-alive, 64 connections\n")
command_block("s1", "hit-1k")
http_table("s1", "hit-1k")
versus("s1", "hit-1k")
w(
    "“Server core busy” is core 1's utilisation during the run: below 100% the system under "
    "test was not the bottleneck (the load generator on core 0 was). “Server CPU µs a "
    "request” is that share of core 1 over the request rate: what each server spends per "
    "request, which still compares them when core 0 limits the rate. A ratio above 1× means "
    "Portico is faster (for p99: slower).\n"
)

if ("s2", "hit-1m") in commands:
    w("## Scenario 2: cache hit, 1 MiB object, 16 connections\n")
    command_block("s2", "hit-1m")
    http_table("s2", "hit-1m", main_label="MB/s", per_mb=1048576 / 1e6)
    w("MB/s is requests per second × 1,048,576 bytes of body, in 10^6 bytes.\n")
    for variant, title, size in (("hit-4m", "a 4 MiB object", 4194304), ("range-4m", "a 1 MiB range of it", 1048576)):
        if ("s2", variant) in commands:
            w(f"### Cache hit, {title}, 16 connections\n")
            command_block("s2", variant)
            http_table("s2", variant, main_label="MB/s", per_mb=size / 1e6)
    if ("s2", "hit-4m") in commands:
        w(
            "A store may keep objects this large in pieces (Portico keeps bodies over 1 MiB in "
            "the chunks they came in). HAProxy 2.6's cache answers the range with the whole "
            "object (a `200` of 4 MiB, checked by hand), so its range row counts requests for "
            "four times the bytes.\n"
        )

if ("s3", "pass-c64") in commands:
    w("## Scenario 3: pass-through (caching off) to the origin, 1 KiB\n")
    w("Throughput, 64 connections:\n")
    command_block("s3", "pass-c64")
    http_table("s3", "pass-c64")
    versus("s3", "pass-c64")
if ("s3", "pass-c1") in commands:
    w("Latency with one connection (one request at a time), and what the edge adds to direct:\n")
    command_block("s3", "pass-c1")
    w("| system | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms |\n|---|---:|---:|---:|---:|---:|")
    d50, d99 = med("s3", "pass-c1", "direct", "p50_ms"), med("s3", "pass-c1", "direct", "p99_ms")
    for s in SYSTEMS:
        p50, p99 = med("s3", "pass-c1", s, "p50_ms"), med("s3", "pass-c1", s, "p99_ms")
        if p50 is None:
            continue
        add50 = "" if s == "direct" else f"{p50 - d50:+.3f}"
        add99 = "" if s == "direct" else f"{p99 - d99:+.3f}"
        w(
            f"| {LABEL[s]} | {num(med('s3', 'pass-c1', s, 'rps'))} | {p50:.3f} | {p99:.3f} | {add50} | {add99} |"
        )
    w("")
    versus("s3", "pass-c1")

if any(k[0] == "s4" for k in commands):
    w("## Scenario 4: WebSocket echo through the edge versus direct\n")
    w(
        "16 connections, one message in flight on each (send, wait for the echo, repeat); "
        "binary messages; MB/s counts the echoed payload one way.\n"
    )
    for size, label in ((64, "64 B"), (65536, "64 KiB")):
        v = f"ws-{size}"
        w(f"### {label} messages\n")
        command_block("s4", v)
        w(
            "| system | messages/s | MB/s | p50 ms | p99 ms | added p50 ms | added p99 ms | ÷ direct | Portico ÷ system |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        dm = med("s4", v, "direct", "msgs_per_s")
        d50, d99 = med("s4", v, "direct", "p50_ms"), med("s4", v, "direct", "p99_ms")
        pm = med("s4", v, "portico", "msgs_per_s")
        for s in SYSTEMS:
            m = med("s4", v, s, "msgs_per_s")
            if m is None:
                continue
            p50, p99 = med("s4", v, s, "p50_ms"), med("s4", v, s, "p99_ms")
            errors = med("s4", v, s, "errors")
            err = f" ({num(errors)} errors)" if errors else ""
            w(
                f"| {LABEL[s]} | {num(m)} {spread('s4', v, s, 'msgs_per_s')}{err} | "
                f"{num(med('s4', v, s, 'mb_per_s'), 1)} | {p50:.3f} | {p99:.3f} | "
                f"{'' if s == 'direct' else f'{p50 - d50:+.3f}'} | {'' if s == 'direct' else f'{p99 - d99:+.3f}'} | "
                f"{ratio(m, dm)} | {'' if s == 'portico' else ratio(pm, m)} |"
            )
        w("")
        versus("s4", v, "msgs_per_s", "messages/s")
    if any(k[2] == "floor" and k[0] == "s4" for k in raw):
        w(
            "pingora-floor here is `pingora-floor pass` aimed at the echo origin: Pingora "
            "0.9.1 tunnels the upgrade itself, through its whole request machinery (Portico "
            "hands the tunnel to its own relay instead). As published it also has pingora "
            "issue #946 (a tunnel torn down right after the `101`), which Portico patches in "
            "`vendor/pingora-proxy`; a tunnel dropped that way would show as an error in its "
            "row.\n"
        )

if ("s5", "idle-10k") in commands:
    tunnels = int(meta.get("IDLE_TUNNELS", "10000"))
    w(f"## Scenario 5: {tunnels:,} idle WebSocket tunnels\n")
    command_block("s5", "idle-10k")
    if tunnels < 10000:
        w(
            f"**{tunnels:,} tunnels, not 10,000:** an edge holding N tunnels has 2N sockets "
            f"open, and this machine's open-file limit is {meta.get('NOFILE')} and cannot be "
            "raised here (no `CAP_SYS_RESOURCE`). `bench/run` raises it to 65,536 where it "
            "can, and then opens 10,000. The per-tunnel figure does not depend on the count.\n"
        )
    w(
        f"Each edge is started fresh, warmed with 100 tunnels opened and closed, then holds "
        f"{tunnels:,} tunnels to the echo origin (each carried one 2-byte message to prove it "
        "works end to end) for a few seconds. RSS is the edge's resident memory (all its "
        "processes: nginx's master and worker, Varnish's manager and child), read from "
        "`/proc`; KiB per tunnel is (RSS with tunnels − RSS before) ÷ tunnels. One run: "
        "memory is not noisy the way throughput is. There is no direct row: without an "
        "edge, nothing in between holds a tunnel. A ratio below 1× means Portico uses less "
        "memory.\n"
    )
    w(
        "| system | tunnels | RSS before MiB | RSS with tunnels MiB | RSS after close MiB | KiB per tunnel | Portico ÷ system |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    pk = med("s5", "idle-10k", "portico", "kib_per_tunnel")
    for s in EDGES:
        k = med("s5", "idle-10k", s, "kib_per_tunnel")
        if k is None:
            continue
        mib = lambda metric: num(med("s5", "idle-10k", s, metric) / 1024, 1)  # noqa: E731
        w(
            f"| {LABEL[s]} | {num(med('s5', 'idle-10k', s, 'opened'))} | {mib('rss_before_kib')} | "
            f"{mib('rss_open_kib')} | {mib('rss_after_kib')} | {k:.1f} | {'' if s == 'portico' else ratio(pk, k)} |"
        )
    w("")

if any(k[0] == "s6" for k in commands):
    w("## Scenario 6: rule scaling\n")
    w(
        "Generated routes: N routes, each with its own domain (`siteI.bench.test`) and two "
        "patterns, all on the one origin; the request (a 1 KiB cache hit, 64 connections) "
        "goes to the last route generated, and a host outside the routes must not be served. "
        "Portico gets N routes in a rules file, nginx N `server` blocks "
        "(`bench/conf/nginx-routes.conf`), HAProxy a host map "
        "(`bench/conf/haproxy-routes.cfg`), Varnish a chain of N host comparisons in VCL "
        "(`bench/conf/varnish-routes.vcl`; VCL has no table to route with, and the chain is "
        "split into subroutines of 100 because VCC's compile time grows with the square of a "
        "subroutine's length). Direct is the origin on the server core, which answers any "
        "host. The target compares Portico with itself (10,000 routes against 10).\n"
    )
    for n in (10, 1000, 10000):
        command_block("s6", f"routes-{n}")
    direct6 = med("s6", "routes-direct", "direct", "rps")
    w(
        "| routes | Portico req/s | nginx req/s | Varnish req/s | HAProxy req/s | direct req/s | "
        "Portico p99 ms | Portico ÷ 10 routes | Portico ÷ nginx | Portico ÷ Varnish | "
        "Portico ÷ HAProxy | Portico ÷ direct |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for n in (10, 1000, 10000):
        v = f"routes-{n}"
        m = med("s6", v, "portico", "rps")
        if m is None:
            continue
        ng, vn, hp = (med("s6", v, sys, "rps") for sys in ("nginx", "varnish", "haproxy"))
        w(
            f"| {n:,} | {num(m)} {spread('s6', v, 'portico', 'rps')} | {num(ng)} | {num(vn)} | "
            f"{num(hp)} | {num(direct6)} | {num(med('s6', v, 'portico', 'p99_ms'), 2)} | "
            f"{ratio(m, r10)} | {ratio(m, ng)} | {ratio(m, vn)} | {ratio(m, hp)} | {ratio(m, direct6)} |"
        )
    w("")

if ("s7", "idle-http") in commands:
    conns = int(meta.get("IDLE_CONNS", "10000"))
    w(f"## Scenario 7: {conns:,} idle keep-alive HTTP connections\n")
    command_block("s7", "idle-http")
    if conns < 10000:
        w(
            f"**{conns:,} connections, not 10,000:** Portico and HAProxy size their connection "
            f"limits at two descriptors per client connection, and this machine's open-file "
            f"limit is {meta.get('NOFILE')} (the same cut as scenario 5's tunnels). The "
            "per-connection figure does not depend on the count.\n"
        )
    w(
        f"Each caching system is started fresh, warmed with 100 connections opened and closed, "
        f"then holds {conns:,} client connections, each of which made one request (`GET "
        "/obj/1k`, a cache hit) and then stays open without traffic, for a few seconds. "
        "Memory is the system's PSS (resident pages, each page shared between its processes "
        "counted once: nginx's master, worker and cache manager; Varnish's manager and "
        "child), read from `/proc/PID/smaps_rollup`; KiB per connection is (PSS with the "
        "connections open − PSS before) ÷ connections. “Closed by server” counts connections "
        "the system closed while they idled (it should be 0: every system keeps idle "
        "connections for 300 s here). pingora-floor is `pingora-floor cache`. One run. A "
        "ratio below 1× means Portico uses less memory.\n"
    )
    w(
        "| system | connections | closed by server | MiB before | MiB open | MiB after close | "
        "KiB per connection | (by RSS) | Portico ÷ system |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    pk = med("s7", "idle-http", "portico", "kib_per_conn")
    for s in CACHES:
        k = med("s7", "idle-http", s, "kib_per_conn")
        if k is None:
            continue
        mib = lambda metric: num(med("s7", "idle-http", s, metric) / 1024, 1)  # noqa: E731
        w(
            f"| {LABEL[s]} | {num(med('s7', 'idle-http', s, 'opened'))} | "
            f"{num(med('s7', 'idle-http', s, 'closed_by_server'))} | {mib('pss_before_kib')} | "
            f"{mib('pss_open_kib')} | {mib('pss_after_kib')} | {k:.1f} | "
            f"{med('s7', 'idle-http', s, 'kib_per_conn_rss'):.1f} | {'' if s == 'portico' else ratio(pk, k)} |"
        )
    w("")
    versus("s7", "idle-http", "kib_per_conn", "KiB per connection", lower_is_better=True)

if ("s8", "random") in commands:
    objects = int(meta.get("OBJECTS", "1000000"))
    w(f"## Scenario 8: cost growth with the cache, {objects:,} distinct 1 KiB objects\n")
    w(
        f"Each caching system alone, started fresh with its cache sized for {objects:,} "
        "objects (Portico `cache.memory_bytes`, nginx `keys_zone` and `max_size`, Varnish "
        "`-s malloc`, HAProxy `total-max-size` at most 4095 MB, the most HAProxy 2.6 accepts; "
        "`MemCache` has no bound), filled through the edge with `/obj/many/0` .. "
        f"`/obj/many/{objects - 1}` (the origin serves its one 1 KiB file, cacheable, at any "
        "N), then measured with 64 connections: hits on one key (`/obj/many/0`) and hits on "
        "keys drawn at random, alternating; wrk does the same work for both "
        "(`bench/conf/random-keys.lua`, requests formatted before the clock starts). "
        "“Origin requests” are those the origin saw during the random runs: misses, which "
        "should be none. Unlike scenarios 1–6, the systems do not take turns within a round "
        "(one filled cache at a time), so drift on the machine between systems is not "
        "evened out.\n"
    )
    for variant in ("fill", "one-key", "random"):
        command_block("s8", variant)
    w(
        "| system | one-key req/s | one-key p99 ms | random req/s | random p99 ms | random ÷ one-key | "
        "random ÷ scenario 1 | origin requests (random) | Portico ÷ system (random req/s) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    pr = med("s8", "random", "portico", "rps")
    for s in CACHES:
        one, rnd = med("s8", "one-key", s, "rps"), med("s8", "random", s, "rps")
        if rnd is None:
            continue
        misses = med("s8", "random", s, "origin_reqs")
        w(
            f"| {LABEL[s]} | {num(one)} {spread('s8', 'one-key', s, 'rps')} | "
            f"{num(med('s8', 'one-key', s, 'p99_ms'), 2)} | {num(rnd)} {spread('s8', 'random', s, 'rps')} | "
            f"{num(med('s8', 'random', s, 'p99_ms'), 2)} | {ratio(rnd, one)} | "
            f"{ratio(rnd, med('s1', 'hit-1k', s, 'rps'))} | {num(misses)} | {'' if s == 'portico' else ratio(pr, rnd)} |"
        )
    w("")
    versus("s8", "random")
    w(
        "Memory per stored object: (PSS after the fill − PSS before + store) ÷ objects. "
        "“Store” is memory the PSS growth misses: nginx's cache files (on tmpfs here, so "
        "memory too, but outside its processes), and the 1 KiB blocks HAProxy's objects use "
        "(blocks per object from `show cache`, times the objects), because HAProxy clears "
        "its whole cache area at start (4095 MB at most), so the area is in its PSS before "
        "the fill. Whether every object stayed is told by the origin requests above. Overhead is bytes per object less "
        "the 1,024-byte body.\n"
    )
    w(
        "| system | filled | fill errors | fill s | MiB before | MiB filled | store MiB | "
        "bytes per object | overhead bytes | Portico ÷ system (overhead) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    po = med("s8", "fill", "portico", "bytes_per_object")

    for s in CACHES:
        b = med("s8", "fill", s, "bytes_per_object")
        if b is None:
            continue
        mib = lambda metric: num(med("s8", "fill", s, metric) / 1024, 1)  # noqa: E731
        w(
            f"| {LABEL[s]} | {num(med('s8', 'fill', s, 'fill_requests'))} | {num(med('s8', 'fill', s, 'fill_errors'))} | "
            f"{num(med('s8', 'fill', s, 'fill_secs'), 1)} | {mib('pss_before_kib')} | {mib('pss_filled_kib')} | "
            f"{mib('store_kib')} | {num(b)} | {num(b - 1024)} | "
            f"{'' if s == 'portico' or po is None else ratio(po - 1024, b - 1024)} |"
        )
    w("")
    p, f, n = (med("s8", "fill", x, "bytes_per_object") for x in ("portico", "floor", "nginx"))
    if p is not None and f is not None and n is not None:
        w(
            f"Portico ÷ pingora-floor: **{ratio(p - 1024, f - 1024)} overhead per object** · "
            f"Portico ÷ nginx proxy_cache: **{ratio(p - 1024, n - 1024)}** (below 1× is better)\n"
        )

if ("s9", "h2-hit-m1") in commands:
    w("## Scenario 9: over TLS, 1 KiB hits\n")
    w(
        "Each system's own TLS listener with a self-signed RSA-2048 certificate (what most "
        "sites still serve), TLS 1.3 unless a client asks otherwise; the origin is plain "
        "HTTP. Varnish has no TLS and the floor is not built with it: neither has rows. "
        "h2load reports no percentiles.\n"
    )
    for variant, title in (
        ("h2-hit-m1", "HTTP/2 hits, 64 connections, one stream at a time on each"),
        ("h2-hit-m10", "HTTP/2 hits, 64 connections, ten streams at a time on each"),
        ("tls-new-conn", "a new TLS connection for every request (no keep-alive, no resumption), 32 at a time"),
    ):
        if ("s9", variant) in commands:
            w(f"### {title}\n")
            command_block("s9", variant)
            http_table("s9", variant)
            versus("s9", variant)
    w(
        "A full handshake's largest cost is the certificate's signature (RSA-2048); a client "
        "that comes back resumes its session without one, on every system here.\n"
    )

if ("s10", "idle-tls") in commands or ("s10", "idle-h2") in commands:
    conns = int(meta.get("IDLE_TLS_CONNS", "2000"))
    w(f"## Scenario 10: {conns:,} idle connections over TLS\n")
    w(
        "Scenario 9's listeners, each system started fresh for each protocol, warmed with 100 "
        f"connections opened and closed, then holding {conns:,} client connections over TLS "
        "that each made one request (`GET /obj/1k`) and then stay open without traffic for a "
        "few seconds: HTTP/1.1 keep-alive connections (`bench/tls-idle.py`), then HTTP/2 "
        "connections (`bench/h2-idle.py`). Memory and KiB per connection as in scenario 7 "
        "(PSS). One run. A ratio below 1× means Portico uses less memory.\n"
    )
    for variant, title in (("idle-tls", "HTTP/1.1 over TLS"), ("idle-h2", "HTTP/2")):
        if ("s10", variant) not in commands:
            continue
        w(f"### {title}\n")
        command_block("s10", variant)
        w(
            "| system | connections | MiB before | MiB open | KiB per connection | (by RSS) | "
            "Portico ÷ system |\n|---|---:|---:|---:|---:|---:|---:|"
        )
        pk = med("s10", variant, "portico", "kib_per_conn")
        for s in ("portico", "nginx", "haproxy"):
            k = med("s10", variant, s, "kib_per_conn")
            if k is None:
                continue
            mib = lambda metric: num(med("s10", variant, s, metric) / 1024, 1)  # noqa: E731
            w(
                f"| {LABEL[s]} | {num(med('s10', variant, s, 'opened'))} | {mib('pss_before_kib')} | "
                f"{mib('pss_open_kib')} | {k:.1f} | {med('s10', variant, s, 'kib_per_conn_rss'):.1f} | "
                f"{'' if s == 'portico' or pk is None else ratio(pk, k)} |"
            )
        w("")
        versus("s10", variant, "kib_per_conn", "KiB per connection", lower_is_better=True)

# ---- chart ----
chart = os.path.join(BENCH, "results.png") if MODE == "full" else os.path.join(RESULTS, "quick.png")
panels = []


def bars(title, scenario, variant, metric, unit, scale=1.0, systems=SYSTEMS):
    values = [(LABEL[s], med(scenario, variant, s, metric)) for s in systems]
    values = [(n, v * scale) for n, v in values if v is not None]
    if values:
        panels.append((title, unit, values))


bars("1. cache hit 1 KiB", "s1", "hit-1k", "rps", "req/s")
bars("2. cache hit 1 MiB", "s2", "hit-1m", "rps", "MB/s", 1048576 / 1e6)
bars("2. cache hit 4 MiB", "s2", "hit-4m", "rps", "MB/s", 4194304 / 1e6)
bars("2. cache hit, 1 MiB range of 4 MiB", "s2", "range-4m", "rps", "MB/s", 1048576 / 1e6)
bars("3. pass-through, 64 conns", "s3", "pass-c64", "rps", "req/s")
bars("4. WebSocket echo 64 B", "s4", "ws-64", "msgs_per_s", "messages/s")
bars("4. WebSocket echo 64 KiB", "s4", "ws-65536", "mb_per_s", "MB/s")
bars("5. RSS per idle tunnel (lower is better)", "s5", "idle-10k", "kib_per_tunnel", "KiB", systems=EDGES)
s6 = [
    (f"{LABEL[system]}, {n:,} routes", med("s6", f"routes-{n}", system, "rps"))
    for system in ("portico", "nginx", "varnish", "haproxy")
    for n in (10, 1000, 10000)
]
s6.append((LABEL["direct"], med("s6", "routes-direct", "direct", "rps")))
s6 = [(name, v) for name, v in s6 if v]
if s6:
    panels.append(("6. rule scaling, cache hit 1 KiB", "req/s", s6))
bars("7. memory per idle keep-alive connection (lower is better)", "s7", "idle-http", "kib_per_conn", "KiB", systems=CACHES)
bars("8. random hits over the filled cache", "s8", "random", "rps", "req/s", systems=CACHES)
bars("8. memory per stored 1 KiB object (lower is better)", "s8", "fill", "bytes_per_object", "bytes", systems=CACHES)
bars("9. HTTP/2 hits, one stream a connection", "s9", "h2-hit-m1", "rps", "req/s", systems=["portico", "nginx", "haproxy"])
bars("9. new TLS connection per request", "s9", "tls-new-conn", "rps", "req/s", systems=["portico", "nginx", "haproxy"])
bars("10. memory per idle HTTP/2 connection (lower is better)", "s10", "idle-h2", "kib_per_conn", "KiB", systems=["portico", "nginx", "haproxy"])

colors = {
    "Portico": "#d95f02",
    "nginx proxy_cache": "#1b9e77",
    "Varnish": "#7570b3",
    "HAProxy cache": "#e7298a",
    "pingora-floor": "#e6ab02",
    "direct to origin": "#999999",
}
cols = 2 if len(panels) > 2 else len(panels)
rows = (len(panels) + cols - 1) // cols
fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 3.2 * rows), squeeze=False)
for ax, (title, unit, values) in zip(axes.flat, panels):
    names = [n for n, _ in values]
    ax.barh(names, [v for _, v in values], color=[colors.get(n.split(",")[0], "#999999") for n in names])
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(labelsize=8)
    top = max(v for _, v in values)
    for i, (_, v) in enumerate(values):
        ax.text(v + top * 0.01, i, f"{v:,.0f}" if v >= 100 else f"{v:,.1f}", va="center", fontsize=7)
    ax.set_xlim(0, top * 1.18)
for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
fig.suptitle(f"Portico vs peers, medians of {meta.get('RUNS')} runs ({meta.get('DATE')})", fontsize=11)
fig.tight_layout()
fig.savefig(chart, dpi=110)

w("## Chart\n")
w(f"![benchmark chart]({os.path.relpath(chart, BENCH if MODE == 'full' else RESULTS)})\n")

# bench/handover writes its own section (a binary upgrade with 10,000 idle tunnels).
handover = os.path.join(RESULTS, "handover.md")
if os.path.exists(handover) and MODE == "full":
    with open(handover) as f:
        w(f.read().rstrip() + "\n")

notes = os.path.join(BENCH, "notes.md")
if os.path.exists(notes) and MODE == "full":
    with open(notes) as f:
        w(f.read().rstrip() + "\n")

report = os.path.join(BENCH, "RESULTS.md") if MODE == "full" else os.path.join(RESULTS, "RESULTS-quick.md")
with open(report, "w") as f:
    f.write("\n".join(out))
print(f"wrote {report} and {chart}")
