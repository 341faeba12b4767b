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

/// jemalloc, not glibc's malloc: a request allocates a few blocks above glibc's per-thread
/// cache limit (1 KiB: header maps, the request's state, channel blocks), and glibc served
/// each from its bins and consolidated on free: about a quarter of the edge's user time.
/// jemalloc serves them from per-thread size classes: +8% pass-through and +4% hits in
/// req/s, and less memory per idle connection and tunnel (bench/notes.md, session 12).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
