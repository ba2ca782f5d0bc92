//! Model test of the store: random sequences of every queue, dead-letter, write and
//! crossing operation (and reopening the store on the same directory) must leave the
//! sled-backed `Store` in exactly the state a few in-memory `BTreeMap`s predict.
//!
//! The model is the specification written out plainly; any difference after any step
//! is a store bug (or a model bug) and proptest shrinks it to a short sequence.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use leadscore::crm::{Subject, TaskRef};
use leadscore::scoring::Score;
use leadscore::store::{
    Cause, CauseSource, Crossing, LedgerEntry, PendingEntry, Queueing, Store, StoreError, Written,
};
use proptest::prelude::*;

const PORTALS: [&str; 2] = ["north", "south"];
const LEADS: [&str; 4] = ["1", "2", "3", "40"];
const ACTIVITIES: [&str; 2] = ["7", "8"];

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_763_000_000 + secs, 0).unwrap()
}

fn subject(i: usize) -> Subject {
    if i < LEADS.len() {
        Subject::Lead(LEADS[i].into())
    } else {
        Subject::Activity(ACTIVITIES[i - LEADS.len()].into())
    }
}

fn cause(detail: &str, at: DateTime<Utc>) -> Cause {
    Cause {
        source: CauseSource::Webhook,
        detail: detail.into(),
        at,
    }
}

/// One operation; indices are reduced modulo the small key spaces above so that
/// operations often hit the same keys.
#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        portal: usize,
        subject: usize,
        now: i64,
        window: u64,
        limit: usize,
    },
    /// `stale`: the worker read the entry one generation ago.
    /// `next_due`: when newer events may be read at the earliest.
    Complete {
        portal: usize,
        subject: usize,
        stale: bool,
        next_due: i64,
    },
    RetryLater {
        portal: usize,
        subject: usize,
        stale: bool,
        due: i64,
    },
    DeadLetter {
        portal: usize,
        subject: usize,
        stale: bool,
        now: i64,
    },
    /// `pick` chooses among the existing dead letters; past the end, an unknown id.
    Replay {
        pick: usize,
        now: i64,
    },
    Drop {
        pick: usize,
    },
    Retarget {
        portal: usize,
        activity: usize,
        lead: usize,
        stale: bool,
        now: i64,
    },
    RecordWrite {
        portal: usize,
        lead: usize,
        score: i32,
    },
    SetCrossing {
        portal: usize,
        lead: usize,
        state: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PORTALS.len();
    let s = 0..LEADS.len() + ACTIVITIES.len();
    prop_oneof![
        4 => (p.clone(), s.clone(), 0i64..30, 0u64..4, 1usize..7).prop_map(
            |(portal, subject, now, window, limit)| Op::Enqueue { portal, subject, now, window, limit }
        ),
        2 => (p.clone(), s.clone(), any::<bool>(), 0i64..60).prop_map(
            |(portal, subject, stale, next_due)| Op::Complete { portal, subject, stale, next_due }
        ),
        2 => (p.clone(), s.clone(), any::<bool>(), 0i64..60).prop_map(
            |(portal, subject, stale, due)| Op::RetryLater { portal, subject, stale, due }
        ),
        1 => (p.clone(), s.clone(), any::<bool>(), 0i64..60).prop_map(
            |(portal, subject, stale, now)| Op::DeadLetter { portal, subject, stale, now }
        ),
        1 => (0usize..4, 0i64..60).prop_map(|(pick, now)| Op::Replay { pick, now }),
        1 => (0usize..4).prop_map(|pick| Op::Drop { pick }),
        2 => (p.clone(), 0..ACTIVITIES.len(), 0..LEADS.len(), any::<bool>(), 0i64..60).prop_map(
            |(portal, activity, lead, stale, now)| Op::Retarget { portal, activity, lead, stale, now }
        ),
        1 => (p.clone(), 0..LEADS.len(), 0i32..100).prop_map(|(portal, lead, score)| {
            Op::RecordWrite { portal, lead, score }
        }),
        1 => (p, 0..LEADS.len(), 0u8..3).prop_map(|(portal, lead, state)| Op::SetCrossing {
            portal,
            lead,
            state
        }),
        1 => Just(Op::Reopen),
    ]
}

/// What the model remembers of a pending entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MEntry {
    gen: u64,
    attempts: u32,
    due: DateTime<Utc>,
    events: u64,
}

/// What the model remembers of a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MDead {
    portal: String,
    subject: Subject,
    gen: u64,
    attempts: u32,
    events: u64,
    error: String,
}

