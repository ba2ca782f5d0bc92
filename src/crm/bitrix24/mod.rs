//! Bitrix24: everything leadscore knows about this CRM, in one folder.
//!
//! - [`settings`]: the `[[portal]]` keys of a Bitrix24 portal and their validation;
//! - [`webhook`]: outgoing-webhook decoding for the intake;
//! - this module: the adapter ([`Bitrix24Crm`], one paced client per portal), split by
//!   concern into `fetch`, `write`, `tasks`, `setup` and `classify`.
//!
//! Everything goes through one paced [`Client`] per portal and is packed into `batch`
//! requests of 49 leads (the pipeline's batch size for Bitrix24): fetching them is one
//! `crm.lead.list` filtered by the ids plus the activity lists (see `fetch`), a score
//! write-back is 1 request (49 `crm.lead.update` and one `crm.lead.list` reading back
//! the modification stamps the writes produced, for the sweep).
//! Lead data is read with `crm.lead.list` and written with `crm.lead.update` (see the
//! client module for why these and not `crm.item.*`). The field mapping and the task
//! settings are read per call from the pipeline's live snapshot, so a config reload
//! never builds a second client (or limiter, or token holder) for a portal.

mod classify;
mod entity;
mod fetch;
mod link;
mod lookup;
mod outcomes;
#[cfg(any(test, feature = "demo"))]
mod seed_history;
mod setup;
pub mod settings;
mod tasks;
pub mod webhook;
mod write;

