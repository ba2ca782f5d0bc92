//! Integration tests that run the real daemon (or the real binary) against the sandbox
//! CRMs through `leadscore::demo` (feature `demo`, on by default). One binary for all of
//! them (one link in CI instead of one per file); each former file is a module, and
//! tests/common is shared as `crate::common`. tests/crash.rs stays its own binary: it
//! needs the `crashpoints` feature and has a long `--ignored` run of its own.

#[path = "../common/mod.rs"]
mod common;

mod backtest_history;
mod backtest_portal;
mod capacity;
mod config_reload;
mod deals_bitrix24;
mod e2e_amocrm;
mod e2e_bitrix24;
mod hostile_input;
mod identify_contact;
mod intake_limits;
mod notify;
mod outcome_webhooks;
mod pipeline_amocrm;
mod qualification;
mod reminders;
mod rescore_amocrm;
mod rule_triggers;
mod secrets;
mod shadow_model;
mod sighup_rescore;
mod status_dashboard;
mod sweep_own_writes;
mod task_batches;
mod tracking;
mod trigger;
mod volume_amocrm;
mod volume_bitrix24;
