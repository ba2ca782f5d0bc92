//! Group commit: one fsync of sled's log covers every caller waiting at that instant.
//!
//! Every webhook is acknowledged only after its entry is durable. Flushing once per
//! request made the fsync the intake's ceiling (about 2,800 requests/s on 2 cores), so
//! callers take a ticket instead: one of them becomes the *leader*, notes the newest
//! ticket issued before its flush starts, flushes, and thereby releases every caller up
//! to that ticket. Callers that arrive while a flush runs wait for the next one, which
//! the first of them leads. A caller's writes precede its ticket, and its ticket precedes
//! the flush that releases it, so no caller returns before its own writes are durable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

use super::StoreError;

/// The flush leader and its waiters (one per store).
#[derive(Debug, Default)]
pub(super) struct GroupFlush {
    /// Tickets issued so far (a caller's ticket is the value after its increment).
    issued: AtomicU64,
    /// Every ticket up to this one is durable.
    covered: AtomicU64,
    /// A leader's flush is running.
    leading: AtomicBool,
    /// Wakes the waiters when a flush ends (well or not).
    done: Notify,
    /// fsyncs run so far (telemetry and tests: how many requests one flush served).
    flushes: AtomicU64,
}

impl GroupFlush {
    /// Return once everything written before this call is durable, sharing the fsync
    /// with every caller waiting at the same time.
    pub(super) async fn flush(&self, db: &sled::Db) -> Result<(), StoreError> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            if self.covered.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            if self
                .leading
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return self.lead(db, ticket).await;
            }
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering, so a flush that ended meanwhile is not missed.
            if self.covered.load(Ordering::SeqCst) >= ticket || !self.leading.load(Ordering::SeqCst)
            {
                continue;
            }
            notified.await;
        }
    }

    /// Run one flush for every ticket issued up to now; on failure the waiters retry
    /// (each may lead the next attempt) and this caller reports the error.
    async fn lead(&self, db: &sled::Db, ticket: u64) -> Result<(), StoreError> {
        // Hands the lead back even if this caller's future is dropped mid-flush (a
        // client that hung up), so the waiters never wait for a leader that is gone.
        let _lead = Lead(self);
        // Re-check: a flush may have covered us between our test and taking the lead.
        if self.covered.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let upto = self.issued.load(Ordering::SeqCst);
        let db = db.clone();
        // sled's `flush_async` can stall when several tasks flush at once: the blocking
        // `flush` runs on tokio's blocking pool instead.
        let res = tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Sled(sled::Error::Io(std::io::Error::other(e))))
            .and_then(|r| r.map(|_| ()).map_err(StoreError::from));
        self.flushes.fetch_add(1, Ordering::Relaxed);
        if res.is_ok() {
            self.covered.fetch_max(upto, Ordering::SeqCst);
        }
        res
    }

    /// fsyncs run so far.
    pub(super) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

/// The lead, held for one flush: released (and the waiters woken) when dropped.
struct Lead<'a>(&'a GroupFlush);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.0.leading.store(false, Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}
