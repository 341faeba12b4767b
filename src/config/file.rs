//! Stage 1: the YAML files exactly as written, with serde's strictness (`deny_unknown_fields`).
//!
//! Nothing here is interpreted: durations stay strings and names stay names. `build` turns
//! these into the validated model and reports every problem with its position.

use serde::Deserialize;

/// `conf/portico.yaml`: the node's own settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNode {
    pub name: String,
    #[serde(default)]
    pub tier: Option<Tier>,
    pub listeners: Vec<FileListener>,
    #[serde(default)]
    pub admin: Option<FileAdmin>,
    #[serde(default)]
    pub server: Option<FileServer>,
    /// Folder of rule files, relative to this file.
    #[serde(default)]
    pub rules_dir: Option<String>,
    /// `stdout`, `off`, or a file path (relative to this file).
    #[serde(default)]
    pub access_log: Option<String>,
    /// Proxies in front of this node (load balancers) whose `X-Forwarded-For`, `Forwarded`
    /// and `X-Real-IP` are believed; from anyone else those headers are replaced.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub defaults: Option<FileDefaults>,
    #[serde(default)]
    pub cache: Option<FileCacheStore>,
    /// What a client may send and how long it may take (`limits:`).
    #[serde(default)]
    pub limits: Option<FileLimits>,
    /// Parent tier: `host:port` entries; a name may resolve to several shields.
    #[serde(default)]
    pub shields: Vec<String>,
    /// Send what cannot be cached through the shields too (origin shielding).
    #[serde(default)]
    pub shield_all: bool,
    /// How the shields are probed (default: TCP connect every 5 s).
    #[serde(default)]
    pub shield_probe: Option<FileHealthProbe>,
    /// On a shield: addresses or CIDR blocks of the edges whose hop headers it trusts.
    #[serde(default)]
    pub trusted_edges: Vec<String>,
    /// Session ticket key files the TLS listeners share with every node given the same
    /// files (48 or 80 random bytes each; the first seals, all open), relative to this
    /// file. Default: a key of the node's own.
    #[serde(default)]
    pub tls_ticket_keys: Vec<String>,
    /// TLS towards the shields (edges only; default: plain HTTP).
    #[serde(default)]
    pub shield_tls: Option<FileShieldTls>,
    /// How often shield and origin names are resolved again (default 30s).
    #[serde(default)]
    pub resolve_interval: Option<String>,
    /// A hosts(5) file read before the system resolver for shield and origin names.
    #[serde(default)]
    pub hosts_file: Option<String>,
    /// Scheduled maintenance closes, for soak tests of clients' reconnect logic.
    #[serde(default)]
    pub chaos: Option<FileChaos>,
}

/// `shield_tls:` in the node file: how an edge speaks TLS to its shields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileShieldTls {
    /// The name the shields' certificates must carry, sent as SNI (default: the host of
    /// each `shields:` entry).
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM certificates the shields' certificates must chain to (default: system roots).
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// `chaos:` in the node file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChaos {
    #[serde(default)]
    pub close_tunnels: Option<FileChaosCloseTunnels>,
}