#[cfg(test)]
mod sandbox_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadscore_bitrix24::client::{
    Auth, Client, ClientConfig, LimitsSnapshot, OAuth, OAuthTokens, TokenCallback, UsageCallback,
    DEFAULT_OAUTH_SERVER,
};
use leadscore_bitrix24::error::Error;
use leadscore_bitrix24::limiter::{OperatingConfig, PacingConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

pub use classify::ActivityClassifier;
#[cfg(any(test, feature = "demo"))]
pub use seed_history::{example_config_for, seed_history};

use super::vault::TokenVault;
use super::{
    Changed, Crm, CrmAdmin, CrmError, FetchBatch, FetchOutcome, Fetched, FieldSetup, LeadId,
    MethodBudget, PacingState, ScoreWrite, TaskRef, TaskRequest, WriteResult,
};
use super::registry::{Adapter, CrmEntry};
use crate::config::{keys_of, FieldsSection, Portal, TaskSection};
use crate::store::Store;
use settings::Settings;

/// The name of this CRM in config files and webhook paths.
pub const NAME: &str = "bitrix24";

/// This CRM's line in the registry.
pub const ENTRY: CrmEntry = CrmEntry {
    name: NAME,
    keys: keys_of::<settings::Keys>,
    secrets: settings::SECRETS,
    activity_attrs: classify::ACTIVITY_ATTRS,
    classify_row: classify::classify_row,
    settings: settings::parse,
    decode: webhook::decode,
    lead_url: link::lead_url,
    build,
};

/// The registry's builder: one adapter (one client, limiter and token holder) per portal.
fn build(portal: &Portal, store: &Arc<Store>) -> anyhow::Result<Adapter> {
    let crm = Bitrix24Crm::new(portal, store.clone()).map_err(|e| {
        anyhow::anyhow!("portal {}: cannot build the Bitrix24 client: {e}", portal.id)
    })?;
    Ok(Adapter::of(crm))
}

/// Bitrix24's owner type id of leads.
const LEAD_OWNER_TYPE: u32 = 1;

/// Write batches per worker turn. A turn's reads (the activity events' owners, the
/// records, their new activities) cost about one `batch` however many leads it carries
/// (a command reads 50), while its writes cost one `batch` per 49 records; turns of one
/// write batch spent three requests on 49 leads, five write batches spend about seven
/// on 245 (issue 19: 300 leads in five waves went from 0.44 requests per lead towards
/// 0.2).
const WRITE_BATCHES_PER_TURN: usize = 5;

/// Field names `setup` creates when the config names none (Bitrix24 prefixes `UF_CRM_`).
const DEFAULT_SCORE_FIELD: &str = "UF_CRM_LEADSCORE";
const DEFAULT_TIER_FIELD: &str = "UF_CRM_LEADSCORE_TIER";
const DEFAULT_BREAKDOWN_FIELD: &str = "UF_CRM_LEADSCORE_WHY";

/// Activity columns read for scoring, task look-ups and lead resolution.
const ACTIVITY_SELECT: [&str; 14] = [
    "ID",
    "OWNER_ID",
    "OWNER_TYPE_ID",
    "TYPE_ID",
    "PROVIDER_ID",
    "PROVIDER_TYPE_ID",
    "SUBJECT",
    "DESCRIPTION",
    "DIRECTION",
    "COMPLETED",
    "START_TIME",
    "CREATED",
    "RESPONSIBLE_ID",
    "END_TIME",
];

/// Why a `Bitrix24Crm` could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The portal's credentials are not Bitrix24 ones.
    #[error("portal {0}: no Bitrix24 webhook_url or OAuth credentials")]
    NotBitrix24(String),
    #[error(transparent)]
    Client(#[from] Error),
    #[error("portal {portal}: cannot read the rotated OAuth tokens from the store: {detail}")]
    Store { portal: String, detail: String },
}

/// The `Crm` of one Bitrix24 portal.
#[derive(Debug, Clone)]
pub struct Bitrix24Crm {
    portal_id: String,
    client: Client,
    classifier: ActivityClassifier,
    max_activity_pages: u32,
    outcomes: settings::OutcomeMap,
    /// Leads, deals or both (`entities`): which events and activities lead somewhere.
    entities: settings::Entities,
}

/// Store key of the portal's limits (bucket level and operating time) between runs.
fn limits_key(portal: &str) -> String {
    format!("limits:bitrix24:{portal}")
}


impl Bitrix24Crm {
    /// Build from the resolved config. For OAuth portals, a refresh token rotated into
    /// the store by an earlier run wins over the one in the config (which is single-use
    /// once rotated), and every new pair is written back to the store and flushed.
    pub fn new(portal: &Portal, store: Arc<Store>) -> Result<Bitrix24Crm, BuildError> {
        Self::with_oauth_server(portal, store, DEFAULT_OAUTH_SERVER)
    }

    /// [`Bitrix24Crm::new`] with another OAuth token endpoint (tests point it at a
    /// sandbox on 127.0.0.1; webhook portals ignore it).
    pub fn with_oauth_server(
        portal: &Portal,
        store: Arc<Store>,
        oauth_server: &str,
    ) -> Result<Bitrix24Crm, BuildError> {
        let Some(settings) = portal.settings_of::<Settings>() else {
            return Err(BuildError::NotBitrix24(portal.id.clone()));
        };
        let auth = match &settings.auth {
            settings::Auth::Webhook { url } => Auth::WebhookUrl(url.clone()),
            settings::Auth::OAuth {
                base_url,
                client_id,
                client_secret,
                refresh_token,
            } => {
                let vault = TokenVault::new(store.clone(), NAME, &portal.id, refresh_token);
                let stored = vault.load().map_err(|e| BuildError::Store {
                    portal: portal.id.clone(),
                    detail: e.to_string(),
                })?;
                let tokens = stored
                    .as_ref()
                    .and_then(tokens_from_json)
                    .unwrap_or_else(|| OAuthTokens {
                        access_token: None,
                        refresh_token: refresh_token.clone(),
                        expires_at: None,
                    });
                // Durable before the new access token is used (the vault flushes).
                let persist: TokenCallback = Arc::new(move |t: &OAuthTokens| {
                    if let Err(e) = vault.save_blocking(tokens_to_json(t)) {
                        tracing::error!(error = %e, "cannot store rotated Bitrix24 OAuth tokens");
                    }
                });
                Auth::OAuth(OAuth {
                    base_url: base_url.clone(),
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    tokens,
                    on_refresh: persist,
                    oauth_server: oauth_server.to_string(),
                })
            }
        };
        let mut config = Self::client_config(portal);
        let limits_key = limits_key(&portal.id);
        config.restore = store
            .meta_get(&limits_key)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str::<LimitsSnapshot>(&s).ok());
        if let Some(r) = &config.restore {
            let spent: f64 = r
                .operating
                .methods
                .values()
                .flat_map(|b| b.iter().map(|(_, s)| s))
                .sum();
            tracing::info!(portal = %portal.id, bucket_level = r.bucket_level, operating_secs = spent, "restored the Bitrix24 limits left by the previous run");
        }
        // Kept with every answer; the pipeline's flush after each batch makes it durable.
        let on_usage: UsageCallback = Arc::new(move |snap: &LimitsSnapshot| {
            if let Ok(json) = serde_json::to_string(snap) {
                if let Err(e) = store.meta_set(&limits_key, &json) {
                    tracing::warn!(error = %e, "cannot keep the Bitrix24 limits in the store");
                }
            }
        });
        config.on_usage = Some(on_usage);
        let client = Client::new(auth, config)?;
        Ok(Self::with_client(portal, client))
    }

    /// Build around a ready client (tests, the demo, a custom OAuth server).
    pub fn with_client(portal: &Portal, client: Client) -> Bitrix24Crm {
        Bitrix24Crm {
            portal_id: portal.id.clone(),
            client,
            classifier: ActivityClassifier::default(),
            max_activity_pages: 4,
            outcomes: portal
                .settings_of::<Settings>()
                .map(|s| s.outcomes.clone())
                .unwrap_or_default(),
            entities: portal
                .settings_of::<Settings>()
                .map(|s| s.entities)
                .unwrap_or_default(),
        }
    }

    /// The client settings a portal's config implies (its rate limit as the bucket).
    pub fn client_config(portal: &Portal) -> ClientConfig {
        ClientConfig {
            pacing: PacingConfig {
                per_second: portal.rate_limit.per_second,
                burst: portal.rate_limit.burst,
                ..PacingConfig::standard()
            },
            operating: OperatingConfig {
                limit_secs: portal.rate_limit.operating_limit_secs.unwrap_or(480.0),
                basket_len: Duration::from_secs(
                    portal
                        .rate_limit
                        .operating_window_secs
                        .unwrap_or(600)
                        .max(10),
                ) / 10,
                ..OperatingConfig::default()
            },
            label: portal.id.clone(),
            ..ClientConfig::default()
        }
    }

    /// Replace the subject-tag rules for website behaviour.
    pub fn with_classifier(mut self, classifier: ActivityClassifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// Read at most this many pages (50 each, newest first) of activities per lead.
    pub fn with_max_activity_pages(mut self, pages: u32) -> Self {
        self.max_activity_pages = pages.max(1);
        self
    }

    /// The portal this CRM talks to (config id).
    pub fn portal_id(&self) -> &str {
        &self.portal_id
    }

    /// The underlying client (pacing counters for metrics and benchmarks).
    pub fn client(&self) -> &Client {
        &self.client
    }

}

/// The vault's JSON of a Bitrix24 token set.
fn tokens_to_json(t: &OAuthTokens) -> Value {
    json!({
        "access_token": t.access_token.as_ref().map(|s| s.expose_secret().to_string()),
        "refresh_token": t.refresh_token.expose_secret(),
        "expires_at": t.expires_at.map(|d| d.to_rfc3339()),
    })
}

/// A Bitrix24 token set from the vault's JSON (`None`: not one).
fn tokens_from_json(v: &Value) -> Option<OAuthTokens> {
    Some(OAuthTokens {
        access_token: v
            .get("access_token")
            .and_then(Value::as_str)
            .map(|s| SecretString::from(s.to_string())),
        refresh_token: SecretString::from(v.get("refresh_token")?.as_str()?.to_string()),
        expires_at: v
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc)),
    })
}

