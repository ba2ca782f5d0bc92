//! The call record: the latest calls, and exact counters that stay exact past the cap
//! (a long demo or volume run must not grow without bound, yet "zero 429s" must hold
//! for the whole run).

use std::collections::{BTreeMap, VecDeque};

/// Most call records kept by default.
pub const CALL_LOG_CAP: usize = 50_000;

/// A record the log can count: the key it is counted under.
pub trait Tally {
    /// What the counters are keyed by (e.g. method, route and status).
    type Key: Ord + Clone;
    /// This record's key.
    fn key(&self) -> Self::Key;
}

/// The latest calls and exact counts by [`Tally::key`].
#[derive(Debug)]
pub struct CallLog<R: Tally> {
    records: VecDeque<R>,
    counters: BTreeMap<R::Key, usize>,
    cap: usize,
}

impl<R: Tally> Default for CallLog<R> {
    fn default() -> Self {
        Self::with_cap(CALL_LOG_CAP)
    }
}

impl<R: Tally> CallLog<R> {
    /// A log keeping the latest `cap` records (the counters are never capped).
    pub fn with_cap(cap: usize) -> Self {
        Self {
            records: VecDeque::new(),
            counters: BTreeMap::new(),
            cap,
        }
    }

    /// Records one call.
    pub fn push(&mut self, record: R) {
        *self.counters.entry(record.key()).or_insert(0) += 1;
        if self.records.len() >= self.cap {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// Forgets every record and count.
    pub fn clear(&mut self) {
        self.records.clear();
        self.counters.clear();
    }

    /// The latest records, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &R> {
        self.records.iter()
    }

    /// Exact counts per key since start or the last [`clear`](Self::clear).
    pub fn counters(&self) -> &BTreeMap<R::Key, usize> {
        &self.counters
    }

    /// Calls whose key satisfies `pred`.
    pub fn count(&self, mut pred: impl FnMut(&R::Key) -> bool) -> usize {
        self.counters
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Tally for u16 {
        type Key = u16;
        fn key(&self) -> u16 {
            *self
        }
    }

    #[test]
    fn records_are_capped_and_counters_stay_exact() {
        let mut log = CallLog::with_cap(3);
        for s in [200u16, 429, 200, 200, 429] {
            log.push(s);
        }
        assert_eq!(log.records().copied().collect::<Vec<_>>(), [200, 200, 429]);
        assert_eq!(log.count(|s| *s == 429), 2);
        assert_eq!(log.counters()[&200], 3);
        log.clear();
        assert_eq!(log.count(|_| true), 0);
        assert_eq!(log.records().count(), 0);
    }
}