/// `chaos.close_tunnels`: every `every`, close about `fraction` of the open tunnels.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChaosCloseTunnels {
    pub every: String,
    /// Default 1 (every open tunnel).
    #[serde(default)]
    pub fraction: Option<f64>,
    /// `fin` (default), `rst`, `close` or `close_<code>`.
    #[serde(default)]
    pub how: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Edge,
    Shield,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub address: String,
    /// Routes may be scoped to listeners by this name (`routes[].listeners`).
    #[serde(default)]
    pub name: Option<String>,
    /// Present on `https://` / `wss://` listeners.
    #[serde(default)]
    pub tls: Option<FileListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListenerTls {
    /// Chosen by SNI among the names each certificate covers; the first is the default.
    pub certificates: Vec<FileCertificate>,
    /// Offer HTTP/2 by ALPN (WebSocket upgrades then need HTTP/1.1 clients).
    #[serde(default)]
    pub http2: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCertificate {
    /// PEM chain, leaf first; relative to the node file.
    pub cert_file: String,
    /// PEM private key; relative to the node file.
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub address: String,
    /// A file holding the bearer token the admin endpoints require; relative to the node file.
    #[serde(default)]
    pub token_file: Option<String>,
}

/// Client-facing limits: deadlines for request heads and idle keep-alive connections,
/// and the size of what a request head may hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// The whole request head must arrive within this (from the accept for a connection's
    /// first request, from the first byte for the next ones).
    #[serde(default)]
    pub request_head_timeout: Option<String>,
    /// How long a connection may wait for its next request.
    #[serde(default)]
    pub keepalive_timeout: Option<String>,
    /// How long a write to a client may wait for it to read.
    #[serde(default)]
    pub send_timeout: Option<String>,
    /// How long a client on a TLS listener has to finish its handshake, from the accept.
    #[serde(default)]
    pub tls_handshake_timeout: Option<String>,
    /// How long, in all, the edge waits for a request body's bytes (plus a second per
    /// `request_body_min_rate` bytes received).
    #[serde(default)]
    pub request_body_timeout: Option<String>,
    /// Bytes of request body that earn one more second of `request_body_timeout` (a size,
    /// e.g. `500` or `1KiB`; `0`: none, the body's waits get `request_body_timeout` alone).
    #[serde(default)]
    pub request_body_min_rate: Option<String>,
    /// The largest request body the edge takes (a size; `0`: any).
    #[serde(default)]
    pub max_request_body: Option<String>,
    /// Request line and header fields together (bytes, e.g. `64KiB`).
    #[serde(default)]
    pub max_request_head: Option<String>,
    /// Header field lines.
    #[serde(default)]
    pub max_headers: Option<usize>,
    /// The request target (bytes).
    #[serde(default)]
    pub max_uri: Option<String>,
    /// Client connections open at once (default: what the descriptor limit allows).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Client connections open at once from one address.
    #[serde(default)]
    pub max_connections_per_client: Option<usize>,
    /// Descriptors kept free of client connections, for origins, probes and the admin API.
    #[serde(default)]
    pub fd_reserve: Option<usize>,
}

/// The Pingora server settings Portico exposes; `ServerConf` is built from these.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    #[serde(default)]
    pub threads: Option<usize>,
    /// Whether the worker threads take each other's tasks (see `NodeSettings`).
    #[serde(default)]
    pub work_stealing: Option<bool>,
    #[serde(default)]
    pub grace_period: Option<String>,
    #[serde(default)]
    pub graceful_shutdown_timeout: Option<String>,
    #[serde(default)]
    pub upstream_keepalive_pool_size: Option<usize>,
    /// SIGTERM: how long `/healthz` says `503 draining` before the listeners close.
    #[serde(default)]
    pub drain_delay: Option<String>,
    /// SIGTERM or an upgrade: how long open tunnels may run on before they are closed.
    #[serde(default)]
    pub tunnel_drain_timeout: Option<String>,
    /// A binary upgrade: how long the old process keeps accepting beside the new one.
    #[serde(default)]
    pub upgrade_close_timeout: Option<String>,
    /// The Unix socket a graceful binary upgrade hands the listening sockets over.
    #[serde(default)]
    pub upgrade_sock: Option<String>,
    /// A graceful binary upgrade hands open plain-TCP tunnels to the new process.
    #[serde(default)]
    pub tunnel_handover: Option<bool>,
    /// Plain-TCP tunnels move large WebSocket payloads with splice(2).
    #[serde(default)]
    pub tunnel_splice: Option<bool>,
    /// A message's head waits for the thread's ready tasks, so writes leave in bursts.
    #[serde(default)]
    pub batch_sends: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDefaults {
    #[serde(default)]
    pub on_cached_upgrade: Option<OnCachedUpgrade>,
    #[serde(default)]
    pub tunnel_idle_timeout: Option<String>,
    #[serde(default)]
    pub tunnel_max_lifetime: Option<String>,
    /// After one side of a tunnel closes, how long the other may go on alone.
    #[serde(default)]
    pub tunnel_linger: Option<String>,
    /// TTL for cacheable responses whose origin gives no freshness information.
    #[serde(default)]
    pub cache_default_ttl: Option<String>,
    /// The longest lifetime the `Last-Modified` heuristic gives (`0s`: no heuristic).
    #[serde(default)]
    pub cache_heuristic_max: Option<String>,
    /// Timeouts towards origins, for groups that do not set their own.
    #[serde(default)]
    pub origin_timeouts: Option<FileOriginTimeouts>,
}