#[async_trait]
impl Crm for Bitrix24Crm {
    fn pacing(&self) -> Option<PacingState> {
        let s = self.client.stats();
        let now = Utc::now();
        let methods = self
            .client
            .operating_usage()
            .into_iter()
            .map(|u| MethodBudget {
                method: u.method,
                used_secs: u.used_secs,
                limit_secs: u.limit_secs,
                paused_until: u
                    .paused_for
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| now + d),
            })
            .collect();
        Some(PacingState {
            requests: s.requests_sent,
            limit_errors: s.limit_errors,
            wait_secs: (s.total_wait + s.operating_wait).as_secs_f64(),
            blocked: false,
            methods,
        })
    }

    async fn fetch(
        &self,
        fields: &FieldsSection,
        lead_ids: &[LeadId],
    ) -> Result<BTreeMap<LeadId, Fetched>, CrmError> {
        self.fetch_full(fields, lead_ids).await
    }

    async fn fetch_batch(
        &self,
        fields: &FieldsSection,
        batch: FetchBatch<'_>,
    ) -> Result<FetchOutcome, CrmError> {
        self.fetch_turn(fields, batch).await
    }

    async fn write_scores(
        &self,
        fields: &FieldsSection,
        writes: &[ScoreWrite],
    ) -> Result<BTreeMap<LeadId, WriteResult>, CrmError> {
        self.write(fields, writes).await
    }

    fn batch_size(&self) -> usize {
        self.write_room() * WRITE_BATCHES_PER_TURN
    }

    async fn find_task(
        &self,
        task: &TaskSection,
        lead_id: &str,
        marker: &str,
    ) -> Result<Option<TaskRef>, CrmError> {
        self.find(task, lead_id, marker).await
    }

    async fn find_tasks(
        &self,
        task: &TaskSection,
        wanted: &[(LeadId, String)],
    ) -> Result<BTreeMap<LeadId, Option<TaskRef>>, CrmError> {
        self.find_many(task, wanted).await
    }

    async fn create_task(
        &self,
        task: &TaskSection,
        request: &TaskRequest,
    ) -> Result<TaskRef, CrmError> {
        self.create(task, request).await
    }

    async fn create_tasks(
        &self,
        task: &TaskSection,
        requests: &[TaskRequest],
    ) -> Vec<Result<TaskRef, CrmError>> {
        self.create_many(task, requests).await
    }

    async fn task_open(
        &self,
        task: &TaskSection,
        lead_id: &str,
        task_id: &str,
    ) -> Result<bool, CrmError> {
        self.open(task, lead_id, task_id).await
    }

    async fn changed_since(&self, since: DateTime<Utc>) -> Result<Vec<Changed>, CrmError> {
        self.changed(since).await
    }

    async fn closed_leads(
        &self,
        fields: &FieldsSection,
        progress: &super::PullProgressFn,
    ) -> Result<super::ClosedLeads, CrmError> {
        self.read_outcomes(fields, progress).await
    }

    async fn find_lead_by_contact(
        &self,
        who: &crate::tracking::contact::ContactPoint,
    ) -> Result<Option<LeadId>, CrmError> {
        self.lead_by_contact(who).await
    }
}

