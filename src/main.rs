//! `portico`: the edge node's command line. Everything lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Portico logs every health flip itself, with the probe's reason; Pingora's balancer
    // would log each one a second time.
    let default = "info,pingora_load_balancing=error";
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    portico::cli::main(portico::cli::Cli::parse())
}
