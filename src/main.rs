//! `portico`: the edge node's command line. Everything lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: a proxied request makes about 80 small allocations
/// (Pingora's header maps, buffers, futures), and mimalloc's per-thread free lists serve
/// them in a fraction of the instructions (A/B in bench/notes.md, session 7).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Portico logs every health flip itself, with the probe's reason; Pingora's balancer
    // would log each one a second time.
    let default = "info,pingora_load_balancing=error";
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    portico::cli::main(portico::cli::Cli::parse())
}
