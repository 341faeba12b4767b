//! The `portico` command line: `run`, `check`, `explain`, `demo`, `emulate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError, Severity};
use crate::rules::Engine;
use crate::server::{Node, RunOptions};

#[derive(Debug, Parser)]
#[command(
    name = "portico",
    version,
    about = "A Front-Door-style CDN edge node on Pingora"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge node. SIGHUP reloads the configuration, SIGTERM drains and stops,
    /// SIGQUIT hands the listeners to a `portico run --upgrade` started beside it.
    Run {
        #[arg(short, long, default_value = "conf/portico.yaml")]
        conf: PathBuf,
        /// Reload when a file of the configuration (the node file, or a rule file) changes.
        #[arg(long)]
        watch: bool,
        /// Take the listening sockets over from the running node (graceful binary
        /// upgrade): start this, then send SIGQUIT to the old process.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the configuration (like `nginx -t`): every error, plus warnings.
    Check {
        #[arg(short, long, default_value = "conf/portico.yaml")]
        conf: PathBuf,
        /// Print only where a binary upgrade hands the listeners over (for scripts).
        #[arg(long)]
        print_upgrade_sock: bool,
    },
    /// Show what the edge would do with a request, without sending traffic.
    Explain {
        #[arg(short, long, default_value = "conf/portico.yaml")]
        conf: PathBuf,
        /// HTTP method, e.g. GET.
        method: String,
        /// Full URL, e.g. http://localhost:8080/static/a.css
        url: String,
        /// Request headers, `Name: value`; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The name of the listener the request comes in on (for routes' `listeners:`).
        #[arg(short, long)]
        listener: Option<String>,
    },
    /// Run the built-in sample origin (127.0.0.1:8081) and the edge on the shipped config.
    Demo {
        #[arg(short, long, default_value = "conf/portico.yaml")]
        conf: PathBuf,
        /// Also listen for https:// and wss:// here, with a self-signed certificate for
        /// localhost made at start (its fingerprint is printed).
        #[arg(long, value_name = "ADDRESS", num_args = 0..=1, default_missing_value = "127.0.0.1:8443")]
        tls: Option<std::net::SocketAddr>,
        /// A two-tier fleet instead: shields on :8090 and :8091, edges on :8080 and :8082,
        /// on the node files of this folder (`tier::`, `conf/examples/`).
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "conf/examples", conflicts_with = "tls")]
        tiers: Option<PathBuf>,
    },
    /// Put an edge with Azure Front Door's (or Application Gateway for Containers')
    /// behaviour in front of an app, with no YAML: prints the URLs and routes, then runs.
    Emulate(EmulateArgs),
}

#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    /// The app, e.g. http://127.0.0.1:3000 (a path becomes the routes' origin_path).
    #[arg(long)]
    pub origin: String,
    /// A path pattern served with caching on (`/*`, `/legacy/*`, `/exact`); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub cached: Vec<String>,
    /// A path pattern whose WebSocket upgrades are tunnelled; repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub websocket: Vec<String>,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: std::net::SocketAddr,
    /// A file holding the admin endpoints' bearer token: needed when `--admin` is not on
    /// loopback (in a container, for example).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// A tunnel with no bytes either way for this long is closed (Front Door: 5 min).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub idle_timeout: String,
    /// A tunnel open this long is closed (Front Door: 4 h).
    #[arg(long, default_value = "4h", value_name = "DURATION")]
    pub max_lifetime: String,
    #[arg(long, value_enum, default_value = "front-door")]
    pub profile: crate::emulate::Profile,
    /// The health probe: `tcp` or `http:/path` (default: the profile's own).
    #[arg(long, value_name = "tcp|http:/PATH")]
    pub probe: Option<crate::emulate::Probe>,
    /// Close open tunnels on a schedule (`chaos.close_tunnels`), e.g. 30s.
    #[arg(long, value_name = "DURATION")]
    pub drop_tunnels_every: Option<String>,
    /// The share of open tunnels each scheduled drop closes.
    #[arg(long, default_value_t = 0.1, requires = "drop_tunnels_every")]
    pub drop_fraction: f64,
    /// How dropped tunnels close: fin, rst, close_<code> (e.g. close_1001).
    #[arg(long, default_value = "close_1001", requires = "drop_tunnels_every")]
    pub drop_how: String,
    /// Write the equivalent conf/ and rules/ here and exit (`portico run` runs them).
    #[arg(long, value_name = "DIR")]
    pub config_out: Option<PathBuf>,
}

pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run {
            conf,
            watch,
            upgrade,
        } => run(&conf, RunOptions { watch, upgrade }),
        Command::Check {
            conf,
            print_upgrade_sock: false,
        } => check(&conf),
        Command::Check { conf, .. } => print_upgrade_sock(&conf),
        Command::Explain {
            conf,
            method,
            url,
            headers,
            listener,
        } => explain(&conf, &method, &url, &headers, listener.as_deref()),
        Command::Demo { conf, tls, tiers } => demo(&conf, tls, tiers.as_deref()),
        Command::Emulate(args) => emulate(args),
    }
}

