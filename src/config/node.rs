//! Stage 2 for `conf/portico.yaml`: the node's settings.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::diagnostics::{FileId, Report};
use super::duration::parse_bytes;
use super::file::{FileNode, OnCachedUpgrade, Tier};
use super::model::{AccessLogTarget, Listener, NodeSettings, TunnelLimits};
use super::tls::{build_listener_tls, CertNames};
use super::{bounded_duration_field, duration_field};

/// Node settings plus the defaults routes inherit.
pub struct BuiltNode {
    pub settings: NodeSettings,
    pub rules_dir: std::path::PathBuf,
    pub on_cached_upgrade: OnCachedUpgrade,
    pub tunnel: TunnelLimits,
    /// Names each listener certificate covers, checked against the routes later.
    pub cert_names: Vec<CertNames>,
}

/// Rules live beside `conf/` by default.
pub const DEFAULT_RULES_DIR: &str = "../rules";
/// How long a half-closed tunnel's other side may go on: long enough for a WebSocket
/// Close handshake's answer and a last message, short enough that a peer that never
/// closes does not hold the tunnel (HAProxy's `timeout client-fin`/`server-fin` play
/// this part there).
pub const DEFAULT_TUNNEL_LINGER: Duration = Duration::from_secs(5);
/// Pingora's own default place for the upgrade socket, with Portico's name.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/portico_upgrade.sock";
/// A day: long enough to spare the origin, short enough that a wrong guess mends itself
/// (RFC 9111 §4.2.2 sets no bound).
const DEFAULT_HEURISTIC_MAX: Duration = Duration::from_secs(86_400);
const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
const DEFAULT_MAX_OBJECT_BYTES: u64 = 128 << 20;

