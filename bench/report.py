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
SYSTEMS = EDGES + ["direct"]
LABEL = {
    "portico": "Portico",
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
    return {"portico": 18100, "nginx": 18101, "varnish": 18102, "haproxy": 18103}.get(system)


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
w(f"| Portico | commit {meta.get('V_PORTICO')}, release build, {meta.get('V_RUSTC')} |")
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
# Process CPU times (what the benchmark's processes used) include some of the softirq time
# that /proc/stat books apart, so the machine's busy time is user+system+irq+softirq.
busy = float(meta.get("CPU_BUSY_SECS", 0)) + float(meta.get("CPU_IRQ_SECS", 0))
ours = float(meta.get("CPU_OURS_SECS", 0))
wall = float(meta.get("WALL_SECS", 0))
others = max(busy - ours, 0.0)
w(
    f"| CPU used outside the benchmark | about {others:.0f} s of CPU time by other processes "
    f"during the {wall:.0f} s run ({100 * others / (2 * wall) if wall else 0:.1f}% of both "
    f"cores): the machine's busy time in `/proc/stat` (user, system, interrupts: "
    f"{busy:.0f} s) less the CPU time of the benchmark's own processes ({ours:.0f} s); "
    f"hypervisor steal {meta.get('CPU_STEAL_SECS')} s |"
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
    "The origin is nginx serving static files (`bench/conf/nginx-origin.conf`): `/obj/1k` "
    "and `/obj/1m` with `Cache-Control: public, max-age=3600`, `/pass/1k` with `no-store`. "
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
w("```\n")
w(
    "`$PORT` in the commands below is 18100 (Portico), 18101 (nginx), 18102 (Varnish), "
    "18103 (HAProxy); direct is 18090 (18091 for WebSocket).\n"
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
for size in (64, 65536):
    p, d = med("s4", f"ws-{size}", "portico", "msgs_per_s"), med("s4", f"ws-{size}", "direct", "msgs_per_s")
    if p and d:
        targets.append(
            (
                f"WebSocket throughput ≥ 0.9× direct ({'64 B' if size == 64 else '64 KiB'})",
                f"{p / d:.2f}× direct",
                p / d >= 0.9,
            )
        )
kib = med("s5", "idle-10k", "portico", "kib_per_tunnel")
if kib is not None:
    targets.append(("≤ 16 KiB RSS per idle tunnel", f"{kib:.1f} KiB", kib <= 16))
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
        f"| system | {main_label} | p50 ms | p99 ms | server core busy | Portico ÷ system ({main_label}) | Portico ÷ system (p99) |"
    )
    rows.append("|---|---:|---:|---:|---:|---:|---:|")
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
            f"{num(busy)}% | {'' if s == 'portico' else ratio(pm, m)} | "
            f"{'' if s == 'portico' else ratio(pp99, p99)} |"
        )
    w("\n".join(rows))
    w("")


w("## Scenario 1: cache hit, 1 KiB object, keep-alive, 64 connections\n")
command_block("s1", "hit-1k")
http_table("s1", "hit-1k")
w(
    "“Server core busy” is core 1's utilisation during the run: below 100% the system under "
    "test was not the bottleneck (the load generator on core 0 was). A ratio above 1× means "
    "Portico is faster (for p99: slower).\n"
)

if ("s2", "hit-1m") in commands:
    w("## Scenario 2: cache hit, 1 MiB object, 16 connections\n")
    command_block("s2", "hit-1m")
    http_table("s2", "hit-1m", main_label="MB/s", per_mb=1048576 / 1e6)
    w("MB/s is requests per second × 1,048,576 bytes of body, in 10^6 bytes.\n")

if ("s3", "pass-c64") in commands:
    w("## Scenario 3: pass-through (caching off) to the origin, 1 KiB\n")
    w("Throughput, 64 connections:\n")
    command_block("s3", "pass-c64")
    http_table("s3", "pass-c64")
    w("Latency with one connection (one request at a time), and what the edge adds to direct:\n")
    command_block("s3", "pass-c1")
    w("| system | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms |\n|---|---:|---:|---:|---:|---:|")
    d50, d99 = med("s3", "pass-c1", "direct", "p50_ms"), med("s3", "pass-c1", "direct", "p99_ms")
    for s in SYSTEMS:
        p50, p99 = med("s3", "pass-c1", s, "p50_ms"), med("s3", "pass-c1", s, "p99_ms")
        if p50 is None:
            continue
        add50 = "" if s == "direct" else f"+{p50 - d50:.3f}"
        add99 = "" if s == "direct" else f"+{p99 - d99:.3f}"
        w(
            f"| {LABEL[s]} | {num(med('s3', 'pass-c1', s, 'rps'))} | {p50:.3f} | {p99:.3f} | {add50} | {add99} |"
        )
    w("")

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
                f"{'' if s == 'direct' else f'+{p50 - d50:.3f}'} | {'' if s == 'direct' else f'+{p99 - d99:.3f}'} | "
                f"{ratio(m, dm)} | {'' if s == 'portico' else ratio(pm, m)} |"
            )
        w("")

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

colors = {
    "Portico": "#d95f02",
    "nginx proxy_cache": "#1b9e77",
    "Varnish": "#7570b3",
    "HAProxy cache": "#e7298a",
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