#[async_trait]
impl CrmAdmin for Bitrix24Crm {
    async fn setup_fields(
        &self,
        fields: &FieldsSection,
        tiers: &[(String, String)],
    ) -> Result<FieldSetup, CrmError> {
        self.setup(fields, tiers).await
    }
}

/// Map a client error to the pipeline's terms.
pub fn to_crm(e: Error) -> CrmError {
    match &e {
        Error::Overload => CrmError::Blocked(e.to_string()),
        // The method is over (or held back under) its operating-time budget: a pause,
        // not a failure of the lead.
        Error::OperationTimeLimit { .. } => CrmError::Paused {
            message: e.to_string(),
            retry_after: e
                .retry_after()
                .unwrap_or(std::time::Duration::from_secs(10)),
        },
        Error::Auth { .. } => CrmError::Auth(e.to_string()),
        _ if e.is_retryable() => CrmError::Transient {
            message: e.to_string(),
            retry_after: e.retry_after(),
        },
        _ => CrmError::Rejected(e.to_string()),
    }
}

impl Bitrix24Crm {
    /// Does this portal score `entity`?
    fn scores(&self, entity: entity::Entity) -> bool {
        match entity {
            entity::Entity::Lead => self.entities.lead,
            entity::Entity::Deal => self.entities.deal,
        }
    }
}

/// Bitrix24 ids are decimal integers; anything else never reaches the API.
fn is_numeric_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit())
}