pub fn build_node(report: &mut Report, file: FileId, conf_dir: &Path, raw: &FileNode) -> BuiltNode {
    if raw.name.is_empty()
        || !raw
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        report.error(file, "name", format!("node name \"{}\" must be letters, digits, '-', '_' or '.' (it is sent in Via and CDN-Loop)", raw.name));
    }
    if raw.listeners.is_empty() {
        report.error(file, "listeners", "at least one listener is needed");
    }
    let mut cert_names = Vec::new();
    let mut names = std::collections::HashMap::new();
    let listeners: Vec<Listener> = raw
        .listeners
        .iter()
        .enumerate()
        .filter_map(|(i, listener)| {
            let tls = listener.tls.as_ref().map(|tls| {
                build_listener_tls(
                    report,
                    file,
                    conf_dir,
                    &format!("listeners[{i}].tls"),
                    tls,
                    &mut cert_names,
                )
            });
            let address = socket_addr(
                report,
                file,
                &format!("listeners[{i}].address"),
                &listener.address,
            )?;
            let name = listener.name.clone().filter(|name| {
                let path = format!("listeners[{i}].name");
                if !is_token(name) {
                    report.error(file, &path, format!("listener name \"{name}\" must be letters, digits, '-', '_' or '.'"));
                    return false;
                }
                if let Some(first) = names.get(name.as_str()) {
                    report.error(file, &path, format!("duplicate listener name \"{name}\" (first given to listeners[{first}])"));
                    return false;
                }
                names.insert(name.clone(), i);
                true
            });
            Some(Listener { address, name, tls })
        })
        .collect();
    let admin = super::admin::build_admin(report, file, conf_dir, raw.admin.as_ref());
    if let Some(admin) = &admin {
        let shared = listeners.iter().any(|l: &Listener| {
            l.address.port() == admin.address.port()
                && (l.address.ip() == admin.address.ip()
                    || l.address.ip().is_unspecified()
                    || admin.address.ip().is_unspecified())
        });
        if shared {
            report.error(
                file,
                "admin.address",
                format!("the admin listener {} would share a port with a proxy listener, exposing /purge and /reload there; give it a port of its own", admin.address),
            );
        }
    }

    let server = raw.server.as_ref();
    let threads = server
        .and_then(|s| s.threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 0 {
        report.error(file, "server.threads", "threads must be at least 1");
    } else if threads > cores * 4 {
        report.error(
            file,
            "server.threads",
            format!(
                "{threads} threads on {cores} core(s) only adds contention; use at most {}",
                cores * 4
            ),
        );
    }
    let grace_period = duration_field(
        report,
        file,
        "server.grace_period",
        server.and_then(|s| s.grace_period.as_deref()),
        Duration::ZERO,
    );
    let graceful_shutdown_timeout = duration_field(
        report,
        file,
        "server.graceful_shutdown_timeout",
        server.and_then(|s| s.graceful_shutdown_timeout.as_deref()),
        Duration::from_secs(5),
    );
    let drain_delay = duration_field(
        report,
        file,
        "server.drain_delay",
        server.and_then(|s| s.drain_delay.as_deref()),
        Duration::from_secs(5),
    );
    let tunnel_drain_timeout = duration_field(
        report,
        file,
        "server.tunnel_drain_timeout",
        server.and_then(|s| s.tunnel_drain_timeout.as_deref()),
        Duration::from_secs(30),
    );
    let upgrade_close_timeout = duration_field(
        report,
        file,
        "server.upgrade_close_timeout",
        server.and_then(|s| s.upgrade_close_timeout.as_deref()),
        Duration::from_secs(1),
    );
    let upgrade_sock = server.and_then(|s| s.upgrade_sock.as_deref()).map_or_else(
        || Path::new(DEFAULT_UPGRADE_SOCK).to_path_buf(),
        |p| conf_dir.join(p),
    );

    let access_log = match raw.access_log.as_deref() {
        None | Some("stdout") => AccessLogTarget::Stdout,
        Some("off") => AccessLogTarget::Off,
        Some(path) => AccessLogTarget::File(conf_dir.join(path)),
    };

    let defaults = raw.defaults.as_ref();
    let tunnel = TunnelLimits {
        idle_timeout: bounded_duration_field(
            report,
            file,
            "defaults.tunnel_idle_timeout",
            defaults.and_then(|d| d.tunnel_idle_timeout.as_deref()),
            Duration::from_secs(300),
            Duration::from_millis(100),
        ),
        max_lifetime: bounded_duration_field(
            report,
            file,
            "defaults.tunnel_max_lifetime",
            defaults.and_then(|d| d.tunnel_max_lifetime.as_deref()),
            Duration::from_secs(4 * 3600),
            Duration::from_millis(100),
        ),
        linger: bounded_duration_field(
            report,
            file,
            "defaults.tunnel_linger",
            defaults.and_then(|d| d.tunnel_linger.as_deref()),
            DEFAULT_TUNNEL_LINGER,
            Duration::from_millis(100),
        ),
    };
    let cache_default_ttl = duration_field(
        report,
        file,
        "defaults.cache_default_ttl",
        defaults.and_then(|d| d.cache_default_ttl.as_deref()),
        Duration::ZERO,
    );
    let cache_heuristic_max = duration_field(
        report,
        file,
        "defaults.cache_heuristic_max",
        defaults.and_then(|d| d.cache_heuristic_max.as_deref()),
        DEFAULT_HEURISTIC_MAX,
    );

    let origin_timeouts = super::timeouts::build_origin_timeouts(
        report,
        file,
        "defaults.origin_timeouts",
        defaults.and_then(|d| d.origin_timeouts.as_ref()),
        super::timeouts::DEFAULT_ORIGIN_TIMEOUTS,
    );

    let cache = raw.cache.as_ref();
    let cache_memory_bytes = bytes_field(
        report,
        file,
        "cache.memory_bytes",
        cache.and_then(|c| c.memory_bytes.as_deref()),
        DEFAULT_MEMORY_BYTES,
    );
    let cache_max_object_bytes = bytes_field(
        report,
        file,
        "cache.max_object_bytes",
        cache.and_then(|c| c.max_object_bytes.as_deref()),
        DEFAULT_MAX_OBJECT_BYTES.min(cache_memory_bytes),
    );
    if cache_max_object_bytes > cache_memory_bytes {
        report.error(
            file,
            "cache.max_object_bytes",
            "max_object_bytes cannot exceed memory_bytes",
        );
    }
    let cache_lock_timeout = bounded_duration_field(
        report,
        file,
        "cache.lock_timeout",
        cache.and_then(|c| c.lock_timeout.as_deref()),
        Duration::from_secs(5),
        Duration::from_millis(100),
    );

    let cache_tag_headers = tag_headers(report, file, cache.and_then(|c| c.tag_headers.as_ref()));

    BuiltNode {
        settings: NodeSettings {
            name: raw.name.clone(),
            tier: raw.tier.unwrap_or(Tier::Edge),
            listeners,
            admin,
            threads: threads.max(1),
            work_stealing: server.and_then(|s| s.work_stealing).unwrap_or(threads > 1),
            grace_period,
            graceful_shutdown_timeout,
            upstream_keepalive_pool_size: server
                .and_then(|s| s.upstream_keepalive_pool_size)
                .unwrap_or(128),
            drain_delay,
            tunnel_drain_timeout,
            upgrade_close_timeout,
            upgrade_sock,
            tunnel_handover: server.and_then(|s| s.tunnel_handover).unwrap_or(true),
            tunnel_splice: server.and_then(|s| s.tunnel_splice).unwrap_or(false),
            batch_sends: server.and_then(|s| s.batch_sends).unwrap_or(true),
            access_log,
            cache_default_ttl,
            cache_heuristic_max,
            origin_timeouts,
            cache_memory_bytes,
            cache_max_object_bytes,
            cache_lock_timeout,
            cache_tag_headers,
            cache_strip_tag_headers: cache.and_then(|c| c.strip_tag_headers).unwrap_or(true),
            tiers: super::tiers::build_tiers(report, file, conf_dir, raw),
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    let network = super::conditions::parse_network(text);
                    if network.is_none() {
                        report.error(
                            file,
                            &format!("trusted_proxies[{i}]"),
                            format!("\"{text}\" is not an address or CIDR block"),
                        );
                    }
                    network
                })
                .collect(),
            limits: super::limits::build_limits(report, file, raw.limits.as_ref()),
            chaos: super::chaos::build_chaos(report, file, raw.chaos.as_ref()),
            tls_ticket_keys: super::tls::build_ticket_keys(report, file, conf_dir, raw),
        },
        rules_dir: conf_dir.join(raw.rules_dir.as_deref().unwrap_or(DEFAULT_RULES_DIR)),
        on_cached_upgrade: defaults
            .and_then(|d| d.on_cached_upgrade)
            .unwrap_or(OnCachedUpgrade::Reproduce),
        tunnel,
        cert_names,
    }
}

