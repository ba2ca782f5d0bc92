//! The scoring engine: pure, deterministic, no I/O and no clock.
pub mod spec;

/// Compiled scoring model (placeholder until the engine lands).
#[derive(Debug)]
pub struct Model;
