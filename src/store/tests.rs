use super::*;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_763_000_000 + secs, 0).unwrap()
}

fn cause(detail: &str, at: DateTime<Utc>) -> Cause {
    Cause {
        source: CauseSource::Webhook,
        detail: detail.into(),
        at,
    }
}

fn lead(id: &str) -> Subject {
    Subject::Lead(id.into())
}

const WINDOW: Duration = Duration::from_secs(2);

/// The queue with the test window and room for `limit` entries.
fn q(limit: usize) -> Queueing {
    Queueing {
        coalesce: WINDOW,
        limit,
    }
}

#[test]
fn events_for_one_lead_merge_into_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let a = s
        .enqueue("p", &lead("1"), cause("e1", t(0)), t(0), q(10), false)
        .unwrap();
    assert!(!a.merged);
    assert_eq!(a.due_at, t(2));
    let b = s
        .enqueue("p", &lead("1"), cause("e2", t(1)), t(1), q(10), false)
        .unwrap();
    assert!(b.merged);
    assert_eq!(b.due_at, t(2), "a merge never delays the entry");
    s.enqueue("p", &lead("2"), cause("e3", t(1)), t(1), q(10), false)
        .unwrap();
    assert_eq!(s.pending_len(), 2);
    let all = s.pending_all().unwrap();
    let one = all.iter().find(|e| e.subject == lead("1")).unwrap();
    assert_eq!(one.events, 2);
    assert_eq!(one.gen, 2);
    assert_eq!(one.causes.len(), 2);
}

#[test]
fn a_full_queue_refuses_new_leads_but_merges_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.enqueue("p", &lead("1"), cause("e", t(0)), t(0), q(1), false)
        .unwrap();
    let err = s
        .enqueue("p", &lead("2"), cause("e", t(0)), t(0), q(1), false)
        .unwrap_err();
    assert!(matches!(err, StoreError::Full { limit: 1 }));
    assert!(
        s.enqueue("p", &lead("1"), cause("e", t(0)), t(0), q(1), false)
            .unwrap()
            .merged
    );
}

#[test]
fn complete_keeps_an_entry_that_got_new_events_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.enqueue("p", &lead("1"), cause("e1", t(0)), t(0), q(10), false)
        .unwrap();
    let read = s.pending_all().unwrap().remove(0);
    s.enqueue("p", &lead("1"), cause("e2", t(1)), t(1), q(10), false)
        .unwrap();
    // Finished at t(3): the newer events wait a window (no back-to-back read).
    let newer = s
        .complete(&read, t(5))
        .unwrap()
        .expect("newer entry survives");
    assert_eq!(newer.gen, 2);
    assert_eq!(
        newer.due_at,
        t(5),
        "due one window after the read, not at t(2)"
    );
    assert_eq!(s.pending_get(&newer.key()).unwrap().unwrap().due_at, t(5));
    assert_eq!(s.pending_len(), 1);
    assert_eq!(s.complete(&newer, t(9)).unwrap(), None);
    assert_eq!(s.pending_len(), 0);
    assert!(s.pending_all().unwrap().is_empty());
}

#[test]
fn retries_then_dead_letter_then_replay() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.enqueue("p", &lead("7"), cause("e", t(0)), t(0), q(10), false)
        .unwrap();
    let e = s.pending_all().unwrap().remove(0);
    let e = s.retry_later(&e, "503", t(10), true).unwrap();
    assert_eq!((e.attempts, e.due_at), (1, t(10)));
    // A new event does not pull a failing entry forward (the backoff stands).
    let again = s
        .enqueue("p", &lead("7"), cause("e", t(3)), t(3), q(10), false)
        .unwrap();
    assert_eq!(again.due_at, t(10));
    let e = s.pending_get(&e.key()).unwrap().unwrap();
    let id = s.dead_letter(&e, "gave up", t(20)).unwrap();
    assert_eq!(s.pending_len(), 0);
    let dls = s.dead_letters().unwrap();
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].error, "gave up");
    assert!(s.replay(id, t(30)).unwrap());
    assert!(s.dead_letters().unwrap().is_empty());
    let back = s.pending_all().unwrap().remove(0);
    assert_eq!((back.attempts, back.due_at), (0, t(30)));
    assert_eq!(s.pending_len(), 1);
    assert!(!s.replay(id, t(31)).unwrap(), "a replayed letter is gone");
}

