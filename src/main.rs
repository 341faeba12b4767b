//! `portico`: the edge node's command line. Everything lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    portico::cli::main(portico::cli::Cli::parse())
}
