//! In-memory index of when each waiting entry is due.
//!
//! sled holds the entries; this holds only (due time, key) so workers find the next
//! batch without scanning the tree. It is rebuilt from the store at start, so losing it
//! in a crash loses nothing.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

/// Due-time index with in-flight tracking (one worker per key at a time).
///
/// Batching policy: a portal with a batch in flight gets a second concurrent batch
/// only when a full one is due. The CRM's rate limit, not the CPU, bounds throughput,
/// so under load it is better to let due leads accumulate for a moment than to spend
/// the same requests on many small batches (measured on amoCRM: 500 leads went from
/// ~100 small passes and 1.1 requests per lead to a few full ones).
#[derive(Debug, Default)]
pub struct Scheduler {
    due: BTreeSet<(DateTime<Utc>, Vec<u8>)>,
    by_key: HashMap<Vec<u8>, DateTime<Utc>>,
    in_flight: HashSet<Vec<u8>>,
    /// Keys in flight per portal.
    busy: HashMap<Vec<u8>, usize>,
    /// Keys of leads near or above the call-now threshold: when more are due than one
    /// batch takes, these go first, so a slow or paused portal delays cold leads, not
    /// call-now tasks.
    hot: HashSet<Vec<u8>>,
    /// Portals the CRM told us to leave alone, until when.
    paused: HashMap<Vec<u8>, DateTime<Utc>>,
    /// How long a due entry may wait for its batch to fill (no hot lead due, fewer
    /// than a batch due): requests, not CPU, are the scarce thing.
    fill_hold: chrono::Duration,
}

/// One scheduled entry: when it is due and its store key.
type DueEntry = (DateTime<Utc>, Vec<u8>);

/// The portal part of a store key (`portal \0 subject`).
pub fn portal_of(key: &[u8]) -> &[u8] {
    let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    &key[..end]
}

impl Scheduler {
    /// A scheduler whose due entries wait up to `hold` for company before a part batch
    /// goes out (the pipeline passes its coalescing window, at most 2 s: a lone lead waits
    /// that much longer, a hot lead no longer).
    pub fn with_fill_hold(hold: std::time::Duration) -> Scheduler {
        Scheduler {
            fill_hold: chrono::Duration::from_std(hold).unwrap_or_default(),
            ..Scheduler::default()
        }
    }

    /// When the next part batch may go out at the latest: the first due entry's time
    /// plus the fill hold (`None`: nothing scheduled).
    pub fn next_release(&self) -> Option<DateTime<Utc>> {
        self.next_due().map(|d| d + self.fill_hold)
    }

    /// (Re)schedule a key. A key being processed is left alone: its worker re-reads the
    /// store when it finishes and reschedules whatever arrived meanwhile.
    pub fn schedule(&mut self, key: Vec<u8>, due: DateTime<Utc>) {
        if self.in_flight.contains(&key) {
            return;
        }
        if let Some(old) = self.by_key.insert(key.clone(), due) {
            self.due.remove(&(old, key.clone()));
        }
        self.due.insert((due, key));
    }

    /// Take up to `max` due keys of one portal, marking them in flight: the portal
    /// whose entry is due first, unless it already has a batch in flight and fewer than
    /// `max` of its keys are due (then the next portal in due order is tried).
    pub fn take_due(&mut self, now: DateTime<Utc>, max: usize) -> Vec<Vec<u8>> {
        self.take_due_sized(now, |_| max)
    }