#[test]
fn retarget_moves_an_activity_onto_its_lead() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let act = Subject::Activity("55".into());
    s.enqueue("p", &act, cause("act", t(0)), t(0), q(10), false)
        .unwrap();
    s.enqueue("p", &lead("9"), cause("lead", t(0)), t(0), q(10), false)
        .unwrap();
    let a = s.pending_get(&pending_key("p", &act)).unwrap().unwrap();
    let l = s.retarget(&a, &"9".to_string(), t(1)).unwrap().unwrap();
    assert_eq!(l.subject, lead("9"));
    assert_eq!(l.events, 2);
    assert_eq!(l.due_at, t(1));
    assert_eq!(s.pending_len(), 1);
    assert!(s.pending_get(&a.key()).unwrap().is_none());
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.enqueue("p", &lead("1"), cause("e", t(0)), t(0), q(10), false)
            .unwrap();
        s.set_crossing(
            "p",
            "1",
            &Crossing::Intent {
                marker: "m".into(),
                score: 80,
                at: t(0),
            },
        )
        .unwrap();
        s.meta_set("sweep:p", "x").unwrap();
        futures_flush(&s);
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.pending_len(), 1);
    assert!(matches!(
        s.crossing("p", "1").unwrap(),
        Crossing::Intent { score: 80, .. }
    ));
    assert_eq!(s.crossing("p", "2").unwrap(), Crossing::Armed);
    assert_eq!(s.meta_get("sweep:p").unwrap().as_deref(), Some("x"));
}

fn futures_flush(s: &Store) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(s.flush())
        .unwrap();
}

#[test]
fn timers_come_out_in_due_order_and_replace_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
    store.set_timer("p", "1", Some(t(30))).unwrap();
    store.set_timer("p", "2", Some(t(10))).unwrap();
    store.set_timer("q", "1", Some(t(20))).unwrap();
    // A lead's new timer replaces its old one.
    store.set_timer("p", "2", Some(t(40))).unwrap();
    assert_eq!(store.timers_len(), 3);
    assert_eq!(store.next_timer().unwrap(), Some(t(20)));
    let due = store.due_timers(t(30), 10).unwrap();
    assert_eq!(
        due,
        vec![
            ("q".into(), "1".into(), t(20)),
            ("p".into(), "1".into(), t(30))
        ]
    );
    assert_eq!(store.due_timers(t(100), 1).unwrap().len(), 1);
    // Never again, and a deleted lead loses its timer.
    store.set_timer("q", "1", None).unwrap();
    store.remove_snapshot("p", "2").unwrap();
    assert_eq!(store.due_timers(t(100), 10).unwrap().len(), 1);
    // Times before 1970 sort too.
    store
        .set_timer("p", "old", Some(DateTime::from_timestamp(-5, 0).unwrap()))
        .unwrap();
    assert_eq!(store.due_timers(t(100), 10).unwrap()[0].1, "old");
}

