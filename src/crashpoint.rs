//! Deliberate crash points, for the kill -9 tests.
//!
//! Random SIGKILLs rarely land in the narrow windows that matter (between "task created
//! in the CRM" and "crossing recorded in sled", between "score written" and "ledger
//! recorded"). `LEADSCORE_CRASHPOINTS=after_task_create@2,after_crm_write@5` makes the
//! process abort (no unwinding, no flush: the same as kill -9 for sled) the 2nd time
//! it reaches `after_task_create` and the 5th time it reaches `after_crm_write`.
//!
//! Only with the `crashpoints` cargo feature (on in a checkout's default build, so
//! `cargo test --workspace` runs tests/crash.rs against real points). The production
//! build (`--no-default-features`) compiles [`hit`] to an empty inline fn: the variable
//! does nothing there, and the call sites stay as they are.

#[cfg(feature = "crashpoints")]
use std::collections::HashMap;
#[cfg(feature = "crashpoints")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "crashpoints")]
use std::sync::OnceLock;

/// The environment variable that arms crash points (read only with `crashpoints`).
pub const ENV: &str = "LEADSCORE_CRASHPOINTS";

#[cfg(feature = "crashpoints")]
struct Armed {
    at: u64,
    hits: AtomicU64,
}

#[cfg(feature = "crashpoints")]
fn armed() -> &'static HashMap<String, Armed> {
    static ARMED: OnceLock<HashMap<String, Armed>> = OnceLock::new();
    ARMED.get_or_init(|| parse(&std::env::var(ENV).unwrap_or_default()))
}

#[cfg(feature = "crashpoints")]
fn parse(spec: &str) -> HashMap<String, Armed> {
    spec.split(',')
        .filter_map(|item| {
            let (name, at) = item.trim().split_once('@')?;
            let at = at.parse().ok().filter(|n| *n > 0)?;
            Some((
                name.to_string(),
                Armed {
                    at,
                    hits: AtomicU64::new(0),
                },
            ))
        })
        .collect()
}

/// Abort here if this point is armed and its turn has come.
#[cfg(feature = "crashpoints")]
pub fn hit(name: &str) {
    let points = armed();
    if points.is_empty() {
        return;
    }
    if let Some(p) = points.get(name) {
        if p.hits.fetch_add(1, Ordering::SeqCst) + 1 == p.at {
            eprintln!("crash point {name} reached: aborting");
            std::process::abort();
        }
    }
}

/// Without the `crashpoints` feature a crash point is nothing: the production binary
/// cannot be made to abort by an environment variable.
#[cfg(not(feature = "crashpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

#[cfg(all(test, feature = "crashpoints"))]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_counts_and_skips_garbage() {
        let p = parse("a@2, b@1,c,d@0,e@x");
        assert_eq!(p.len(), 2);
        assert_eq!(p["a"].at, 2);
        assert_eq!(p["b"].at, 1);
    }
}
