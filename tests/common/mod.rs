//! Shared helpers for the integration tests (each test binary uses a subset): real origins
//! on `127.0.0.1:0` and an in-process edge.
#![allow(dead_code)]
pub mod edge;
pub mod gated;
pub mod health;
pub mod origin;
