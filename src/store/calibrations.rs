//! Each portal's score → win probability mapping, as the last `backtest --portal`
//! computed it from the portal's outcomes; the daemon writes "72 ≈ 18%" from it to the
//! optional probability field, so the mapping is refreshed whenever the backtest is run
//! again.

use super::{Store, StoreError};
use crate::backtest::calibration::Calibration;

fn key(portal: &str) -> String {
    format!("calibration:{portal}")
}

impl Store {
    /// Keep `portal`'s calibration (replacing the previous one).
    pub fn put_calibration(&self, portal: &str, c: &Calibration) -> Result<(), StoreError> {
        let text = serde_json::to_string(c).map_err(|source| StoreError::Corrupt {
            tree: "meta",
            source,
        })?;
        self.meta_set(&key(portal), &text)
    }

    /// `portal`'s calibration, if a backtest computed one (an unreadable one counts as none).
    pub fn calibration(&self, portal: &str) -> Result<Option<Calibration>, StoreError> {
        Ok(self
            .meta_get(&key(portal))?
            .and_then(|t| serde_json::from_str(&t).ok()))
    }
}
