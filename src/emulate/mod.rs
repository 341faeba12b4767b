//! `portico emulate`: an edge with a product's documented behaviour in front of an app,
//! with no YAML to write.
//!
//! The flags become configuration text ([`render`]): a node file and one rules file. They
//! go through the same validating build as any configuration ([`crate::config::build`]),
//! are written to a folder (`--config-out DIR`, or a temporary one), and the node is loaded
//! from there and run exactly as `portico run` runs it. So an emulation cannot behave
//! otherwise than the files it writes.
//!
//! Profiles:
//! - `front-door` (default): routes given with `--cached` cache, so a WebSocket upgrade on
//!   them fails as on Azure Front Door (`on_cached_upgrade: reproduce`); tunnels close after
//!   the idle timeout (5 min) and the lifetime (4 h); Front Door's HTTP probe (`HEAD /`).
//! - `agc` (Application Gateway for Containers): nothing caches; unless `--probe` says
//!   otherwise the app is probed as AGC does without a HealthCheckPolicy (`GET /`,
//!   200-399), so a WebSocket-only backend is unhealthy, and then requests get a 503 that
//!   says so (`when_all_unhealthy: refuse`).

pub mod render;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{self, Loaded, Source};

pub use render::Rendered;

/// Which product's behaviour the edge reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Profile {
    /// Azure Front Door.
    #[default]
    FrontDoor,
    /// Azure Application Gateway for Containers.
    Agc,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::FrontDoor => "front-door",
            Profile::Agc => "agc",
        }
    }
}

/// The health probe asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp,
    /// `GET <path>`, expecting 200-399.
    Http(String),
}

impl std::str::FromStr for Probe {
    type Err = String;

    /// `tcp` or `http:/path`.
    fn from_str(text: &str) -> Result<Probe, String> {
        match text {
            "tcp" => Ok(Probe::Tcp),
            _ => match text.strip_prefix("http:") {
                Some(path) if path.starts_with('/') => Ok(Probe::Http(path.to_owned())),
                _ => Err(format!(
                    "\"{text}\": write tcp or http:/path (e.g. http:/health)"
                )),
            },
        }
    }
}

/// Everything an emulation is made of (the command line's flags).
#[derive(Debug, Clone)]
pub struct Emulation {
    /// `http://host:port[/base]` or `https://...`.
    pub origin: String,
    pub cached: Vec<String>,
    pub websocket: Vec<String>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// The admin endpoints' bearer token file (absolute), when they listen beyond loopback.
    pub admin_token_file: Option<std::path::PathBuf>,
    pub idle_timeout: String,
    pub max_lifetime: String,
    pub profile: Profile,
    pub probe: Option<Probe>,
    /// `chaos.close_tunnels.every`, when tunnels are to be dropped on a schedule.
    pub drop_every: Option<String>,
    pub drop_fraction: f64,
    pub drop_how: String,
    /// `stdout` (default), `off`, or a file (relative to the node file).
    pub access_log: Option<String>,
}

impl Emulation {
    /// An emulation of `profile` in front of `origin`, with the products' defaults.
    pub fn new(origin: &str, profile: Profile) -> Emulation {
        Emulation {
            origin: origin.to_owned(),
            cached: Vec::new(),
            websocket: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            admin_token_file: None,
            idle_timeout: "5m".into(),
            max_lifetime: "4h".into(),
            profile,
            probe: None,
            drop_every: None,
            drop_fraction: 0.1,
            drop_how: "close_1001".into(),
            access_log: None,
        }
    }

    /// The configuration text, or why the flags cannot make one.
    pub fn render(&self) -> Result<Rendered, String> {
        let origin = OriginUrl::parse(&self.origin)?;
        Ok(render::render(self, &origin))
    }

    /// Renders, validates (as `portico check` would) and writes `conf/portico.yaml` and
    /// `rules/emulate.yaml` under `dir`; returns the node file's path and what loaded.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, Loaded), String> {
        let rendered = self.render()?;
        let conf_dir = dir.join("conf");
        let node = Source {
            path: conf_dir.join("portico.yaml"),
            text: rendered.node,
        };
        let rules = Source {
            path: dir.join("rules").join("emulate.yaml"),
            text: rendered.rules,
        };
        let loaded = config::build(&node, &conf_dir, std::slice::from_ref(&rules))
            .map_err(|e| format!("the emulated configuration is refused:\n{e}"))?;
        for source in [&node, &rules] {
            let parent = source.path.parent().unwrap_or(dir);
            std::fs::create_dir_all(parent)
                .and_then(|()| std::fs::write(&source.path, &source.text))
                .map_err(|e| format!("cannot write {}: {e}", source.path.display()))?;
        }
        Ok((node.path, loaded))
    }
}