/// Timeouts towards an origin; each one given replaces the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOriginTimeouts {
    /// TCP connect.
    #[serde(default)]
    pub connect: Option<String>,
    /// Connect and TLS handshake together.
    #[serde(default)]
    pub tls_handshake: Option<String>,
    /// Between two reads of the response body.
    #[serde(default)]
    pub read: Option<String>,
    /// Between two writes of the request.
    #[serde(default)]
    pub write: Option<String>,
    /// From the request sent to the response head.
    #[serde(default)]
    pub first_byte: Option<String>,
    /// From the request sent to the end of the response.
    #[serde(default)]
    pub total: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCacheStore {
    #[serde(default)]
    pub memory_bytes: Option<String>,
    #[serde(default)]
    pub max_object_bytes: Option<String>,
    #[serde(default)]
    pub lock_timeout: Option<String>,
    /// Response headers whose values tag a stored object for `POST /purge {"tags": [..]}`
    /// (default `[Cache-Tag, Surrogate-Key]`; `[]` turns tags off).
    #[serde(default)]
    pub tag_headers: Option<Vec<String>>,
    /// Remove the tag headers from responses to clients (default true; a shield keeps them
    /// for its edges).
    #[serde(default)]
    pub strip_tag_headers: Option<bool>,
}

/// One file under `rules/`. Every section is optional; files are merged in name order.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRules {
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    #[serde(default)]
    pub rule_sets: Vec<FileRuleSet>,
    #[serde(default)]
    pub origin_groups: Vec<FileOriginGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
    pub patterns: Vec<String>,
    /// Listener names this route serves on (default: every listener).
    #[serde(default)]
    pub listeners: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub protocols: Vec<Protocol>,
    pub origin_group: String,
    #[serde(default)]
    pub origin_path: Option<String>,
    #[serde(default)]
    pub forwarding_protocol: Option<ForwardingProtocol>,
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub cache: Option<FileRouteCache>,
    #[serde(default)]
    pub websocket: bool,
    #[serde(default)]
    pub on_cached_upgrade: Option<OnCachedUpgrade>,
    #[serde(default)]
    pub tunnel_idle_timeout: Option<String>,
    #[serde(default)]
    pub tunnel_max_lifetime: Option<String>,
    /// After one side of a tunnel closes, how long the other may go on alone.
    #[serde(default)]
    pub tunnel_linger: Option<String>,
    #[serde(default)]
    pub rule_sets: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http,
    Https,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ForwardingProtocol {
    HttpOnly,
    HttpsOnly,
    MatchRequest,
}