fn emulate(args: EmulateArgs) -> ExitCode {
    let emulation = crate::emulate::Emulation {
        origin: args.origin,
        cached: args.cached,
        websocket: args.websocket,
        listen: args.listen,
        admin: args.admin,
        // The node file is written elsewhere: a relative path would resolve from there.
        admin_token_file: args
            .admin_token_file
            .map(|path| std::path::absolute(&path).unwrap_or(path)),
        idle_timeout: args.idle_timeout,
        max_lifetime: args.max_lifetime,
        profile: args.profile,
        probe: args.probe,
        drop_every: args.drop_tunnels_every,
        drop_fraction: args.drop_fraction,
        drop_how: args.drop_how,
        access_log: None,
    };
    let dir = args.config_out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("portico-emulate-{}", std::process::id()))
    });
    let (conf, loaded) = match emulation.write(&dir) {
        Ok(written) => written,
        Err(e) => {
            eprintln!("portico emulate: {e}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &loaded.warnings {
        println!("{warning}");
    }
    if args.config_out.is_some() {
        println!(
            "wrote {} and {}; run them with: portico run -c {}",
            conf.display(),
            dir.join("rules/emulate.yaml").display(),
            conf.display()
        );
        return ExitCode::SUCCESS;
    }
    print!("{}", crate::emulate::describe(&emulation, &loaded, &conf));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    match Node::load_for_run(&conf, RunOptions::default()) {
        Ok(node) => node.run_server(RunOptions::default()),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(conf: &Path, options: RunOptions) -> ExitCode {
    let Err(e) = Node::run(conf, options);
    eprintln!("{e}");
    ExitCode::FAILURE
}

/// The demo's TLS listener at `addr`, added to `node`.
fn add_demo_tls(node: &mut Node, addr: std::net::SocketAddr) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("portico-demo-{}", std::process::id()));
    let (settings, fingerprint) = crate::demo::tls::self_signed(&dir)?;
    let tls =
        crate::tls::ServerTls::load(&settings, node.tickets.clone()).map_err(|e| e.to_string())?;
    node.listeners.push((addr, Some(std::sync::Arc::new(tls))));
    println!("TLS on https://{addr} (and wss://), self-signed for localhost");
    println!("  certificate {}", settings.certificates[0].cert.display());
    println!("  SHA-256 fingerprint {fingerprint}");
    println!(
        "  try: curl --cacert {} https://localhost:{}/static/a.css",
        settings.certificates[0].cert.display(),
        addr.port()
    );
    Ok(())
}

fn check(conf: &Path) -> ExitCode {
    match config::load(conf) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                println!("{warning}");
            }
            let c = &loaded.config;
            println!(
                "{}: configuration OK ({} routes, {} rule sets, {} origin groups, {} warnings)",
                conf.display(),
                c.routes.len(),
                c.rule_sets.len(),
                c.origin_groups.len(),
                loaded.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(error @ ConfigError::Invalid(_)) => {
            for diagnostic in error.diagnostics() {
                println!("{diagnostic}");
            }
            let errors = error
                .diagnostics()
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            println!(
                "{}: {errors} error(s); configuration refused",
                conf.display()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn print_upgrade_sock(conf: &Path) -> ExitCode {
    match config::load(conf) {
        Ok(loaded) => {
            println!("{}", loaded.config.node.upgrade_sock.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn explain(
    conf: &Path,
    method: &str,
    url: &str,
    raw_headers: &[String],
    listener: Option<&str>,
) -> ExitCode {
    let loaded = match config::load(conf) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut headers = http::HeaderMap::new();
    for raw in raw_headers {
        let parsed = raw.split_once(':').and_then(|(name, value)| {
            Some((
                http::HeaderName::try_from(name.trim()).ok()?,
                http::HeaderValue::from_str(value.trim()).ok()?,
            ))
        });
        match parsed {
            Some((name, value)) => {
                headers.append(name, value);
            }
            None => {
                eprintln!("bad header \"{raw}\": write 'Name: value'");
                return ExitCode::FAILURE;
            }
        }
    }
    let engine = Engine::new(loaded.config);
    if let Some(name) = listener {
        let known = engine.config.node.listeners.iter();
        if !known.clone().any(|l| l.name.as_deref() == Some(name)) {
            let names: Vec<&str> = known.filter_map(|l| l.name.as_deref()).collect();
            eprintln!(
                "no listener named \"{name}\" (named listeners: {})",
                names.join(", ")
            );
            return ExitCode::FAILURE;
        }
    }
    let method = method.to_ascii_uppercase();
    match crate::explain::explain_on(&engine, &method, url, &headers, listener) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(conf: &Path, tls: Option<std::net::SocketAddr>, tiers: Option<&Path>) -> ExitCode {
    let origin = crate::demo::start_in_background("127.0.0.1:8081");
    if let Err(e) = origin {
        eprintln!("cannot start the demo origin on 127.0.0.1:8081: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(dir) = tiers {
        return crate::demo::tiers::run(dir);
    }
    println!(
        "demo origin on http://127.0.0.1:8081; edge on the listeners of {}",
        conf.display()
    );
    println!("try: curl -i localhost:8080/static/a.css   (twice)");
    let Some(tls) = tls else {
        return run(conf, RunOptions::default());
    };
    let mut node = match Node::load_for_run(conf, RunOptions::default()) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = add_demo_tls(&mut node, tls) {
        eprintln!("cannot set up the demo TLS listener: {e}");
        return ExitCode::FAILURE;
    }
    node.run_server(RunOptions::default())
}
