//! Durable state in sled, behind one small type so sled's API does not leak.
//!
//! Trees (values are JSON, so an admin can inspect them and upgrades stay readable;
//! snapshots, read on every decay and rescore, are a compact binary record):
//! - `pending`: one entry per (portal, subject) waiting to be processed. Events for the
//!   same lead merge into one entry, which *is* the coalescing; a generation number lets
//!   a worker finish an entry only if no new event arrived meanwhile.
//! - `dlq`: entries that exhausted their retries, for an admin to list, replay or drop.
//! - `written`: what we last wrote to the CRM per lead (the no-write-loop guard).
//! - `ledger`: every score change per lead with its breakdown, time and cause.
//! - `crossing`: the "call now" state machine per lead (exactly one task per crossing).
//! - `snapshot`: per lead, the inputs the engine last scored (the neutral lead and its
//!   bounded activity history) and where the next incremental activity read starts,
//!   so a lead whose activities did not change is re-read without them.
//! - `timers` / `timer_of`: when each lead's score next changes with time alone (its
//!   decay), ordered by time, so due leads are re-scored without a webhook.
//! - `capacity_used` / `capacity_wait`: call-now tasks per rep per day and the hot
//!   leads waiting for a slot (see `capacity`).
//! - `company` / `company_of`: buying-group aggregates per company (see `companies`).
//! - `episode`: rule-trigger task episodes (see `episodes`).
//! - `meta`: sweep cursors, rotated OAuth tokens and the CRM limits between runs.
//!
//! Every write that an acknowledgement depends on is followed by [`Store::flush`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::crm::{LeadId, Subject, TaskRef};
use crate::lead::{Activity, Lead};

mod deal_values;
mod group;
mod inputs;
mod ledger;

pub use ledger::{crossings, LedgerEntry, ShadowScore};
mod calibrations;
mod capacity;
pub use capacity::Waiting;
mod companies;
pub use companies::{CompanyRecord, CompanyUpdate};
mod episodes;
pub use episodes::Episode;
mod live_outcomes;
pub use live_outcomes::LiveOutcome;
mod meta;
mod open;
mod outcomes;
mod reminders;
pub use open::STORE_CACHE_BYTES;
mod snapshot_codec;
pub mod tracking;
pub mod tracking_contacts;
pub use outcomes::OutcomePull;
pub use reminders::ReminderState;

/// Most activities kept per lead snapshot (the newest): older ones have decayed to
/// nothing in any sensible model, and the bound keeps a chatty lead's record small.
pub const MAX_SNAPSHOT_ACTIVITIES: usize = 200;

/// What the engine last scored for one lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSnapshot {
    pub lead: Lead,
    /// Oldest first, at most [`MAX_SNAPSHOT_ACTIVITIES`].
    pub activities: Vec<Activity>,
    /// Where the next incremental activity read starts (CRM-specific).
    pub activity_cursor: Option<String>,
    /// When activities were last read (fully or incrementally).
    pub activities_read_at: DateTime<Utc>,
    /// When the whole history was last read.
    pub full_read_at: DateTime<Utc>,
}

impl InputSnapshot {
    /// Merge activities read incrementally: same id replaces, then newest kept.
    pub fn merge_activities(&mut self, delta: Vec<Activity>) {
        let mut by_id: std::collections::BTreeMap<String, Activity> = self
            .activities
            .drain(..)
            .map(|a| (a.id.clone(), a))
            .collect();
        for a in delta {
            by_id.insert(a.id.clone(), a);
        }
        self.activities = by_id.into_values().collect();
        self.bound();
    }

    /// Order oldest first and keep the newest [`MAX_SNAPSHOT_ACTIVITIES`].
    pub fn bound(&mut self) {
        self.activities
            .sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        let excess = self
            .activities
            .len()
            .saturating_sub(MAX_SNAPSHOT_ACTIVITIES);
        self.activities.drain(..excess);
    }
}

/// How the queue takes a new event: the coalescing window a new entry waits for
/// company, and how many entries it holds before it refuses new subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queueing {
    pub coalesce: Duration,
    pub limit: usize,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored {tree} record is unreadable: {source}")]
    Corrupt {
        tree: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The queue holds `limit` leads already: the intake answers 503 and the CRM (or
    /// the sweep) tries again later, rather than the disk filling up.
    #[error("queue is full ({limit} leads waiting)")]
    Full { limit: usize },
}

/// What caused a lead to be (re)scored, kept in the ledger for the sales lead's "why".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub source: CauseSource,
    /// E.g. the webhook's event name and id.
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// Where a cause came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseSource {
    Webhook,
    Sweep,
    Replay,
    Rescore,
    /// The score changes with time alone (decay, a window ending): re-scored from the
    /// stored inputs, without reading the CRM.
    Decay,
    /// A website event of an identified visitor (or the identification itself):
    /// re-scored from the stored inputs plus the tracked events, no CRM read.
    Tracking,
}