/// What a cache-enabled route does with a WebSocket upgrade (SPEC §3.3).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnCachedUpgrade {
    /// Front Door's behaviour: strip `Upgrade`, send a plain GET, never cache it.
    Reproduce,
    /// Tunnel as a WebSocket route would.
    Bypass,
    /// Answer 426 at once, naming the route.
    Reject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouteCache {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub query_string: Option<QueryStringBehavior>,
    #[serde(default)]
    pub query_params: Vec<String>,
    #[serde(default)]
    pub behavior: Option<CacheBehavior>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub stale_while_revalidate: Option<String>,
    #[serde(default)]
    pub stale_if_error: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QueryStringBehavior {
    Ignore,
    UseAll,
    Include,
    Exclude,
}

/// Front Door's cache behaviours.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CacheBehavior {
    HonorOrigin,
    OverrideAlways,
    OverrideIfOriginMissing,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuleSet {
    pub name: String,
    pub rules: Vec<FileRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    pub name: String,
    #[serde(default)]
    pub conditions: Vec<FileCondition>,
    pub actions: Vec<FileAction>,
    #[serde(default)]
    pub stop_evaluating: bool,
}

/// A rule condition, shaped like Front Door's: what to look at, how to compare, which values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCondition {
    #[serde(rename = "match")]
    pub variable: MatchVariable,
    /// Header name for `request_header`, parameter name for `query_param`.
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub operator: Option<Operator>,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub negate: bool,
    #[serde(default)]
    pub case_sensitive: bool,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MatchVariable {
    RequestMethod,
    RequestPath,
    QueryString,
    QueryParam,
    RequestHeader,
    Host,
    ClientAddress,
    FileExtension,
    RequestProtocol,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Any,
    Equals,
    Contains,
    BeginsWith,
    EndsWith,
    Regex,
    IpMatch,
}

/// A rule action. `type` picks the action; `build` checks that exactly its fields are set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAction {
    #[serde(rename = "type")]
    pub kind: String,
    // route_override
    #[serde(default)]
    pub caching: Option<bool>,
    #[serde(default)]
    pub origin_group: Option<String>,
    // cache_expiration
    #[serde(default)]
    pub behavior: Option<CacheBehavior>,
    #[serde(default)]
    pub duration: Option<String>,
    // cache_key_query_string
    #[serde(default)]
    pub query_string: Option<QueryStringBehavior>,
    #[serde(default)]
    pub query_params: Option<Vec<String>>,
    // modify_request_header / modify_response_header
    #[serde(default)]
    pub header_action: Option<HeaderAction>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    // url_rewrite
    #[serde(default)]
    pub source_pattern: Option<String>,
    #[serde(default)]
    pub destination: Option<String>,
    #[serde(default)]
    pub preserve_unmatched_path: Option<bool>,
    // url_redirect
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub protocol: Option<RedirectProtocol>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeaderAction {
    Append,
    Overwrite,
    Delete,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RedirectProtocol {
    MatchRequest,
    Http,
    Https,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOriginGroup {
    pub name: String,
    pub origins: Vec<FileOrigin>,
    #[serde(default)]
    pub health_probe: Option<FileHealthProbe>,
    /// Extra attempts on another origin after a connect failure (idempotent requests only).
    #[serde(default)]
    pub max_retries: Option<usize>,
    /// PEM CA certificates that origins' TLS certificates must chain to, instead of the
    /// system roots; relative to the rules file.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Overrides `defaults.origin_timeouts` of the node.
    #[serde(default)]
    pub timeouts: Option<FileOriginTimeouts>,
    /// When every origin fails its probes: `send_to_all` (Front Door, the default) or
    /// `refuse` (a 503 that says why, as Application Gateway for Containers does).
    #[serde(default)]
    pub when_all_unhealthy: Option<WhenAllUnhealthy>,
}

/// What a group does when none of its origins passes its probes.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenAllUnhealthy {
    /// Traffic goes to every enabled origin (Azure Front Door).
    #[default]
    SendToAll,
    /// Requests get a 503 naming the probe's failure (Application Gateway for Containers).
    Refuse,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOrigin {
    #[serde(default)]
    pub name: Option<String>,
    pub address: String,
    #[serde(default)]
    pub host_header: Option<String>,
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The port for TLS to this origin (`forwarding_protocol` https); default 443.
    #[serde(default)]
    pub https_port: Option<u16>,
}

fn enabled_by_default() -> bool {
    true
}

/// Field names of an Application Gateway for Containers HealthCheckPolicy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthProbe {
    #[serde(default)]
    pub protocol: Option<ProbeProtocol>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default)]
    pub expect_status: Vec<String>,
    /// Probe over TLS, on the origin's `https_port`, verifying its certificate.
    #[serde(default)]
    pub use_tls: bool,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProbeProtocol {
    Http,
    Tcp,
    Websocket,
}
