//! An emulation as configuration text: the node file and one rules file, exactly what
//! `--config-out` writes and what the edge then loads through the normal validating build.

use std::fmt::Write;

use super::{Emulation, OriginUrl, Probe, Profile};

/// The two files of an emulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `conf/portico.yaml`.
    pub node: String,
    /// `rules/emulate.yaml`.
    pub rules: String,
}

/// A YAML scalar for any text: a JSON string is a YAML double-quoted scalar.
fn q(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

pub fn render(emulation: &Emulation, origin: &OriginUrl) -> Rendered {
    Rendered {
        node: node(emulation, origin),
        rules: rules(emulation, origin),
    }
}

fn node(e: &Emulation, origin: &OriginUrl) -> String {
    let profile = e.profile.name();
    let mut out = format!(
        "# Written by `portico emulate --profile {profile}` in front of {}.\n# `portico run -c <this file>` runs the same edge; edit it to grow from here.\n",
        origin.text
    );
    let _ = write!(
        out,
        "name: portico-emulate\nlisteners:\n  - address: {}\nadmin:\n  address: {}\n",
        q(&e.listen.to_string()),
        q(&e.admin.to_string()),
    );
    if let Some(token_file) = &e.admin_token_file {
        let _ = writeln!(
            out,
            "  token_file: {}",
            q(&token_file.display().to_string())
        );
    }
    let _ = writeln!(
        out,
        "access_log: {}",
        q(e.access_log.as_deref().unwrap_or("stdout"))
    );
    let _ = write!(
        out,
        "defaults:\n  # Front Door's failure: an upgrade on a caching route is sent on as a plain GET.\n  on_cached_upgrade: reproduce\n  tunnel_idle_timeout: {}\n  tunnel_max_lifetime: {}\n",
        q(&e.idle_timeout),
        q(&e.max_lifetime),
    );
    if let Some(every) = &e.drop_every {
        let _ = write!(
            out,
            "chaos:\n  close_tunnels:\n    every: {}\n    fraction: {}\n    how: {}\n",
            q(every),
            e.drop_fraction,
            q(&e.drop_how),
        );
    }
    out
}

fn rules(e: &Emulation, origin: &OriginUrl) -> String {
    let mut out = String::from("routes:\n");
    let mut names = Vec::new();
    let caching = e.profile == Profile::FrontDoor;
    let mut route = |out: &mut String, kind: &str, pattern: &str| {
        let kind = if kind == "cached" && !caching {
            "plain"
        } else {
            kind
        };
        let name = route_name(kind, pattern, &mut names);
        let _ = write!(
            out,
            "  - name: {}\n    patterns: [{}]\n    origin_group: app\n",
            q(&name),
            q(pattern)
        );
        if let Some(path) = &origin.path {
            let _ = writeln!(out, "    origin_path: {}", q(path));
        }
        if origin.tls {
            out.push_str("    forwarding_protocol: https_only\n");
        }
        match kind {
            "ws" => out.push_str("    websocket: true\n"),
            "cached" if caching => out.push_str("    cache:\n      enabled: true\n"),
            _ => {}
        }
    };
    for pattern in &e.websocket {
        route(&mut out, "ws", pattern);
    }
    for pattern in &e.cached {
        route(&mut out, "cached", pattern);
    }
    if !e.cached.iter().chain(&e.websocket).any(|p| p == "/*") {
        // Everything else reaches the app too, uncached (upgrades pass).
        route(&mut out, "pass", "/*");
    }
    let _ = write!(
        out,
        "origin_groups:\n  - name: app\n    origins:\n      - address: {}\n        host_header: {}\n",
        q(&origin.address),
        q(&origin.host)
    );
    if origin.tls {
        let _ = writeln!(out, "        https_port: {}", origin.port);
    }
    out.push_str(&probe(e, origin));
    out
}

fn probe(e: &Emulation, origin: &OriginUrl) -> String {
    let tls = if origin.tls {
        "      use_tls: true\n"
    } else {
        ""
    };
    let chosen = match (&e.probe, e.profile) {
        (Some(Probe::Tcp), _) => "      protocol: tcp\n".to_owned(),
        (Some(Probe::Http(path)), _) => {
            format!("      protocol: http\n      method: GET\n      path: {}\n", q(path))
        }
        // Front Door's probe: HEAD / (only a 200 counts); every origin unhealthy means
        // traffic goes to all of them.
        (None, Profile::FrontDoor) => {
            "      protocol: http\n      method: HEAD\n      path: \"/\"\n      expect_status: [\"200\"]\n".to_owned()
        }
        // AGC's default probe without a HealthCheckPolicy: GET / on the backend's port,
        // 200-399, three failures to go unhealthy.
        (None, Profile::Agc) => {
            "      protocol: http\n      method: GET\n      path: \"/\"\n      expect_status: [\"200-399\"]\n      unhealthy_threshold: 3\n".to_owned()
        }
    };
    let mut out = format!("    health_probe:\n{chosen}      interval: 5s\n{tls}");
    if e.profile == Profile::Agc {
        out.push_str("    # As AGC: no healthy backend is a 503, not traffic to every backend.\n    when_all_unhealthy: refuse\n");
    }
    out
}

/// `ws-chat` for `/chat`, `cached-legacy` for `/legacy/*`, `pass-root` for `/*`: unique.
fn route_name(kind: &str, pattern: &str, taken: &mut Vec<String>) -> String {
    let mut slug = String::new();
    for c in pattern.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let base = format!("{kind}-{}", if slug.is_empty() { "root" } else { slug });
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.push(name.clone());
    name
}