/// At most this many causes are kept per pending entry (a burst of 1,000 webhooks for
/// one lead is one entry, not a thousand-element list).
const MAX_CAUSES: usize = 8;

/// One (portal, subject) waiting to be processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub portal: String,
    pub subject: Subject,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// When a worker should pick it up (end of the coalesce window, or the next retry).
    pub due_at: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Bumped by every merge; a worker completes the entry only at the generation it read.
    pub gen: u64,
    /// Number of events merged into this entry.
    pub events: u64,
    pub causes: Vec<Cause>,
    pub last_error: Option<String>,
    /// An event about the lead's activities (not just its fields) was merged in, so the
    /// fetch must read what changed in them.
    #[serde(default)]
    pub activities_changed: bool,
}

impl PendingEntry {
    /// The sled key of this entry.
    pub fn key(&self) -> Vec<u8> {
        pending_key(&self.portal, &self.subject)
    }
}

/// An entry that ran out of retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub entry: PendingEntry,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// What was last written to a lead's CRM fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub score: i32,
    pub tier: String,
    pub breakdown: String,
    /// The optional values written to their own fields (probability, weighted value,
    /// qualification state), flattened so older records read unchanged.
    #[serde(flatten)]
    pub extras: crate::crm::extras::ExtraValues,
    pub at: DateTime<Utc>,
    /// The CRM's modification stamp our write produced: the sweep skips the lead while
    /// the CRM lists nothing newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_stamp: Option<crate::crm::CrmStamp>,
}

/// The "call now" state of one lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Crossing {
    /// A crossing would create a task.
    Armed,
    /// We decided to create a task with this marker; whether the CRM has it yet is
    /// unknown until recovery looks for the marker. Recorded *before* the CRM call so
    /// a crash can never lead to a second task.
    Intent {
        marker: String,
        score: i32,
        at: DateTime<Utc>,
    },
    /// Above the threshold without a task, on purpose: a bulk rescore (model change)
    /// lifted it there, and reps are not flooded for that. Like `Fired`, only a fall
    /// under the re-arm mark arms it again.
    Suppressed { score: i32, at: DateTime<Utc> },
    /// The task exists. `fell_below` records the hysteresis: the score dropped under
    /// the re-arm mark since.
    Fired {
        task: TaskRef,
        marker: String,
        at: DateTime<Utc>,
        fell_below: bool,
    },
}

/// Portal-wide counters for status and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub pending: usize,
    pub dead_letters: usize,
    pub leads_scored: usize,
}

/// Outcome of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub due_at: DateTime<Utc>,
    /// The event merged into an entry that was already waiting.
    pub merged: bool,
}

/// The sled-backed store.
pub struct Store {
    db: sled::Db,
    pending: sled::Tree,
    dlq: sled::Tree,
    written: sled::Tree,
    ledger: sled::Tree,
    crossing: sled::Tree,
    reminders: sled::Tree,
    snapshot: sled::Tree,
    /// Per lead with an amount: rep, pipeline, stage (see `deal_values`).
    deal_values: sled::Tree,
    timers: sled::Tree,
    timer_of: sled::Tree,
    meta: sled::Tree,
    tracking: tracking::TrackingTrees,
    capacity: capacity::CapacityTrees,
    companies: companies::CompanyTrees,
    episodes: sled::Tree,
    pending_count: AtomicUsize,
    group: group::GroupFlush,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pending", &self.pending_count.load(Ordering::Relaxed))
            .finish()
    }
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records always serialize")
}

fn dec<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

/// Every record of a portal in a tree keyed `portal \0 lead`, with its lead id.
fn per_lead<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    portal: &str,
) -> Result<Vec<(LeadId, T)>, StoreError> {
    let mut prefix = portal.as_bytes().to_vec();
    prefix.push(0);
    tree.scan_prefix(&prefix)
        .map(|kv| {
            let (k, v) = kv?;
            let lead = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            Ok((lead, dec(name, &v)?))
        })
        .collect()
}

fn lead_key(portal: &str, lead: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(portal.len() + lead.len() + 1);
    k.extend_from_slice(portal.as_bytes());
    k.push(0);
    k.extend_from_slice(lead.as_bytes());
    k
}

