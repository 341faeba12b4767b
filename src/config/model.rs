//! Stage 2: the validated model the node runs on. Everything is resolved: durations are
//! `Duration`s, names are indexes, patterns and regexes are compiled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use regex::Regex;

pub use super::chaos::{ChaosCloseTunnels, CloseHow};
pub use super::file::{
    CacheBehavior, ForwardingProtocol, HeaderAction, MatchVariable, OnCachedUpgrade, Operator,
    ProbeProtocol, RedirectProtocol, Tier, WhenAllUnhealthy,
};

/// The whole configuration: the node's settings plus its routes, rule sets and origin groups.
#[derive(Debug)]
pub struct Config {
    pub node: NodeSettings,
    pub routes: Vec<Route>,
    pub rule_sets: Vec<RuleSet>,
    pub origin_groups: Vec<OriginGroup>,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub address: SocketAddr,
    /// Required by every admin endpoint but `/healthz` when set.
    pub token: Option<AdminToken>,
}

/// The admin bearer token. Its `Debug` hides it, so settings can be logged.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken(token.to_owned())
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`, compared in time
    /// that does not depend on where the first difference is.
    pub fn admits(&self, authorization: &[u8]) -> bool {
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
        let Some((scheme, presented)) = authorization.split_at_checked(7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"Bearer ") {
            return false;
        }
        let expected = self.0.as_bytes();
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: String,
    pub tier: Tier,
    pub listeners: Vec<Listener>,
    pub admin: Option<AdminSettings>,
    pub threads: usize,
    /// Whether the worker threads take each other's tasks (Pingora's work-stealing tokio
    /// runtime), or each thread runs the connections it was given to their end (one
    /// single-threaded runtime per thread, as nginx's and HAProxy's workers do). Defaults
    /// to stealing with more than one thread only: with one there is nothing to steal, and
    /// the single-threaded runtime passes a request through about 6% faster
    /// (`bench/notes.md`, session 15).
    pub work_stealing: bool,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub upstream_keepalive_pool_size: usize,
    /// SIGTERM: `/healthz` answers 503 this long before the listeners close.
    pub drain_delay: Duration,
    /// SIGTERM or a binary upgrade: open tunnels get this long to end by themselves.
    pub tunnel_drain_timeout: Duration,
    /// A binary upgrade: once the listening sockets are sent, the old process accepts this
    /// long beside the new one before it stops (connections queue on the shared sockets, so
    /// nothing is refused however short it is).
    pub upgrade_close_timeout: Duration,
    /// Where a graceful binary upgrade hands the listening sockets over.
    pub upgrade_sock: std::path::PathBuf,
    /// A graceful binary upgrade hands open plain-TCP tunnels to the new process (over
    /// `<upgrade_sock>.tunnels`); otherwise they drain in the old one.
    pub tunnel_handover: bool,
    /// Plain-TCP tunnels move large WebSocket payloads socket to socket with `splice(2)`
    /// (`src/tunnel/relay/splice.rs`); otherwise every byte is copied through the relay.
    pub tunnel_splice: bool,
    /// Each response's (and origin request's) head waits, before it is written, for the
    /// tasks already ready on its thread, so that under load the writes leave together and
    /// each wakes its peer once per burst, not once per message (Pingora's
    /// `set_send_batching`). A lone request pays one more poll of its task.
    pub batch_sends: bool,
    pub access_log: AccessLogTarget,
    pub cache_default_ttl: Duration,
    /// RFC 9111 §4.2.2's heuristic (a tenth of the time since `Last-Modified`) gives at
    /// most this lifetime (`0s`: none), where the origin and `cache_default_ttl` give none.
    pub cache_heuristic_max: Duration,
    /// Origin groups without `timeouts` use these.
    pub origin_timeouts: OriginTimeouts,
    pub cache_memory_bytes: u64,
    pub cache_max_object_bytes: u64,
    pub cache_lock_timeout: Duration,
    /// Response headers whose values tag stored objects (lower-case names, in order).
    pub cache_tag_headers: Vec<http::HeaderName>,
    /// The tag headers are removed from responses to clients (not to a trusted edge).
    pub cache_strip_tag_headers: bool,
    /// Shields, trusted edges (`tier::`).
    pub tiers: TierSettings,
    /// Clients whose forwarding headers are kept (a load balancer in front of the node).
    pub trusted_proxies: Vec<IpNetwork>,
    /// What clients may send, and how slowly (`limits:`).
    pub limits: ClientLimits,
    /// Scheduled tunnel closes (`chaos.close_tunnels`).
    pub chaos: Option<ChaosCloseTunnels>,
    /// Session ticket key files shared with the fleet (`tls::tickets`); empty: the node's
    /// own key. A reload reads them again.
    pub tls_ticket_keys: Vec<std::path::PathBuf>,
}

/// Client-facing limits (`limits:` in the node file); fixed for the process's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// The whole request head, from the accept (first request) or its first byte.
    pub request_head_timeout: std::time::Duration,
    /// Between the end of a response and the next request's first byte.
    pub keepalive_timeout: std::time::Duration,
    /// How long one write to a client may wait for the client to read (none of it taken:
    /// the connection closes).
    pub send_timeout: std::time::Duration,
    /// From the accept to the end of the TLS handshake, on TLS listeners.
    pub tls_handshake_timeout: std::time::Duration,
    /// The time a request body may keep the edge waiting for its bytes, in all, before
    /// `request_body_min_rate` extends it (over it: 408).
    pub request_body_timeout: std::time::Duration,
    /// Each this many bytes of request body received earn one more second (0: none).
    pub request_body_min_rate: u32,
    /// The largest request body, in bytes (over it: 413); 0: no limit.
    pub max_request_body: u64,
    /// Request line plus header fields, in bytes (over it: 431).
    pub max_request_head: usize,
    /// Header field lines (over it: 431).
    pub max_headers: usize,
    /// The request target, in bytes (over it: 414).
    pub max_uri: usize,
    /// Client connections open at once; `None`: what the descriptor limit leaves after
    /// `fd_reserve`, halved (each proxied connection may need one towards an origin).
    pub max_connections: Option<usize>,
    /// Client connections open at once from one address (IPv4-mapped IPv6 counts as IPv4).
    pub max_connections_per_client: usize,
    /// Descriptors kept free of client connections and their origin connections.
    pub fd_reserve: usize,
}

/// Where this node's misses go, and whom it trusts as an edge (SPEC §5).
#[derive(Debug, Clone)]
pub struct TierSettings {
    /// The `shields:` entries as written (`host:port`; names are resolved again).
    pub entries: Vec<String>,
    /// Every shield address, in configuration order (a name's addresses sorted).
    pub shields: Vec<ShieldAddress>,
    pub hosts_file: Option<std::path::PathBuf>,
    pub shield_all: bool,
    pub shield_probe: HealthProbe,
    pub trusted_edges: Vec<IpNetwork>,
    pub resolve_interval: Duration,
    /// TLS towards the shields (`None`: plain HTTP).
    pub shield_tls: Option<Arc<ShieldTls>>,
}

/// How an edge speaks TLS to its shields: certificates verified (against `ca`, else the
/// system roots) for `server_name`, else for the host of each shield's entry.
#[derive(Debug)]
pub struct ShieldTls {
    pub server_name: Option<String>,
    pub ca: Option<OriginCa>,
}

/// One shield: the `shields:` entry it came from and one address it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldAddress {
    pub entry: String,
    pub address: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    /// What routes' `listeners:` call it (optional; unnamed listeners take unscoped routes).
    pub name: Option<String>,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The first is the default for clients without SNI or with a name none covers.
    pub certificates: Vec<CertificateFiles>,
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Off,
    File(std::path::PathBuf),
}

/// Which HTTP methods a route accepts, as a bit set (no allocation when matching).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSet(pub u16);

impl MethodSet {
    pub const ANY: MethodSet = MethodSet(u16::MAX);
    const NAMES: [&'static str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    ];

    /// The bit of a method name, or `None` for a method Portico does not know.
    pub fn bit(method: &str) -> Option<u16> {
        Self::NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(method))
            .map(|index| 1 << index)
    }

    pub fn contains(self, method: &str) -> bool {
        self == Self::ANY || Self::bit(method).is_some_and(|bit| self.0 & bit != 0)
    }
}

/// A domain a route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// `www.example.com` (stored lower-case).
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`.
    Wildcard(String),
}

