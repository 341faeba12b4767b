//! `cache.memory_bytes` is a hard bound, fills in progress included, measured where it
//! matters: the resident memory of the built `portico run`, while 40 clients miss 40
//! distinct large objects at once. Every client must still get its whole body, byte for
//! byte. The same load through a `portico run` that stores nothing (`no-store`) measures
//! what the proxy costs by itself; the cache may add its bound and its stated slack.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origin::{Recorded, TestOrigin};
use common::process::{first_answer, free_port, get_json, Running};

use http::Response;

const MIB: u64 = 1 << 20;
const OBJECTS: usize = 40;
const OBJECT_BYTES: usize = 4 << 20;
const BOUND: u64 = 32 * MIB;

/// The store's stated slack (README, `cache/store/`) for 40 fills: under one body chunk
/// per fill in progress (a chunk is reserved before it is kept; pingora reads at most
/// 64 KiB at a time), and per abandoned fill the chunks its reader has yet to read. The
/// clients here read as fast as the machine lets them, on a busy 2-core machine a few
/// chunks behind: 8 chunks (512 KiB) each are allowed. Index entries are counted.
const STORE_SLACK: u64 = OBJECTS as u64 * 8 * 64 * 1024;

/// Object `n`'s body: `OBJECT_BYTES` bytes, a pattern of its own.
fn body(n: usize) -> Bytes {
    Bytes::from(
        (0..OBJECT_BYTES)
            .map(|i| (i as u8).wrapping_mul(13).wrapping_add(n as u8) ^ (i >> 12) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// `VmRSS` or `VmHWM` of process `pid`, in bytes.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// What one load did to one `portico run`.
struct Measured {
    baseline: u64,
    peak: u64,
    /// `/status`'s `cache` after the load.
    cache: serde_json::Value,
    /// Clients that did not get a 200 with the whole, identical body.
    bad: Vec<String>,
    took: Duration,
    edge: Running,
    base: String,
    _dir: tempfile::TempDir,
}

impl Measured {
    fn growth(&self) -> u64 {
        self.peak.saturating_sub(self.baseline)
    }
}

/// Starts `portico run` (32 MiB cache) in front of `origin`, warms it up with 40 small
/// objects on 40 connections, then sends 40 parallel requests for `/{prefix}/0..40` while
/// sampling its RSS.
async fn load(origin: std::net::SocketAddr, prefix: &str, bodies: &Arc<Vec<Bytes>>) -> Measured {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().to_path_buf();
    let (port, admin_port) = (free_port(), free_port());
    std::fs::create_dir(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("portico.yaml"),
        format!(
            "name: bound\nlisteners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin_port}\nrules_dir: rules\naccess_log: off\nserver:\n  threads: 2\ncache:\n  memory_bytes: 32MiB\n  max_object_bytes: 8MiB\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules/site.yaml"),
        format!(
            "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n{}",
            common::edge::group_yaml("web", origin)
        ),
    )
    .unwrap();
    let edge = Running::start(
        &["run", "-c", dir.join("portico.yaml").to_str().unwrap()],
        &dir,
        "portico",
    );
    let pid = edge.pid();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(OBJECTS)
        .build()
        .unwrap();
    assert_eq!(
        first_answer(&client, &format!("{base}/warm/0"))
            .await
            .status(),
        200
    );
    // Warm up: 40 connections each way, as under the load, with small objects.
    let warm = (0..OBJECTS).map(|i| {
        let (client, url) = (client.clone(), format!("{base}/warm/{}", i + 1));
        tokio::spawn(async move { client.get(url).send().await.unwrap().bytes().await })
    });
    for answer in futures_util::future::join_all(warm).await {
        assert_eq!(&answer.unwrap().unwrap()[..], b"warm");
    }
    let baseline = proc_status(pid, "VmRSS");
    // The high-water mark from here on (`5` resets it to the current RSS).
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();

    // Sample the RSS while the load runs (a measurement, not a synchronisation).
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while running.load(Ordering::Relaxed) {
                peak = peak.max(proc_status(pid, "VmRSS"));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let started = Instant::now();
    let loads = (0..OBJECTS).map(|i| {
        let (client, url, bodies) = (
            client.clone(),
            format!("{base}/{prefix}/{i}"),
            bodies.clone(),
        );
        tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
            let status = response.status().as_u16();
            let got = response.bytes().await.unwrap();
            (status, x_cache, got == bodies[i], got.len())
        })
    });
    let answers = futures_util::future::join_all(loads).await;
    let took = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let mut peak = sampler.join().unwrap();
    if hwm_reset {
        peak = peak.max(proc_status(pid, "VmHWM"));
    }
    let mut bad = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let (status, x_cache, identical, len) = answer.unwrap();
        if status != 200 || !identical {
            bad.push(format!(
                "/{prefix}/{i}: {status} {x_cache}, {len} bytes, identical: {identical}"
            ));
        }
    }
    let status = get_json(&client, &format!("http://127.0.0.1:{admin_port}/status")).await;
    Measured {
        baseline,
        peak,
        cache: status["cache"].clone(),
        bad,
        took,
        edge,
        base,
        _dir: temp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_parallel_large_misses_stay_within_memory_bytes() {
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..OBJECTS).map(body).collect());
    let served = bodies.clone();
    // `/big/n` may be stored; `/pass/n` is the same body with `no-store`.
    let origin = TestOrigin::start(Arc::new(move |req: &Recorded| {
        let mut parts = req.path().trim_start_matches('/').split('/');
        let (kind, n) = (parts.next().unwrap_or_default(), parts.next());
        let body = match (kind, n) {
            ("big" | "pass", Some(n)) => served[n.parse::<usize>().unwrap()].clone(),
            _ => Bytes::from_static(b"warm"),
        };
        let mut response = Response::new(body);
        let cache_control = if kind == "pass" {
            "no-store"
        } else {
            "max-age=600"
        };
        response
            .headers_mut()
            .insert("cache-control", cache_control.parse().unwrap());
        response
    }))
    .await;

    // What proxying this load costs without the cache: Pingora's buffers for 40 responses
    // in flight, and the allocator's keeping of what it freed. It varies from run to run
    // (18 to 25 MiB here), so the larger of two runs.
    let mut uncached_growth = 0;
    let mut uncached_runs = Vec::new();
    for _ in 0..2 {
        let mut uncached = load(origin.addr(), "pass", &bodies).await;
        assert!(uncached.bad.is_empty(), "{:?}", uncached.bad);
        uncached_growth = uncached_growth.max(uncached.growth());
        uncached_runs.push(format!(
            "{} (baseline {}, peak {}, {:?})",
            mib(uncached.growth()),
            mib(uncached.baseline),
            mib(uncached.peak),
            uncached.took
        ));
        // One edge at a time on the machine.
        let _ = uncached.edge.child.kill();
        let _ = uncached.edge.child.wait();
    }
    let cached = load(origin.addr(), "big", &bodies).await;
    let cache = &cached.cache;
    println!(
        "RSS growth under 40 parallel misses of {} MiB: uncached {}; cached {} (baseline {}, peak {}, {:?}) for a bound of {} + the store's slack {}; {} objects stored ({}), {} fills abandoned, {} evicted",
        OBJECT_BYTES >> 20,
        uncached_runs.join(", "),
        mib(cached.growth()),
        mib(cached.baseline),
        mib(cached.peak),
        cached.took,
        mib(BOUND),
        mib(STORE_SLACK),
        cache["objects"],
        mib(cache["bytes"].as_u64().unwrap()),
        cache["abandoned_fills"],
        cache["evicted_objects"],
    );
    assert!(
        cached.bad.is_empty(),
        "every client gets its whole body:\n{}\n{}",
        cached.bad.join("\n"),
        cached.edge.printed()
    );
    assert!(cache["used_bytes"].as_u64().unwrap() <= BOUND, "{cache}");
    assert!(
        cache["abandoned_fills"].as_u64().unwrap() > 0,
        "the load must go over the bound: {cache}"
    );
    assert!(
        cached.growth() <= uncached_growth + BOUND + STORE_SLACK,
        "with the cache, RSS grew by {}: more than the {} it grows by without it + {} + {}",
        mib(cached.growth()),
        mib(uncached_growth),
        mib(BOUND),
        mib(STORE_SLACK)
    );
    // What was stored is served whole.
    let client = reqwest::Client::new();
    for (i, expected) in bodies.iter().enumerate() {
        let response = client
            .get(format!("{}/big/{i}", cached.base))
            .send()
            .await
            .unwrap();
        if response.headers()["x-cache"] == "TCP_HIT" {
            assert!(response.bytes().await.unwrap() == expected, "/big/{i}");
        }
    }
}
