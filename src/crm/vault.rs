//! One token vault for every OAuth flow (Bitrix24 apps, amoCRM integrations).
//!
//! Refresh tokens are single-use once rotated, so the newest pair must survive a crash
//! and a restart must not fall back to the spent token in the config. The vault keeps
//! the pair in sled's `meta` tree under `oauth:<crm>:<portal>` as
//! `{"seed": <fingerprint of the config's refresh token>, "pair": {…}}` and flushes it
//! before the new access token is used.
//!
//! **Precedence.** A stored pair wins while it descends from the refresh token the
//! config names (same fingerprint); when the admin re-authorizes and puts a new token
//! into the config, the config wins and the stale pair is ignored. A pair stored before
//! the vault existed has no seed and is trusted once (the old rule), then re-sealed.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::store::{Store, StoreError};

/// The rotated tokens of one portal in the store.
#[derive(Clone)]
pub struct TokenVault {
    store: Arc<Store>,
    key: String,
    legacy_key: Option<String>,
    seed: String,
}

impl std::fmt::Debug for TokenVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVault")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The store key of a portal's rotated OAuth pair.
pub fn vault_key(crm: &str, portal: &str) -> String {
    format!("oauth:{crm}:{portal}")
}

/// FNV-1a: a stable fingerprint of the config's refresh token (never the token itself).
pub fn fingerprint(secret: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in secret.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl TokenVault {
    /// The vault of `portal` of `crm`, whose chain starts at `config_refresh_token`.
    pub fn new(
        store: Arc<Store>,
        crm: &str,
        portal: &str,
        config_refresh_token: &SecretString,
    ) -> Self {
        TokenVault {
            store,
            key: vault_key(crm, portal),
            legacy_key: None,
            seed: fingerprint(config_refresh_token.expose_secret()),
        }
    }

    /// Also read `key` when the vault's own key is empty (where a release before the
    /// vault kept the pair), so an upgrade does not fall back to a spent token.
    pub fn with_legacy_key(mut self, key: String) -> Self {
        self.legacy_key = Some(key);
        self
    }

    /// The stored pair (the CRM's own JSON), if there is one the config still agrees with.
    pub fn load(&self) -> Result<Option<Value>, StoreError> {
        let mut raw = self.store.meta_get(&self.key)?;
        if raw.is_none() {
            if let Some(legacy) = &self.legacy_key {
                raw = self.store.meta_get(legacy)?;
            }
        }
        let Some(raw) = raw else { return Ok(None) };
        let Ok(doc) = serde_json::from_str::<Value>(&raw) else {
            tracing::warn!(key = %self.key, "stored OAuth tokens are not JSON; using the config's");
            return Ok(None);
        };
        match (doc.get("seed").and_then(Value::as_str), doc.get("pair")) {
            (Some(seed), Some(pair)) if seed == self.seed => Ok(Some(pair.clone())),
            (Some(_), _) => {
                tracing::warn!(key = %self.key, "the config names a different refresh token than the stored pair descends from; using the config's");
                Ok(None)
            }
            // Written before the vault: the whole document is the pair.
            (None, _) => Ok(Some(doc)),
        }
    }

    fn write(&self, pair: Value) -> Result<(), StoreError> {
        let doc = json!({ "seed": self.seed, "pair": pair });
        self.store.meta_set(&self.key, &doc.to_string())
    }

    /// Store a new pair and flush it (blocking: for clients whose refresh callback is
    /// synchronous; it runs about once an hour and an fsync is well under a millisecond).
    pub fn save_blocking(&self, pair: Value) -> Result<(), StoreError> {
        self.write(pair)?;
        self.store.flush_blocking()
    }

    /// Store a new pair and flush it before returning.
    pub async fn save(&self, pair: Value) -> Result<(), StoreError> {
        self.write(pair)?;
        self.store.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        (dir, store)
    }

    #[test]
    fn fingerprint_is_stable_and_distinguishes_tokens() {
        assert_eq!(fingerprint("abc"), "e71fa2190541574b");
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
    }

    #[tokio::test]
    async fn persists_and_obeys_a_new_config_token() {
        let (_dir, store) = store();
        let seed = SecretString::from("r0");
        let v = TokenVault::new(store.clone(), "amocrm", "amo", &seed);
        assert!(v.load().unwrap().is_none());
        v.save(json!({"refresh_token": "r1"})).await.unwrap();
        let raw = store
            .meta_get(&vault_key("amocrm", "amo"))
            .unwrap()
            .unwrap();
        assert!(raw.contains("\"seed\"") && !raw.contains("r0"));
        let again = TokenVault::new(store.clone(), "amocrm", "amo", &seed);
        assert_eq!(again.load().unwrap().unwrap()["refresh_token"], "r1");
        // The admin re-authorized and put a new token into the config: it wins.
        let reauth = TokenVault::new(store, "amocrm", "amo", &SecretString::from("r0-new"));
        assert!(reauth.load().unwrap().is_none());
    }

    #[test]
    fn pairs_from_before_the_vault_are_read_and_resealed() {
        let (_dir, store) = store();
        store
            .meta_set("old-key", &json!({"refresh_token": "r5"}).to_string())
            .unwrap();
        let v = TokenVault::new(store.clone(), "bitrix24", "p", &SecretString::from("r0"))
            .with_legacy_key("old-key".into());
        assert_eq!(v.load().unwrap().unwrap()["refresh_token"], "r5");
        v.save_blocking(json!({"refresh_token": "r6"})).unwrap();
        assert_eq!(v.load().unwrap().unwrap()["refresh_token"], "r6");
        // Sealed now: a new config token wins over it.
        let reauth = TokenVault::new(store, "bitrix24", "p", &SecretString::from("r9"))
            .with_legacy_key("old-key".into());
        assert!(reauth.load().unwrap().is_none());
    }
}
