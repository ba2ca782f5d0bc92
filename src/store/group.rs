//! Group commit: one fsync of sled's log covers every caller waiting at that instant.
//!
//! Every webhook is acknowledged only after its entry is durable. A dedicated flusher
//! thread runs sled's `flush` back to back while anyone waits: each caller takes a
//! ticket after its writes, and the flusher notes the newest ticket issued before each
//! flush starts and, when the flush returns, releases every caller up to that ticket.
//! Callers that arrive while a flush runs are covered by the next one, which starts the
//! moment the running one returns (no caller has to be scheduled to lead it). A caller's
//! writes precede its ticket, and its ticket precedes the flush that releases it, so no
//! caller returns before its own writes are durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::StoreError;

/// How the latest flush ended: every ticket up to `upto` was issued before it started.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Round {
    upto: u64,
    /// sled's error, if the flush failed.
    error: Option<Arc<str>>,
}

/// What the callers and the flusher thread share.
#[derive(Debug)]
struct Shared {
    /// Tickets issued so far, and whether the store is closing.
    tickets: Mutex<Tickets>,
    /// Wakes the flusher when a ticket is issued (or the store closes).
    wake: Condvar,
    /// The latest round; callers wait on it.
    rounds: watch::Sender<Round>,
    /// fsyncs run so far (telemetry and tests: how many requests one flush served).
    flushes: AtomicU64,
}

/// Tickets issued to callers so far, and whether the store is closing.
#[derive(Debug, Default)]
struct Tickets {
    issued: u64,
    closing: bool,
}

/// The flusher thread and its waiters (one per store).
#[derive(Debug)]
pub(super) struct GroupFlush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupFlush {
    /// Start the flusher thread for `db`; it stops when this is dropped.
    pub(super) fn start(db: sled::Db) -> Result<GroupFlush, StoreError> {
        let shared = Arc::new(Shared {
            tickets: Mutex::new(Tickets::default()),
            wake: Condvar::new(),
            rounds: watch::Sender::new(Round {
                upto: 0,
                error: None,
            }),
            flushes: AtomicU64::new(0),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("leadscore-flush".into())
                .spawn(move || run(&shared, &db))
                .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?
        };
        Ok(GroupFlush {
            shared,
            thread: Some(thread),
        })
    }

    /// Return once everything written before this call is durable, sharing the fsync
    /// with every caller waiting at the same time. A failed flush fails every caller
    /// it would have released (their writes may not be durable).
    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        let mut rounds = self.shared.rounds.subscribe();
        let ticket = {
            let mut t = lock(&self.shared.tickets);
            t.issued += 1;
            t.issued
        };
        self.shared.wake.notify_one();
        let round = rounds.wait_for(|r| r.upto >= ticket).await;
        match round.as_deref() {
            Ok(Round { error: None, .. }) => Ok(()),
            Ok(Round { error: Some(e), .. }) => Err(StoreError::Sled(sled::Error::Io(
                std::io::Error::other(e.to_string()),
            ))),
            // The sender lives as long as `self`: not reached, but never a false ack.
            Err(_) => Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(
                "the store's flusher is gone",
            )))),
        }
    }

    /// fsyncs run so far.
    pub(super) fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }
}

impl Drop for GroupFlush {
    fn drop(&mut self) {
        lock(&self.shared.tickets).closing = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // The thread holds a handle on the db: it must be gone before the store's
            // own handle, so sled's file lock is released when the store is dropped.
            let _ = t.join();
        }
    }
}

/// The flusher: wait for a ticket, flush once for every ticket issued by then, publish.
fn run(shared: &Shared, db: &sled::Db) {
    let mut covered = 0;
    loop {
        let upto = {
            let mut t = lock(&shared.tickets);
            while t.issued == covered && !t.closing {
                t = shared.wake.wait(t).unwrap_or_else(|e| e.into_inner());
            }
            if t.issued == covered {
                return;
            }
            t.issued
        };
        // Not logged here: each caller gets the error, and the intake logs refusals
        // within its line budget (a broken disk would otherwise log once per flush).
        let error = db.flush().err().map(|e| Arc::from(e.to_string()));
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        covered = upto;
        shared.rounds.send_replace(Round { upto, error });
    }
}

/// The tickets, even if a thread panicked holding them (two counters cannot be left
/// half-updated).
fn lock(m: &Mutex<Tickets>) -> MutexGuard<'_, Tickets> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
