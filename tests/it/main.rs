//! Integration tests that need no sandbox and no daemon: config loading, the scoring
//! engine's properties, the store model. One binary for all of them (one link in CI
//! instead of one per file); each former file is a module.

mod backtest;
mod config_load;
mod scoring_props;
mod store_model;
mod trigger_config;
