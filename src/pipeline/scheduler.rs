//! In-memory index of when each waiting entry is due.
//!
//! sled holds the entries; this holds only (due time, key) so workers find the next
//! batch without scanning the tree. It is rebuilt from the store at start, so losing it
//! in a crash loses nothing.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

/// Due-time index with in-flight tracking (one worker per key at a time).
#[derive(Debug, Default)]
pub struct Scheduler {
    due: BTreeSet<(DateTime<Utc>, Vec<u8>)>,
    by_key: HashMap<Vec<u8>, DateTime<Utc>>,
    in_flight: HashSet<Vec<u8>>,
}

/// The portal part of a store key (`portal \0 subject`).
pub fn portal_of(key: &[u8]) -> &[u8] {
    let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    &key[..end]
}

impl Scheduler {
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

    /// Take up to `max` due keys of one portal (the one whose entry is due first),
    /// marking them in flight.
    pub fn take_due(&mut self, now: DateTime<Utc>, max: usize) -> Vec<Vec<u8>> {
        let Some((first_due, first_key)) = self.due.iter().next().cloned() else {
            return Vec::new();
        };
        if first_due > now {
            return Vec::new();
        }
        let portal = portal_of(&first_key).to_vec();
        let picked: Vec<(DateTime<Utc>, Vec<u8>)> = self
            .due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .filter(|(_, key)| portal_of(key) == portal.as_slice())
            .take(max)
            .cloned()
            .collect();
        for (due, key) in &picked {
            self.due.remove(&(*due, key.clone()));
            self.by_key.remove(key);
            self.in_flight.insert(key.clone());
        }
        picked.into_iter().map(|(_, k)| k).collect()
    }

    /// A worker finished with a key.
    pub fn done(&mut self, key: &[u8]) {
        self.in_flight.remove(key);
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
    fn max_limits_the_batch() {
        let mut s = Scheduler::default();
        for i in 0..120 {
            s.schedule(k("a", &i.to_string()), t(0));
        }
        assert_eq!(s.take_due(t(0), 50).len(), 50);
        assert_eq!(s.scheduled(), 70);
    }
}
