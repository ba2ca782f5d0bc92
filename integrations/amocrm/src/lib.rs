//! amoCRM (and Kommo, the same API v4 on another host) for leadscore: a typed REST
//! client authenticated by a long-lived token or by OAuth2 with single-use refresh
//! tokens, a per-account limiter that keeps under the 7 requests/s that amoCRM punishes
//! with 429 and then a 403 block, and the form-encoded webhook parser. The fake account
//! for tests and the demo is its own crate, `leadscore-amocrm-sandbox`, so the product
//! never links it.
//!
//! This crate knows amoCRM and nothing about scoring.

pub mod auth;
pub mod client;
pub mod error;
mod feed;
pub mod limiter;
pub mod search;
pub mod types;
pub mod webhook;

pub use auth::{Auth, MemoryTokenStore, OAuthSettings, TokenPair, TokenStore};
pub use client::{Client, ClientConfig};
pub use error::Error;
pub use limiter::{Limiter, LimiterConfig, LimiterStats};
