//! leadscore: transparent, automatic lead scoring for Bitrix24 and amoCRM.
//!
//! The pipeline: webhook → durable queue (sled) → fetch → score → write-back → trigger.
//! `main.rs` is a thin CLI; everything it runs lives here so tests run the same code.

pub mod app;
pub mod backtest;
pub mod cli;
pub mod cli_backtest;
pub mod cli_rescore;
pub mod cli_tracking;
pub mod config;
pub mod crashpoint;
pub mod crm;
pub mod dashboard;
mod dashboard_model;
/// The daemon against the Bitrix24 sandbox (`leadscore demo`); tests use it as fixtures.
#[cfg(feature = "demo")]
pub mod demo;
/// The daemon against the amoCRM sandbox (`leadscore demo --crm amocrm`).
#[cfg(feature = "demo")]
pub mod demo_amocrm;
/// The demo's deal funnel (simple-mode portal, weighted pipeline value).
#[cfg(feature = "demo")]
pub mod demo_deals;
/// A sandbox portal with its own daemon, for the demo's later scenes.
#[cfg(feature = "demo")]
pub mod demo_portal;
/// The demo's seed leads.
#[cfg(feature = "demo")]
pub mod demo_seeds;
/// The demo's website scene (tracking, identify by e-mail).
#[cfg(feature = "demo")]
pub mod demo_site;
pub mod intake;
pub mod lead;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod scoring;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tracking;
pub mod weighted;