/// A path pattern: `/exact` or `/prefix/*` (stored without the `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSet {
    pub http: bool,
    pub https: bool,
}

/// Timeouts towards an origin (Pingora's peer options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginTimeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Connect and TLS handshake together.
    pub tls_handshake: Duration,
    /// Between two reads of the response body.
    pub read: Duration,
    /// Between two writes of the request.
    pub write: Duration,
    /// From the request sent (its body included) to the response head.
    pub first_byte: Duration,
    /// From the request sent to the response's last byte.
    pub total: Duration,
}

impl Default for OriginTimeouts {
    fn default() -> OriginTimeouts {
        super::timeouts::DEFAULT_ORIGIN_TIMEOUTS
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelLimits {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// After one side closes (half-close), how long the other may still send.
    pub linger: Duration,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub domains: Vec<DomainPattern>,
    pub patterns: Vec<PathPattern>,
    /// The listener names this route serves on; empty: every listener. Part of the cache
    /// key (through the route), so one node can serve different sites on different ports.
    pub listeners: Vec<String>,
    pub methods: MethodSet,
    pub protocols: ProtocolSet,
    pub origin_group: usize,
    /// Prefix put in front of the forwarded path (`/v2` turns `/a` into `/v2/a`).
    pub origin_path: Option<String>,
    pub forwarding_protocol: ForwardingProtocol,
    pub https_redirect: bool,
    pub cache: RouteCache,
    pub websocket: bool,
    pub on_cached_upgrade: OnCachedUpgrade,
    pub tunnel: TunnelLimits,
    pub rule_sets: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct RouteCache {
    pub enabled: bool,
    pub query_string: QueryStringMode,
    pub behavior: CacheBehavior,
    pub duration: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
}

/// How the query string takes part in the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryStringMode {
    Ignore,
    UseAll,
    /// Only these parameters (names kept sorted for a stable key).
    Include(Vec<String>),
    /// Every parameter but these.
    Exclude(Vec<String>),
}

#[derive(Debug)]
pub struct RuleSet {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
    pub stop_evaluating: bool,
}

#[derive(Debug)]
pub struct Condition {
    pub variable: MatchVariable,
    /// Header name (lower-case) or query parameter name.
    pub selector: Option<String>,
    pub operator: Operator,
    /// Lower-cased unless `case_sensitive`.
    pub values: Vec<String>,
    /// Compiled when `operator` is `regex`.
    pub regexes: Vec<Regex>,
    /// Parsed when `operator` is `ip_match`.
    pub networks: Vec<IpNetwork>,
    pub negate: bool,
    pub case_sensitive: bool,
}

/// An address block (`10.0.0.0/8`, `::1/128`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    pub addr: std::net::IpAddr,
    pub prefix_len: u8,
}

impl IpNetwork {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug)]
pub enum Action {
    RouteOverride {
        caching: Option<bool>,
        origin_group: Option<usize>,
    },
    CacheExpiration {
        behavior: CacheBehavior,
        duration: Option<Duration>,
    },
    CacheKeyQueryString(QueryStringMode),
    ModifyRequestHeader(HeaderEdit),
    ModifyResponseHeader(HeaderEdit),
    UrlRewrite {
        source_pattern: String,
        destination: String,
        preserve_unmatched_path: bool,
    },
    UrlRedirect(Redirect),
}