/// Key of a pending entry: `portal \0 L|A : id`.
pub fn pending_key(portal: &str, subject: &Subject) -> Vec<u8> {
    let s = match subject {
        Subject::Lead(id) => format!("L:{id}"),
        Subject::Activity(id) => format!("A:{id}"),
    };
    lead_key(portal, &s)
}

fn ledger_prefix(portal: &str, lead: &str) -> Vec<u8> {
    let mut k = lead_key(portal, lead);
    k.push(0);
    k
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn tx_get<T: DeserializeOwned>(
    tree: &TransactionalTree,
    name: &'static str,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(v) => dec(name, &v)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

fn untx(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

fn merge_into(
    existing: Option<PendingEntry>,
    portal: &str,
    subject: &Subject,
    cause: Cause,
    now: DateTime<Utc>,
    due: DateTime<Utc>,
) -> PendingEntry {
    match existing {
        Some(mut e) => {
            e.last_at = now;
            e.gen += 1;
            e.events += 1;
            // A failing entry keeps its backoff; a waiting one keeps its window end.
            if due < e.due_at && e.attempts == 0 {
                e.due_at = due;
            }
            if e.causes.len() >= MAX_CAUSES {
                e.causes.remove(0);
            }
            e.causes.push(cause);
            e
        }
        None => PendingEntry {
            portal: portal.to_string(),
            subject: subject.clone(),
            first_at: now,
            last_at: now,
            due_at: due,
            attempts: 0,
            gen: 1,
            events: 1,
            causes: vec![cause],
            last_error: None,
            activities_changed: false,
        },
    }
}

impl Store {
    /// Make everything written so far durable. Webhooks are acknowledged only after this.
    /// Group commit (`group`): one fsync serves every caller waiting at that instant.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.group.flush().await
    }

    /// fsyncs [`Store::flush`] has run since open (how many callers one served).
    pub fn flushes(&self) -> u64 {
        self.group.flushes()
    }

    /// Flush from synchronous code (a token-rotation callback); blocks the caller for
    /// one fsync of sled's log.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Number of (portal, subject) entries waiting.
    pub fn pending_len(&self) -> usize {
        self.pending_count.load(Ordering::Relaxed)
    }

    /// Record an event for a subject, merging with a waiting entry for the same subject.
    /// A new entry is due after `queueing.coalesce`; a merge never delays an entry. New
    /// entries beyond `queueing.limit` are refused with [`StoreError::Full`]; merges
    /// always succeed. `activities_changed`: the event says the lead's activities
    /// changed (kept through merges until the entry is processed).
    pub fn enqueue(
        &self,
        portal: &str,
        subject: &Subject,
        cause: Cause,
        now: DateTime<Utc>,
        queueing: Queueing,
        activities_changed: bool,
    ) -> Result<Enqueued, StoreError> {
        let Queueing { coalesce, limit } = queueing;
        let key = pending_key(portal, subject);
        let due = now + chrono::Duration::from_std(coalesce).unwrap_or_default();
        let full = self.pending_len() >= limit;
        // One key, so a compare-and-swap loop rather than a transaction: a sled
        // transaction takes the store-wide write lock, which waits for a running flush
        // (sled holds the read side through its fsync), so every webhook held a runtime
        // thread for up to one flush and the intake stalled while sled wrote its log.
        let mut current = self.pending.get(&key)?;
        loop {
            let existing: Option<PendingEntry> =
                current.as_deref().map(|v| dec("pending", v)).transpose()?;
            let merged = existing.is_some();
            if !merged && full {
                return Err(StoreError::Full { limit });
            }
            let mut entry = merge_into(existing, portal, subject, cause.clone(), now, due);
            entry.activities_changed |= activities_changed;
            match self
                .pending
                .compare_and_swap(&key, current.as_ref(), Some(enc(&entry)))?
            {
                Ok(()) => {
                    if !merged {
                        self.pending_count.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(Enqueued {
                        due_at: entry.due_at,
                        merged,
                    });
                }
                // Another event for the same subject landed first: merge into it.
                Err(raced) => current = raced.current,
            }
        }
    }

    /// All waiting entries (the scheduler loads them at start, so a restart resumes).
    pub fn pending_all(&self) -> Result<Vec<PendingEntry>, StoreError> {
        self.pending
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                dec("pending", &v)
            })
            .collect()
    }

    /// The waiting entry for a key, if any.
    pub fn pending_get(&self, key: &[u8]) -> Result<Option<PendingEntry>, StoreError> {
        match self.pending.get(key)? {
            Some(v) => Ok(Some(dec("pending", &v)?)),
            None => Ok(None),
        }
    }

    /// Finish an entry processed at generation `entry.gen`. If events arrived meanwhile,
    /// the newer entry stays (and is returned) so they are processed too, but not before
    /// `next_due` (now + the coalescing window): a lead is read at most once per window
    /// however many webhooks keep arriving for it.
    pub fn complete(
        &self,
        entry: &PendingEntry,
        next_due: DateTime<Utc>,
    ) -> Result<Option<PendingEntry>, StoreError> {
        let key = entry.key();
        let gen = entry.gen;
        let out = self
            .pending
            .transaction(|tx| {
                let cur: Option<PendingEntry> = tx_get(tx, "pending", &key)?;
                match cur {
                    Some(c) if c.gen == gen => {
                        tx.remove(key.as_slice())?;
                        Ok((true, None))
                    }
                    Some(mut c) => {
                        // Newer events: process them soon, as fresh work.
                        c.attempts = 0;
                        c.last_error = None;
                        c.due_at = c.due_at.max(next_due);
                        tx.insert(key.as_slice(), enc(&c))?;
                        Ok((false, Some(c)))
                    }
                    None => Ok((false, None)),
                }
            })
            .map_err(untx)?;
        if out.0 {
            self.pending_count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(out.1)
    }

    /// Record a failed attempt and when to try again. An entry that vanished meanwhile
    /// is put back (and counted), so the failed work is not lost.
    /// `counts`: the failure advances the entry along the retry schedule (a pause of
    /// the CRM does not).
    pub fn retry_later(
        &self,
        entry: &PendingEntry,
        error: &str,
        due_at: DateTime<Utc>,
        counts: bool,
    ) -> Result<PendingEntry, StoreError> {
        let key = entry.key();
        let fallback = entry.clone();
        let (cur, added) = self
            .pending
            .transaction(|tx| {
                let existing: Option<PendingEntry> = tx_get(tx, "pending", &key)?;
                let added = existing.is_none();
                let mut cur = existing.unwrap_or_else(|| fallback.clone());
                cur.attempts = fallback.attempts + u32::from(counts);
                cur.due_at = due_at;
                cur.last_error = Some(error.to_string());
                tx.insert(key.as_slice(), enc(&cur))?;
                Ok((cur, added))
            })
            .map_err(untx)?;
        if added {
            self.pending_count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(cur)
    }

    /// Move an entry to the dead-letter tree (atomically: it is never in neither).
    pub fn dead_letter(
        &self,
        entry: &PendingEntry,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let key = entry.key();
        let id = self.db.generate_id()?;
        let fallback = entry.clone();
        let removed = (&self.pending, &self.dlq)
            .transaction(|(p, d)| {
                let cur: Option<PendingEntry> = tx_get(p, "pending", &key)?;
                let removed = cur.is_some();
                let mut e = cur.unwrap_or_else(|| fallback.clone());
                e.last_error = Some(error.to_string());
                p.remove(key.as_slice())?;
                let dl = DeadLetter {
                    id,
                    entry: e,
                    error: error.to_string(),
                    at: now,
                };
                d.insert(&id.to_be_bytes(), enc(&dl))?;
                Ok(removed)
            })
            .map_err(untx)?;
        if removed {
            self.pending_count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(id)
    }

    /// Replace an activity entry by its lead: the activity is done, the lead is due now.
    /// Returns the lead's entry, or `None` if the activity entry changed meanwhile (it
    /// will be resolved again).
    pub fn retarget(
        &self,
        activity: &PendingEntry,
        lead: &LeadId,
        now: DateTime<Utc>,
    ) -> Result<Option<PendingEntry>, StoreError> {
        let akey = activity.key();
        let subject = Subject::Lead(lead.clone());
        let lkey = pending_key(&activity.portal, &subject);
        let out = self
            .pending
            .transaction(|tx| {
                let cur: Option<PendingEntry> = tx_get(tx, "pending", &akey)?;
                match cur {
                    Some(c) if c.gen == activity.gen => {
                        tx.remove(akey.as_slice())?;
                        let existing: Option<PendingEntry> = tx_get(tx, "pending", &lkey)?;
                        let was_new = existing.is_none();
                        let mut e = match existing {
                            Some(mut e) => {
                                e.activities_changed = true;
                                e.gen += 1;
                                e.events += c.events;
                                e.last_at = now;
                                for cause in c.causes.iter().cloned() {
                                    if e.causes.len() >= MAX_CAUSES {
                                        e.causes.remove(0);
                                    }
                                    e.causes.push(cause);
                                }
                                e
                            }
                            None => PendingEntry {
                                subject: subject.clone(),
                                attempts: 0,
                                gen: 1,
                                last_error: None,
                                activities_changed: true,
                                ..c.clone()
                            },
                        };
                        if e.attempts == 0 {
                            e.due_at = now;
                        }
                        tx.insert(lkey.as_slice(), enc(&e))?;
                        Ok(Some((e, was_new)))
                    }
                    _ => Ok(None),
                }
            })
            .map_err(untx)?;
        Ok(out.map(|(e, was_new)| {
            if !was_new {
                self.pending_count.fetch_sub(1, Ordering::Relaxed);
            }
            e
        }))
    }

    /// Dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dlq
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                dec("dlq", &v)
            })
            .collect()
    }

    /// Put a dead letter back into the queue (due now, attempts reset).
    pub fn replay(&self, id: u64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let dkey = id.to_be_bytes();
        let added = (&self.pending, &self.dlq)
            .transaction(|(p, d)| {
                let Some(dl) = tx_get::<DeadLetter>(d, "dlq", &dkey)? else {
                    return Ok(None);
                };
                d.remove(&dkey)?;
                let key = dl.entry.key();
                let cause = Cause {
                    source: CauseSource::Replay,
                    detail: format!("dead letter {id}"),
                    at: now,
                };
                let existing: Option<PendingEntry> = tx_get(p, "pending", &key)?;
                let was_new = existing.is_none();
                let mut e = existing.unwrap_or_else(|| PendingEntry {
                    attempts: 0,
                    last_error: None,
                    ..dl.entry.clone()
                });
                e.gen += 1;
                e.due_at = now;
                e.attempts = 0;
                e.causes.push(cause);
                if e.causes.len() > MAX_CAUSES {
                    e.causes.remove(0);
                }
                p.insert(key.as_slice(), enc(&e))?;
                Ok(Some(was_new))
            })
            .map_err(untx)?;
        match added {
            Some(true) => {
                self.pending_count.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Some(false) => Ok(true),
            None => Ok(false),
        }
    }

    /// Forget a dead letter for good.
    pub fn drop_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.dlq.remove(id.to_be_bytes())?.is_some())
    }

    /// What we last wrote to this lead.
    pub fn written(&self, portal: &str, lead: &str) -> Result<Option<Written>, StoreError> {
        match self.written.get(lead_key(portal, lead))? {
            Some(v) => Ok(Some(dec("written", &v)?)),
            None => Ok(None),
        }
    }

    /// Record a successful write-back and its ledger entry, atomically.
    pub fn record_write(
        &self,
        portal: &str,
        lead: &str,
        written: &Written,
        entry: &LedgerEntry,
    ) -> Result<(), StoreError> {
        let wkey = lead_key(portal, lead);
        let seq = self.db.generate_id()?;
        let mut lkey = ledger_prefix(portal, lead);
        lkey.extend_from_slice(&seq.to_be_bytes());
        (&self.written, &self.ledger)
            .transaction(|(w, l)| {
                w.insert(wkey.as_slice(), enc(written))?;
                l.insert(lkey.as_slice(), enc(entry))?;
                Ok(())
            })
            .map_err(untx)
    }

    /// The score history of one lead, oldest first.
    pub fn ledger(&self, portal: &str, lead: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        self.ledger
            .scan_prefix(ledger_prefix(portal, lead))
            .map(|kv| {
                let (_, v) = kv?;
                dec("ledger", &v)
            })
            .collect()
    }

    /// Every lead's last written state in a portal (for status and the dashboard).
    pub fn written_all(&self, portal: &str) -> Result<Vec<(LeadId, Written)>, StoreError> {
        per_lead(&self.written, "written", portal)
    }

    /// The "call now" state of a lead (`Armed` when never seen).
    pub fn crossing(&self, portal: &str, lead: &str) -> Result<Crossing, StoreError> {
        match self.crossing.get(lead_key(portal, lead))? {
            Some(v) => dec("crossing", &v),
            None => Ok(Crossing::Armed),
        }
    }

    /// Every lead's crossing state in a portal.
    pub fn crossings_all(&self, portal: &str) -> Result<Vec<(LeadId, Crossing)>, StoreError> {
        per_lead(&self.crossing, "crossing", portal)
    }

    /// Set the crossing state. Callers flush before acting on an `Intent`.
    pub fn set_crossing(
        &self,
        portal: &str,
        lead: &str,
        state: &Crossing,
    ) -> Result<(), StoreError> {
        self.crossing.insert(lead_key(portal, lead), enc(state))?;
        Ok(())
    }

    /// Counters for status output.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            pending: self.pending_len(),
            dead_letters: self.dlq.len(),
            leads_scored: self.written.len(),
        }
    }
}

#[cfg(test)]
mod tests;
