//! Portico: a Front-Door-style CDN edge node on Pingora.
#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod rules;
