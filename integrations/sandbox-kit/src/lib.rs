//! The plumbing both fake CRMs (`leadscore-bitrix24-sandbox`, `leadscore-amocrm-sandbox`)
//! need and that has nothing to do with either CRM's protocol, written once:
//!
//! - [`listener`]: an HTTP server whose handlers can sever their own TCP connection
//!   (a reset with no answer, the fault real CRMs produce behind a balancer);
//! - [`outbox`]: the outgoing-webhook queue, delivered asynchronously, once, without
//!   retries, with a `settle` that waits for the queue to drain;
//! - [`dice`]: seeded fault dice, so a seed and a request order give the same faults;
//! - [`calls`]: a bounded call record with exact counters.
//!
//! Only the sandboxes depend on it; the product never links it.

pub mod calls;
pub mod dice;
pub mod listener;
pub mod outbox;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use calls::{CallLog, Tally};
pub use dice::{Dice, FaultMix};
pub use listener::{serve, Conn};
pub use outbox::{outbox, Attempt, Courier, Outbox, OutboxQueue, Outgoing};

/// Locks a mutex, recovering the data if a panicking holder poisoned it: one failed
/// assertion in a test must not turn every later sandbox call into a second panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
