//! Portico: a Front-Door-style CDN edge node on Pingora.
//!
//! Modules follow a request: [`config`] (loaded and validated), [`rules`] (routing and rule
//! sets), [`proxy`] (the `ProxyHttp` hooks), [`origin`] (origin groups), [`tunnel`]
//! (WebSocket tunnels), [`tier`] (edges and shields), [`observability`] (access log), [`admin`], [`server`] (hosting)
//! and [`demo`] (the built-in sample origin); [`emulate`] is `portico emulate`, and
//! `testing` (feature `testing`) starts its edge in-process for Rust tests.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub mod connection;
pub mod demo;
pub mod emulate;
pub mod explain;
pub mod keepalive;
pub mod lifecycle;
pub mod observability;
pub mod origin;
pub mod proxy;
pub mod rules;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tier;
pub mod tls;
pub mod tunnel;
