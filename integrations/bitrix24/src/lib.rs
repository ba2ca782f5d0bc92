//! Bitrix24 for leadscore: a typed REST client (inbound webhook or OAuth app), request
//! pacing shaped like the portal's leaky bucket, `batch`, the outgoing-webhook parser,
//! and (feature `sandbox`) a faithful fake portal for tests and the demo.
//!
//! This crate knows Bitrix24 and nothing about scoring.

pub mod batch;
pub mod client;
pub mod error;
pub mod limiter;
pub mod types;
pub mod webhook;

#[cfg(feature = "sandbox")]
pub mod sandbox;