type Key = (String, Subject);

#[derive(Debug, Default)]
struct Model {
    pending: BTreeMap<Key, MEntry>,
    dead: BTreeMap<u64, MDead>,
    written: BTreeMap<(String, String), i32>,
    crossing: BTreeMap<(String, String), Crossing>,
}

fn crossing_state(n: u8, lead: &str) -> Crossing {
    match n {
        0 => Crossing::Armed,
        1 => Crossing::Intent {
            marker: format!("[leadscore:{lead}]"),
            score: 72,
            at: t(5),
        },
        _ => Crossing::Fired {
            task: TaskRef {
                id: format!("task-{lead}"),
                open: true,
            },
            marker: format!("[leadscore:{lead}]"),
            at: t(6),
            fell_below: lead.len() % 2 == 0,
        },
    }
}

fn score(total: i32) -> Score {
    Score {
        total,
        tier: "warm".into(),
        tier_label: "Warm".into(),
        groups: Vec::new(),
        breakdown: Vec::new(),
        gaps: Vec::new(),
        unclamped: total,
        qualification: None,
    }
}

/// The entry a worker would hand back to the store: the stored one (or one generation
/// older when `stale`), or, when nothing is stored, one it read before the key vanished.
fn worker_copy(store: &Store, model: &Model, key: &Key, stale: bool) -> PendingEntry {
    let (portal, subject) = key;
    match model.pending.get(key) {
        Some(m) => {
            let mut e = store
                .pending_get(&leadscore::store::pending_key(portal, subject))
                .unwrap()
                .expect("model and store agree on presence");
            if stale {
                e.gen = m.gen - 1;
            }
            e
        }
        None => PendingEntry {
            portal: portal.clone(),
            subject: subject.clone(),
            first_at: t(0),
            last_at: t(0),
            due_at: t(0),
            attempts: 1,
            gen: 3,
            events: 2,
            causes: vec![cause("ghost", t(0))],
            last_error: None,
            activities_changed: false,
        },
    }
}

