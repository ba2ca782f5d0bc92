//! Closed leads read from a CRM for backtests, kept per portal so a second backtest of
//! the same portal makes no CRM request (a pull of 10,000 leads costs minutes of the
//! portal's rate limit). One record per lead plus a header saying when and how the
//! pull was made; a new pull replaces the portal's whole set.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{dec, enc, Store, StoreError};
use crate::backtest::ClosedLead;

/// The sled tree of pulled outcomes (`<portal>\0h` header, `<portal>\0l<position>` rows).
const TREE: &str = "outcomes";

/// When a portal's outcomes were pulled, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomePull {
    pub pulled_at: DateTime<Utc>,
    pub leads: usize,
    /// CRM requests the pull made.
    pub requests: u64,
}

fn prefix(portal: &str) -> Vec<u8> {
    let mut k = portal.as_bytes().to_vec();
    k.push(0);
    k
}

impl Store {
    fn outcomes_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(TREE)?)
    }

    /// The cached pull of a portal (`None`: never pulled).
    pub fn outcomes(
        &self,
        portal: &str,
    ) -> Result<Option<(OutcomePull, Vec<ClosedLead>)>, StoreError> {
        let tree = self.outcomes_tree()?;
        let mut head = prefix(portal);
        head.push(b'h');
        let Some(h) = tree.get(&head)? else {
            return Ok(None);
        };
        let pull: OutcomePull = dec(TREE, &h)?;
        let mut rows = prefix(portal);
        rows.push(b'l');
        let mut leads = Vec::with_capacity(pull.leads);
        for kv in tree.scan_prefix(&rows) {
            let (_, v) = kv?;
            leads.push(dec(TREE, &v)?);
        }
        Ok(Some((pull, leads)))
    }

    /// Replace a portal's cached pull (made durable before returning).
    pub fn put_outcomes(
        &self,
        portal: &str,
        pull: &OutcomePull,
        leads: &[ClosedLead],
    ) -> Result<(), StoreError> {
        let tree = self.outcomes_tree()?;
        for kv in tree.scan_prefix(prefix(portal)) {
            let (k, _) = kv?;
            tree.remove(k)?;
        }
        let mut batch = sled::Batch::default();
        // Keyed by position, so the cache gives the leads back in the pulled order (and
        // the analyses' float sums come out bit for bit the same).
        for (i, c) in leads.iter().enumerate() {
            let mut k = prefix(portal);
            k.push(b'l');
            k.extend_from_slice(&(i as u64).to_be_bytes());
            batch.insert(k, enc(c));
        }
        let mut head = prefix(portal);
        head.push(b'h');
        batch.insert(head, enc(pull));
        tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_round_trips_and_replaces_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.outcomes("p").unwrap().is_none());
        let plan = crate::backtest::generate::Plan {
            leads: 30,
            ..Default::default()
        };
        let leads = crate::backtest::generate::generate(&plan);
        let pull = OutcomePull {
            pulled_at: Utc::now(),
            leads: leads.len(),
            requests: 3,
        };
        store.put_outcomes("p", &pull, &leads).unwrap();
        store.put_outcomes("other", &pull, &leads[..2]).unwrap();
        let (got_pull, got) = store.outcomes("p").unwrap().unwrap();
        assert_eq!(got_pull, pull);
        assert_eq!(got, leads);
        store.put_outcomes("p", &pull, &leads[..5]).unwrap();
        assert_eq!(store.outcomes("p").unwrap().unwrap().1.len(), 5);
        assert_eq!(store.outcomes("other").unwrap().unwrap().1.len(), 2);
    }
}