/// The tag headers of the store: `Cache-Tag` and `Surrogate-Key` unless configured.
pub const DEFAULT_TAG_HEADERS: [&str; 2] = ["cache-tag", "surrogate-key"];

/// Response fields that frame the message or that the edge sets itself: stripping them
/// as tag headers would break responses.
const NOT_TAGS: [&str; 12] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "content-type",
    "date",
    "age",
    "via",
    "x-cache",
    "x-portico-ref",
    "x-portico-error",
];

/// `cache.tag_headers`: valid, distinct header names that the proxy does not own.
fn tag_headers(
    report: &mut Report,
    file: FileId,
    raw: Option<&Vec<String>>,
) -> Vec<http::HeaderName> {
    let Some(raw) = raw else {
        return DEFAULT_TAG_HEADERS
            .iter()
            .map(|name| http::HeaderName::from_static(name))
            .collect();
    };
    let mut names: Vec<http::HeaderName> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let path = format!("cache.tag_headers[{i}]");
        let Ok(name) = http::HeaderName::from_bytes(text.trim().as_bytes()) else {
            report.error(file, &path, format!("\"{text}\" is not a header name"));
            continue;
        };
        if names.contains(&name) {
            report.error(file, &path, format!("header \"{text}\" is listed twice"));
            continue;
        }
        if NOT_TAGS.contains(&name.as_str()) {
            report.error(
                file,
                &path,
                format!("\"{text}\" cannot tag objects: it frames responses or the edge sets it (tag headers are removed from responses)"),
            );
            continue;
        }
        names.push(name);
    }
    names
}

/// Letters, digits, `-`, `_` or `.`, at least one: names that travel in headers.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub(super) fn socket_addr(
    report: &mut Report,
    file: FileId,
    path: &str,
    text: &str,
) -> Option<SocketAddr> {
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            report.error(
                file,
                path,
                format!("\"{text}\" is not an address; write ip:port, e.g. 127.0.0.1:8080"),
            );
            None
        }
    }
}

fn bytes_field(
    report: &mut Report,
    file: FileId,
    path: &str,
    text: Option<&str>,
    default: u64,
) -> u64 {
    match text.map(parse_bytes) {
        None => default,
        Some(Ok(bytes)) => bytes,
        Some(Err(message)) => {
            report.error(file, path, message);
            default
        }
    }
}
