//! Bitrix24 for leadscore: a typed REST client (inbound webhook or OAuth app), request
//! pacing shaped like the portal's leaky bucket, `batch`, the outgoing-webhook parser,
//! and (feature `sandbox`) a faithful fake portal for tests and the demo.
//!
//! This crate knows Bitrix24 and nothing about scoring. Start with [`Client::new`]
//! (one per portal, shared by clones) and [`webhook::parse`] for incoming events.

pub mod batch;
pub mod client;
pub mod error;
pub mod limiter;
pub mod types;
pub mod webhook;

#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use batch::{BatchCommand, CommandResult};
pub use client::{
    Auth, Client, ClientConfig, LimitsSnapshot, OAuth, OAuthTokens, RetryPolicy, TokenCallback,
    UsageCallback,
};
pub use error::Error;
pub use limiter::{MethodUsage, OperatingConfig, OperatingSnapshot, PacingConfig, PacingStats};