    /// [`Scheduler::take_due`] with each portal's own batch size (`max_of(portal)`),
    /// so a batch matches how its CRM packs requests.
    pub fn take_due_sized(
        &mut self,
        now: DateTime<Utc>,
        max_of: impl Fn(&[u8]) -> usize,
    ) -> Vec<Vec<u8>> {
        let mut sizes: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut size = |portal: &[u8]| -> usize {
            *sizes
                .entry(portal.to_vec())
                .or_insert_with(|| max_of(portal).max(1))
        };
        let mut order: Vec<&[u8]> = Vec::new();
        // Per portal: the first `max` due entries, and the due hot ones beyond those.
        let mut groups: HashMap<&[u8], (Vec<&DueEntry>, Vec<&DueEntry>)> = HashMap::new();
        for entry in self.due.iter().take_while(|(due, _)| *due <= now) {
            let portal = portal_of(&entry.1);
            let group = groups.entry(portal).or_insert_with(|| {
                order.push(portal);
                (Vec::new(), Vec::new())
            });
            if group.0.len() < size(portal) {
                group.0.push(entry);
            } else if self.hot.contains(&entry.1) {
                group.1.push(entry);
            }
        }
        self.paused.retain(|_, until| *until > now);
        let held_until = now - self.fill_hold;
        let chosen = order.into_iter().find(|portal| {
            let busy = self.busy.get(*portal).copied().unwrap_or(0) > 0;
            let (first, late_hot) = &groups[portal];
            let full = first.len() >= size(portal);
            // A part batch goes when its oldest entry has waited out the hold or a hot
            // lead is due (a call-now task is never held for company).
            let ready = full
                || first.first().is_some_and(|(due, _)| *due <= held_until)
                || !late_hot.is_empty()
                || first.iter().any(|e| self.hot.contains(&e.1));
            !self.paused.contains_key(*portal) && (!busy || full) && ready
        });
        let Some(portal) = chosen else {
            return Vec::new();
        };
        let (first, late_hot) = &groups[portal];
        // Hot entries first (in due order), then the rest in due order, up to `max`.
        let mut candidates: Vec<&DueEntry> = first
            .iter()
            .chain(late_hot.iter())
            .filter(|e| self.hot.contains(&e.1))
            .copied()
            .collect();
        candidates.extend(first.iter().filter(|e| !self.hot.contains(&e.1)).copied());
        candidates.truncate(size(portal));
        let picked: Vec<(DateTime<Utc>, Vec<u8>)> = candidates.into_iter().cloned().collect();
        let portal = portal.to_vec();
        for (due, key) in &picked {
            self.due.remove(&(*due, key.clone()));
            self.by_key.remove(key);
            self.in_flight.insert(key.clone());
        }
        *self.busy.entry(portal).or_insert(0) += picked.len();
        picked.into_iter().map(|(_, k)| k).collect()
    }

    /// Take one key for the caller's batch, whether due or not (a lead found through
    /// an activity event is scored in the same turn). `false`: another worker holds it.
    pub fn claim(&mut self, key: &[u8]) -> bool {
        if self.in_flight.contains(key) {
            return false;
        }
        if let Some(due) = self.by_key.remove(key) {
            self.due.remove(&(due, key.to_vec()));
        }
        self.in_flight.insert(key.to_vec());
        *self.busy.entry(portal_of(key).to_vec()).or_insert(0) += 1;
        true
    }

    /// Hand out nothing of `portal` until `until` (the CRM blocked the integration).
    pub fn pause_portal(&mut self, portal: &[u8], until: DateTime<Utc>) {
        let at = self.paused.entry(portal.to_vec()).or_insert(until);
        *at = (*at).max(until);
    }

    /// Mark a key as a hot lead's (or clear the mark), for [`Scheduler::take_due`].
    pub fn set_hot(&mut self, key: &[u8], hot: bool) {
        if hot {
            self.hot.insert(key.to_vec());
        } else {
            self.hot.remove(key);
        }
    }

    /// Is this key marked hot?
    pub fn is_hot(&self, key: &[u8]) -> bool {
        self.hot.contains(key)
    }

    /// Hot keys waiting or in flight (for the wait watchdog).
    pub fn hot_keys(&self) -> Vec<Vec<u8>> {
        self.hot.iter().cloned().collect()
    }