struct Harness {
    dir: tempfile::TempDir,
    store: Option<Store>,
    rt: tokio::runtime::Runtime,
    model: Model,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Harness {
            dir,
            store: Some(store),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            model: Model::default(),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Enqueue {
                portal,
                subject: s,
                now,
                window,
                limit,
            } => {
                let key = (PORTALS[portal].to_string(), subject(s));
                let now = t(now);
                let due = now + chrono::Duration::seconds(window as i64);
                let got = self.store().enqueue(
                    &key.0,
                    &key.1,
                    cause("event", now),
                    now,
                    Queueing {
                        coalesce: Duration::from_secs(window),
                        limit,
                    },
                    false,
                );
                let len = self.model.pending.len();
                match self.model.pending.get_mut(&key) {
                    Some(m) => {
                        m.gen += 1;
                        m.events += 1;
                        if due < m.due && m.attempts == 0 {
                            m.due = due;
                        }
                        let out = got.expect("a merge always succeeds, even when full");
                        assert!(out.merged);
                        assert_eq!(out.due_at, m.due);
                    }
                    None if len >= limit => {
                        assert!(
                            matches!(got, Err(StoreError::Full { limit: l }) if l == limit),
                            "a new lead beyond the limit is refused: {got:?}"
                        );
                    }
                    None => {
                        let out = got.expect("room for a new entry");
                        assert!(!out.merged);
                        assert_eq!(out.due_at, due);
                        self.model.pending.insert(
                            key,
                            MEntry {
                                gen: 1,
                                attempts: 0,
                                due,
                                events: 1,
                            },
                        );
                    }
                }
            }
            Op::Complete {
                portal,
                subject: s,
                stale,
                next_due,
            } => {
                let key = (PORTALS[portal].to_string(), subject(s));
                let e = worker_copy(self.store(), &self.model, &key, stale);
                let got = self.store().complete(&e, t(next_due)).unwrap();
                match self.model.pending.get_mut(&key) {
                    Some(m) if m.gen == e.gen => {
                        assert_eq!(got, None);
                        self.model.pending.remove(&key);
                    }
                    Some(m) => {
                        m.attempts = 0;
                        m.due = m.due.max(t(next_due));
                        let newer = got.expect("the newer entry is handed back");
                        assert_eq!(newer.gen, m.gen);
                        assert_eq!(newer.due_at, m.due);
                        assert_eq!(newer.last_error, None);
                    }
                    None => assert_eq!(got, None),
                }
            }
            Op::RetryLater {
                portal,
                subject: s,
                stale,
                due,
            } => {
                let key = (PORTALS[portal].to_string(), subject(s));
                let e = worker_copy(self.store(), &self.model, &key, stale);
                let got = self.store().retry_later(&e, "boom", t(due), true).unwrap();
                let m = self.model.pending.entry(key).or_insert(MEntry {
                    gen: e.gen,
                    attempts: e.attempts,
                    due: e.due_at,
                    events: e.events,
                });
                m.attempts = e.attempts + 1;
                m.due = t(due);
                assert_eq!(got.attempts, m.attempts);
                assert_eq!(got.gen, m.gen);
                assert_eq!(got.last_error.as_deref(), Some("boom"));
            }
            Op::DeadLetter {
                portal,
                subject: s,
                stale,
                now,
            } => {
                let key = (PORTALS[portal].to_string(), subject(s));
                let e = worker_copy(self.store(), &self.model, &key, stale);
                let id = self.store().dead_letter(&e, "gave up", t(now)).unwrap();
                let (gen, attempts, events) = match self.model.pending.remove(&key) {
                    Some(m) => (m.gen, m.attempts, m.events),
                    None => (e.gen, e.attempts, e.events),
                };
                let prev = self.model.dead.insert(
                    id,
                    MDead {
                        portal: key.0,
                        subject: key.1,
                        gen,
                        attempts,
                        events,
                        error: "gave up".into(),
                    },
                );
                assert!(prev.is_none(), "dead-letter id {id} reused");
            }
            Op::Replay { pick, now } => {
                let id = self.pick_dead(pick);
                let got = self.store().replay(id, t(now)).unwrap();
                match self.model.dead.remove(&id) {
                    Some(d) => {
                        assert!(got);
                        let key = (d.portal, d.subject);
                        let m = self.model.pending.entry(key).or_insert(MEntry {
                            gen: d.gen,
                            attempts: 0,
                            due: t(now),
                            events: d.events,
                        });
                        m.gen += 1;
                        m.attempts = 0;
                        m.due = t(now);
                    }
                    None => assert!(!got, "replay of unknown id {id}"),
                }
            }
            Op::Drop { pick } => {
                let id = self.pick_dead(pick);
                let got = self.store().drop_dead_letter(id).unwrap();
                assert_eq!(got, self.model.dead.remove(&id).is_some());
            }
            Op::Retarget {
                portal,
                activity,
                lead,
                stale,
                now,
            } => {
                let akey = (PORTALS[portal].to_string(), subject(LEADS.len() + activity));
                let e = worker_copy(self.store(), &self.model, &akey, stale);
                let lead_id = LEADS[lead].to_string();
                let got = self.store().retarget(&e, &lead_id, t(now)).unwrap();
                let current = self
                    .model
                    .pending
                    .get(&akey)
                    .is_some_and(|m| m.gen == e.gen);
                if !current {
                    assert_eq!(
                        got, None,
                        "a changed or vanished activity is not retargeted"
                    );
                    return;
                }
                let a = self.model.pending.remove(&akey).unwrap();
                let lkey = (akey.0.clone(), Subject::Lead(lead_id));
                let existed = self.model.pending.contains_key(&lkey);
                let m = self.model.pending.entry(lkey).or_insert(MEntry {
                    gen: 0,
                    attempts: 0,
                    due: a.due,
                    events: 0,
                });
                if existed {
                    m.gen += 1;
                } else {
                    m.gen = 1;
                }
                m.events += a.events;
                if m.attempts == 0 {
                    m.due = t(now);
                }
                let got = got.expect("a current activity is retargeted");
                assert_eq!(
                    (got.gen, got.attempts, got.due_at),
                    (m.gen, m.attempts, m.due)
                );
            }
            Op::RecordWrite {
                portal,
                lead,
                score: total,
            } => {
                let (p, l) = (PORTALS[portal], LEADS[lead]);
                let written = Written {
                    score: total,
                    tier: "warm".into(),
                    breakdown: format!("{total} points"),
                    extras: Default::default(),
                    at: t(1),
                    crm_stamp: None,
                };
                let entry = LedgerEntry {
                    at: t(1),
                    score: total,
                    tier: "warm".into(),
                    explanation: format!("{total} points"),
                    detail: score(total),
                    causes: vec![cause("event", t(1))],
                    shadow: None,
                };
                self.store().record_write(p, l, &written, &entry).unwrap();
                self.model.written.insert((p.into(), l.into()), total);
            }
            Op::SetCrossing {
                portal,
                lead,
                state,
            } => {
                let (p, l) = (PORTALS[portal], LEADS[lead]);
                let c = crossing_state(state, l);
                self.store().set_crossing(p, l, &c).unwrap();
                self.model.crossing.insert((p.into(), l.into()), c);
            }
            Op::Reopen => {
                let store = self.store.take().unwrap();
                self.rt.block_on(store.flush()).unwrap();
                drop(store);
                // sled's background flusher may hold the file lock a moment after the
                // last handle is dropped (more so with other tests in this process).
                let mut tries = 0;
                let reopened = loop {
                    match Store::open(self.dir.path()) {
                        Ok(s) => break s,
                        Err(e) if tries < 100 => {
                            tries += 1;
                            let _ = e;
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                        Err(e) => panic!("cannot reopen the store: {e}"),
                    }
                };
                self.store = Some(reopened);
            }
        }
    }

