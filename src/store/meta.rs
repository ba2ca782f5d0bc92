//! Small persistent values (sweep cursor, rotated tokens, saved limiter state), kept
//! apart from the lead trees so any module can park a string under its own key.

use super::{Store, StoreError};

impl Store {
    /// A small persistent value (sweep cursor, rotated tokens).
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Set a small persistent value.
    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta.insert(key.as_bytes(), value.as_bytes())?;
        Ok(())
    }
}