    /// A worker finished with a key.
    pub fn done(&mut self, key: &[u8]) {
        if self.in_flight.remove(key) {
            let portal = portal_of(key);
            if let Some(n) = self.busy.get_mut(portal) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.busy.remove(portal);
                }
            }
        }
    }

    /// When the next entry falls due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.due.iter().next().map(|(d, _)| *d)
    }

    /// Entries scheduled (not in flight).
    pub fn scheduled(&self) -> usize {
        self.by_key.len()
    }

    /// Nothing scheduled and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.by_key.is_empty() && self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_000_000 + s, 0).unwrap()
    }
    fn k(p: &str, s: &str) -> Vec<u8> {
        let mut v = p.as_bytes().to_vec();
        v.push(0);
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn takes_only_due_keys_of_one_portal_in_due_order() {
        let mut s = Scheduler::default();
        s.schedule(k("a", "1"), t(5));
        s.schedule(k("b", "1"), t(1));
        s.schedule(k("b", "2"), t(2));
        s.schedule(k("b", "3"), t(9));
        assert!(s.take_due(t(0), 10).is_empty());
        assert_eq!(s.take_due(t(5), 10), vec![k("b", "1"), k("b", "2")]);
        assert_eq!(s.take_due(t(5), 10), vec![k("a", "1")]);
        assert_eq!(s.next_due(), Some(t(9)));
    }

    #[test]
    fn a_part_batch_waits_out_the_fill_hold_unless_full_or_hot() {
        let mut s = Scheduler::with_fill_hold(std::time::Duration::from_secs(3));
        s.schedule(k("a", "1"), t(1));
        s.schedule(k("a", "2"), t(2));
        // Due, but two of a batch of three: held until the oldest has waited 3 s.
        assert!(s.take_due(t(2), 3).is_empty());
        assert_eq!(s.next_release(), Some(t(4)));
        assert!(s.take_due(t(3), 3).is_empty());
        let taken = s.take_due(t(4), 3);
        assert_eq!(taken, vec![k("a", "1"), k("a", "2")]);
        taken.iter().for_each(|key| s.done(key));
        // A full batch goes at once.
        for i in 0..3 {
            s.schedule(k("a", &format!("f{i}")), t(10));
        }
        let taken = s.take_due(t(10), 3);
        assert_eq!(taken.len(), 3);
        taken.iter().for_each(|key| s.done(key));
        // So does a hot lead, with whatever is due beside it.
        s.schedule(k("a", "cold"), t(20));
        s.schedule(k("a", "hot"), t(20));
        s.set_hot(&k("a", "hot"), true);
        assert_eq!(s.take_due(t(20), 3), vec![k("a", "hot"), k("a", "cold")]);
    }

    #[test]
    fn a_paused_portal_gets_nothing_until_the_pause_ends() {
        let mut s = Scheduler::default();
        s.schedule(k("a", "1"), t(1));
        s.schedule(k("b", "1"), t(2));
        s.pause_portal(b"a", t(10));
        assert_eq!(s.take_due(t(5), 10), vec![k("b", "1")]);
        assert!(s.take_due(t(9), 10).is_empty());
        assert_eq!(s.take_due(t(10), 10), vec![k("a", "1")]);
    }

    #[test]
    fn hot_keys_go_first_even_when_due_later() {
        let mut s = Scheduler::default();
        for i in 0..10 {
            s.schedule(k("a", &format!("c{i}")), t(i));
        }
        s.schedule(k("a", "hot"), t(20));
        s.set_hot(&k("a", "hot"), true);
        let got = s.take_due(t(30), 3);
        assert_eq!(got, vec![k("a", "hot"), k("a", "c0"), k("a", "c1")]);
        for key in &got {
            s.done(key);
        }
        // Not due yet: not taken however hot.
        s.schedule(k("a", "later"), t(99));
        s.set_hot(&k("a", "later"), true);
        let rest = s.take_due(t(30), 50);
        assert!(!rest.contains(&k("a", "later")));
        assert_eq!(rest.len(), 8);
    }

    #[test]
    fn rescheduling_moves_a_key_and_in_flight_keys_wait() {
        let mut s = Scheduler::default();
        s.schedule(k("a", "1"), t(5));
        s.schedule(k("a", "1"), t(1));
        assert_eq!(s.scheduled(), 1);
        let got = s.take_due(t(1), 1);
        assert_eq!(got, vec![k("a", "1")]);
        s.schedule(k("a", "1"), t(1));
        assert!(
            s.take_due(t(2), 1).is_empty(),
            "in flight: not handed out twice"
        );
        s.done(&k("a", "1"));
        assert!(s.is_idle());
    }

    #[test]
    fn a_busy_portal_gets_a_second_batch_only_when_a_full_one_is_due() {
        let mut s = Scheduler::default();
        for i in 0..3 {
            s.schedule(k("a", &format!("x{i}")), t(0));
        }
        assert_eq!(s.take_due(t(0), 2).len(), 2);
        // One left for "a", which is busy: wait for more (or for the batch to end).
        s.schedule(k("b", "1"), t(1));
        assert_eq!(
            s.take_due(t(1), 2),
            vec![k("b", "1")],
            "another portal is served"
        );
        assert!(s.take_due(t(1), 2).is_empty());
        s.schedule(k("a", "y"), t(1));
        assert_eq!(s.take_due(t(1), 2).len(), 2, "a full batch is due: go");
        s.done(&k("a", "x0"));
        s.done(&k("a", "x1"));
        s.done(&k("a", "x2"));
        s.done(&k("a", "y"));
        s.schedule(k("a", "z"), t(2));
        assert_eq!(
            s.take_due(t(2), 2),
            vec![k("a", "z")],
            "idle portal: any batch"
        );
    }

    #[test]
    fn max_limits_the_batch() {
        let mut s = Scheduler::default();
        for i in 0..120 {
            s.schedule(k("a", &i.to_string()), t(0));
        }
        assert_eq!(s.take_due(t(0), 50).len(), 50);
        assert_eq!(s.scheduled(), 70);
    }
}