/// The app's URL, taken apart.
#[derive(Debug, Clone)]
pub struct OriginUrl {
    pub text: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host:port`, as an origin's `address`.
    pub address: String,
    /// A base path (`origin_path`), when the URL has one.
    pub path: Option<String>,
}

impl OriginUrl {
    pub fn parse(text: &str) -> Result<OriginUrl, String> {
        let bad = |why: &str| format!("--origin {text}: {why}; write e.g. http://127.0.0.1:3000");
        let uri: http::Uri = text.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let address = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{host}:{port}"),
        };
        let path = Some(uri.path().trim_end_matches('/'))
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        if uri.query().is_some() {
            return Err(bad("a query string has no meaning here"));
        }
        Ok(OriginUrl {
            text: text.to_owned(),
            tls,
            host,
            port,
            address,
            path,
        })
    }
}

/// What `portico emulate` prints before it runs: where to connect, and each route.
pub fn describe(emulation: &Emulation, loaded: &Loaded, conf: &Path) -> String {
    use std::fmt::Write;
    let config = &loaded.config;
    let mut out = format!(
        "portico emulate --profile {} in front of {}\n  edge:   http://{}\n  admin:  http://{}  (/status, /metrics, POST /tunnels/close)\n  config: {}\n\n",
        emulation.profile.name(),
        emulation.origin,
        emulation.listen,
        emulation.admin,
        conf.display()
    );
    let _ = writeln!(
        out,
        "  {:<22} {:<18} {:<9} {:<6} upgrade",
        "route", "patterns", "websocket", "cache"
    );
    for route in &config.routes {
        let patterns: Vec<String> = route
            .patterns
            .iter()
            .map(|p| match p {
                crate::config::model::PathPattern::Exact(path) => path.clone(),
                crate::config::model::PathPattern::Prefix(prefix) => format!("{prefix}*"),
            })
            .collect();
        let upgrade = if route.websocket || !route.cache.enabled {
            "tunnels"
        } else {
            "fails: Upgrade not forwarded (Front Door's cached-route failure)"
        };
        let _ = writeln!(
            out,
            "  {:<22} {:<18} {:<9} {:<6} {upgrade}",
            route.name,
            patterns.join(","),
            if route.websocket { "yes" } else { "no" },
            if route.cache.enabled { "on" } else { "off" },
        );
    }
    let tunnel = config.routes.first().map(|r| r.tunnel);
    if let Some(tunnel) = tunnel {
        let _ = writeln!(
            out,
            "\n  tunnels close after {:?} idle or {:?} open",
            tunnel.idle_timeout, tunnel.max_lifetime
        );
    }
    if let Some(chaos) = config.node.chaos {
        let _ = writeln!(
            out,
            "  every {:?}, about {} of the open tunnels are closed ({})",
            chaos.every,
            chaos.fraction,
            chaos.how.name()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_urls_come_apart() {
        let plain = OriginUrl::parse("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            (plain.address.as_str(), plain.tls, plain.path),
            ("127.0.0.1:3000", false, None)
        );
        let tls = OriginUrl::parse("https://app.internal/base/").unwrap();
        assert_eq!(
            (tls.address.as_str(), tls.port, tls.path.as_deref()),
            ("app.internal:443", 443, Some("/base"))
        );
        assert!(OriginUrl::parse("ftp://x").is_err());
        assert!(OriginUrl::parse("127.0.0.1:3000").is_err());
    }

    #[test]
    fn probes_parse() {
        assert_eq!("tcp".parse::<Probe>(), Ok(Probe::Tcp));
        assert_eq!(
            "http:/health".parse::<Probe>(),
            Ok(Probe::Http("/health".into()))
        );
        assert!("http:health".parse::<Probe>().is_err());
    }

    #[test]
    fn both_profiles_pass_the_validating_build() {
        for profile in [Profile::FrontDoor, Profile::Agc] {
            let mut emulation = Emulation::new("http://127.0.0.1:3000", profile);
            emulation.cached.push("/legacy/*".into());
            emulation.websocket.push("/chat".into());
            emulation.drop_every = Some("30s".into());
            let dir = std::env::temp_dir().join(format!(
                "portico-emulate-test-{}-{}",
                std::process::id(),
                profile.name()
            ));
            let (_, loaded) = emulation.write(&dir).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            let routes = &loaded.config.routes;
            assert_eq!(routes.len(), 3);
            let cached = routes.iter().any(|r| r.cache.enabled);
            assert_eq!(cached, profile == Profile::FrontDoor);
            assert!(loaded.config.node.chaos.is_some());
        }
    }

    #[test]
    fn a_bad_flag_is_refused_with_the_reason() {
        let mut emulation = Emulation::new("http://127.0.0.1:3000", Profile::FrontDoor);
        emulation.idle_timeout = "soon".into();
        let dir = std::env::temp_dir().join(format!("portico-emulate-bad-{}", std::process::id()));
        let error = emulation.write(&dir).unwrap_err();
        assert!(error.contains("tunnel_idle_timeout"), "{error}");
        assert!(!dir.join("conf/portico.yaml").exists());
    }
}