#[test]
fn timers_set_in_one_batch_replace_like_single_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
    store.set_timer("p", "1", Some(t(5))).unwrap();
    store.set_timer("p", "3", Some(t(6))).unwrap();
    // Lead 2 twice in one batch: the last wins, and no stray key of the first stays.
    store
        .set_timers(
            "p",
            [
                ("1", Some(t(50))),
                ("2", Some(t(20))),
                ("2", Some(t(30))),
                ("3", None),
            ],
        )
        .unwrap();
    assert_eq!(store.timers_len(), 2);
    assert_eq!(
        store.due_timers(t(100), 10).unwrap(),
        vec![
            ("p".into(), "2".into(), t(30)),
            ("p".into(), "1".into(), t(50))
        ]
    );
    // Unchanged timers cost nothing and stay.
    store
        .set_timers("p", [("1", Some(t(50))), ("2", Some(t(30)))])
        .unwrap();
    assert_eq!(store.timers_len(), 2);
    // Fired timers cleared in one batch: lead 1's is gone; lead 2 got a new timer after
    // its old one (at 20) fired, and keeps it.
    store
        .clear_timers([("p", "1", t(50)), ("p", "2", t(20))])
        .unwrap();
    assert_eq!(
        store.due_timers(t(100), 10).unwrap(),
        vec![("p".into(), "2".into(), t(30))]
    );
    store.set_timer("p", "1", Some(t(60))).unwrap();
    assert_eq!(store.timers_len(), 2);
}

#[test]
fn a_json_snapshot_of_an_earlier_version_reads_and_is_rewritten_compact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let snap = InputSnapshot {
        lead: Lead {
            id: "7".into(),
            position: Some("Генеральный директор".into()),
            ..Lead::default()
        },
        activities: vec![Activity {
            id: "a1".into(),
            kind: crate::lead::ActivityKind::DemoRequest,
            direction: None,
            subject: Some("[demo] Заявка".into()),
            url: None,
            at,
            contact_id: None,
            mapped_by: None,
        }],
        activity_cursor: Some("c".into()),
        activities_read_at: at,
        full_read_at: at,
    };
    // What the store held before the binary record: the snapshot's JSON.
    let json = serde_json::to_vec(&snap).unwrap();
    store
        .snapshot
        .insert(lead_key("p", "7"), json.clone())
        .unwrap();
    assert_eq!(store.snapshot("p", "7").unwrap(), Some(snap.clone()));
    store.put_snapshot("p", "7", &snap).unwrap();
    let raw = store.snapshot.get(lead_key("p", "7")).unwrap().unwrap();
    assert!(raw[0] != b'{' && raw.len() < json.len());
    assert_eq!(store.snapshot("p", "7").unwrap(), Some(snap));
    // A damaged record is an error naming the tree, not a panic.
    store
        .snapshot
        .insert(lead_key("p", "8"), &[1u8, 200][..])
        .unwrap();
    assert!(matches!(
        store.snapshot("p", "8"),
        Err(StoreError::Corrupt {
            tree: "snapshot",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_share_fsyncs_and_all_return() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let before = s.flushes();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..200 {
        let s = s.clone();
        set.spawn(async move {
            s.enqueue(
                "p",
                &lead(&i.to_string()),
                cause("e", t(0)),
                t(0),
                q(1000),
                false,
            )
            .unwrap();
            s.flush().await.unwrap();
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let fsyncs = s.flushes() - before;
    assert!(fsyncs >= 1);
    assert!(fsyncs < 200, "200 waiting callers took {fsyncs} fsyncs");
    assert_eq!(s.pending_len(), 200);
}

#[test]
fn racing_events_for_one_lead_each_merge_once() {
    // `enqueue` is a compare-and-swap loop, not a transaction: events racing for the
    // same entry must each land exactly once (a lost update would lose a webhook).
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    s.enqueue(
                        "p",
                        &lead("1"),
                        cause(&format!("e{n}-{i}"), t(0)),
                        t(0),
                        q(1),
                        false,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = s.pending_all().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(s.pending_len(), 1, "the new entry is counted once");
    assert_eq!(all[0].events, 1000);
    assert_eq!(all[0].gen, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_mid_flush_holds_no_one_up() {
    use std::future::Future;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.enqueue("p", &lead("1"), cause("e", t(0)), t(0), q(10), false)
        .unwrap();
    {
        // Poll once: this caller takes a ticket and waits for the flusher thread.
        let mut first = Box::pin(s.flush());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = first.as_mut().poll(&mut cx);
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), s.flush())
        .await
        .expect("the next caller is not stuck behind a dropped one")
        .unwrap();
}
