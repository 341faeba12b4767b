//! Demo: the built-in sample origin.
pub mod origin;
