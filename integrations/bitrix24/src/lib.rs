//! Bitrix24 for leadscore: a typed REST client (inbound webhook or OAuth app), request
//! pacing shaped like the portal's leaky bucket, `batch` and the outgoing-webhook parser.
//! The fake portal for tests and the demo is its own crate, `leadscore-bitrix24-sandbox`,
//! so the product never links it.
//!
//! This crate knows Bitrix24 and nothing about scoring. Start with [`Client::new`]
//! (one per portal, shared by clones) and [`webhook::parse`] for incoming events.

pub mod batch;
pub mod client;
pub mod credentials;
pub mod error;
pub mod limiter;
pub mod methods;
pub mod types;
pub mod webhook;

pub use batch::{BatchCommand, CommandResult};
pub use client::{
    Auth, Client, ClientConfig, LimitsSnapshot, OAuth, OAuthTokens, RetryPolicy, TokenCallback,
    UsageCallback,
};
pub use error::Error;
pub use limiter::{MethodUsage, OperatingConfig, OperatingSnapshot, PacingConfig, PacingStats};