    /// An existing dead letter's id, or one that was never issued.
    fn pick_dead(&self, pick: usize) -> u64 {
        self.model
            .dead
            .keys()
            .nth(pick)
            .copied()
            .unwrap_or(u64::MAX - pick as u64)
    }

    /// Compare everything the store exposes with the model.
    fn check(&self, step: usize) {
        let s = self.store();
        let m = &self.model;
        let stored: BTreeMap<Key, MEntry> = s
            .pending_all()
            .unwrap()
            .into_iter()
            .map(|e| {
                assert!(e.causes.len() <= 8, "causes are bounded");
                (
                    (e.portal, e.subject),
                    MEntry {
                        gen: e.gen,
                        attempts: e.attempts,
                        due: e.due_at,
                        events: e.events,
                    },
                )
            })
            .collect();
        assert_eq!(stored, m.pending, "pending entries after step {step}");
        assert_eq!(
            s.pending_len(),
            m.pending.len(),
            "pending_len after step {step}"
        );
        assert_eq!(s.stats().pending, m.pending.len());

        let dead: BTreeMap<u64, MDead> = s
            .dead_letters()
            .unwrap()
            .into_iter()
            .map(|d| {
                (
                    d.id,
                    MDead {
                        portal: d.entry.portal,
                        subject: d.entry.subject,
                        gen: d.entry.gen,
                        attempts: d.entry.attempts,
                        events: d.entry.events,
                        error: d.error,
                    },
                )
            })
            .collect();
        assert_eq!(dead, m.dead, "dead letters after step {step}");
        let order: Vec<u64> = s.dead_letters().unwrap().iter().map(|d| d.id).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "oldest first");
        assert_eq!(s.stats().dead_letters, m.dead.len());

        for p in PORTALS {
            let written: BTreeMap<String, i32> = s
                .written_all(p)
                .unwrap()
                .into_iter()
                .map(|(l, w)| (l, w.score))
                .collect();
            let want: BTreeMap<String, i32> = m
                .written
                .iter()
                .filter(|((mp, _), _)| mp == p)
                .map(|((_, l), v)| (l.clone(), *v))
                .collect();
            assert_eq!(written, want, "written in {p} after step {step}");
            let crossings: BTreeMap<String, Crossing> =
                s.crossings_all(p).unwrap().into_iter().collect();
            let want: BTreeMap<String, Crossing> = m
                .crossing
                .iter()
                .filter(|((mp, _), _)| mp == p)
                .map(|((_, l), c)| (l.clone(), c.clone()))
                .collect();
            assert_eq!(crossings, want, "crossings in {p} after step {step}");
            for l in LEADS {
                let key = (p.to_string(), l.to_string());
                assert_eq!(
                    s.written(p, l).unwrap().map(|w| w.score),
                    m.written.get(&key).copied()
                );
                let ledger = s.ledger(p, l).unwrap();
                assert_eq!(ledger.last().map(|e| e.score), m.written.get(&key).copied());
                assert_eq!(
                    s.crossing(p, l).unwrap(),
                    m.crossing.get(&key).cloned().unwrap_or(Crossing::Armed)
                );
            }
        }
        assert_eq!(s.stats().leads_scored, m.written.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut h = Harness::new();
        for (i, op) in ops.iter().enumerate() {
            h.apply(op);
            h.check(i);
        }
        // Whatever the sequence, a final reopen changes nothing.
        h.apply(&Op::Reopen);
        h.check(ops.len());
    }
}