#[derive(Debug, Clone)]
pub struct HeaderEdit {
    pub action: HeaderAction,
    pub name: HeaderName,
    pub value: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub status: u16,
    pub protocol: RedirectProtocol,
    pub host: Option<String>,
    pub path: Option<String>,
    /// Replacement query string, without the `?`; `None` keeps the request's.
    pub query: Option<String>,
}

#[derive(Debug)]
pub struct OriginGroup {
    pub name: String,
    pub origins: Vec<Origin>,
    pub health_probe: Option<HealthProbe>,
    pub max_retries: usize,
    /// CA certificates for TLS to this group's origins (`None`: the system roots).
    pub ca: Option<OriginCa>,
    /// The group's own, or the node's defaults.
    pub timeouts: OriginTimeouts,
    pub when_all_unhealthy: WhenAllUnhealthy,
}

/// A group's `ca_file`, read and checked once, at load (not again for each probe or peer).
#[derive(Debug)]
pub struct OriginCa {
    pub path: std::path::PathBuf,
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

#[derive(Debug, Clone)]
pub struct Origin {
    pub name: String,
    pub address: SocketAddr,
    /// The `host:port` `address` was resolved from, when it was a name (resolved again
    /// every `resolve_interval`: `crate::lifecycle::resolve`).
    pub resolved_from: Option<String>,
    pub host_header: String,
    /// `host_header` as the `Host` value sent to the origin, made once per configuration.
    pub host_value: http::HeaderValue,
    pub priority: u32,
    pub weight: u32,
    pub enabled: bool,
    /// Where TLS to this origin goes: `address`'s host on `https_port`.
    pub https_address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthProbe {
    pub protocol: ProbeProtocol,
    pub method: http::Method,
    pub path: String,
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Inclusive status ranges.
    pub expect_status: Vec<(u16, u16)>,
    /// Probe over TLS (on `Origin::https_address`, certificate verified).
    pub use_tls: bool,
}
