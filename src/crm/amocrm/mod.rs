//! amoCRM (and Kommo): everything leadscore knows about this CRM, in one folder.
//!
//! - [`settings`]: the `[[portal]]` keys of an amoCRM portal and their validation;
//! - [`webhook`]: webhook decoding for the intake;
//! - this module: the adapter ([`AmocrmCrm`]), split by concern into `fetch`, `write`,
//!   `tasks` and `setup`; rotated OAuth pairs live in the shared [`crate::crm::vault`].
//!
//! Everything goes through one [`Client`] per portal, paced at the portal's rate (7
//! requests/s by default) and batched as the API allows. Fetching `n` leads costs
//! `ceil(n/250)` lead lists (with contacts), as many contact and company lists, the
//! events (for leads created in the last minutes one read of the account's feed since
//! then, usually one request; else `ceil(n/10)` lists, amoCRM filters events by at most
//! 10 entities per request: see `events`) and one notes list per 250 notes the events
//! mention; writing `n` scores costs `ceil(n/50)` PATCHes, `n` tasks `ceil(n/50)` POSTs.
//! So the pipeline hands over up to [`TURN_LEADS`] leads per turn: one lead page.
//!
//! **Lead data.** Name, price, status, responsible user and times come from the lead;
//! job title (`POSITION`), e-mails and phones from the main contact's system fields;
//! the company name from the lead's company (else the contact's). `[portal.fields.map]`
//! maps neutral names (`industry`, `revenue`, `employees`, `region`, `source`,
//! `custom.<x>`…) to custom field ids, looked up on the lead, then the company, then
//! the contact (a non-numeric value is matched as a field code or name instead), and
//! applied by the shared [`crate::crm::mapping`].
//!
//! **Activities.** Events of the lead: `incoming_call`/`outgoing_call` → call,
//! `incoming_mail`/`outgoing_mail` → e-mail, `incoming_chat_message` → an *incoming
//! e-mail* with subject "chat" (a written message from the client, scored like an
//! incoming e-mail), `incoming_sms` → custom kind `sms`, `link_followed` → page view
//! with its URL, `task_completed` → task, `lead_status_changed` → custom kind
//! `status_change`. Common notes on the lead (found through their `common_note_added`
//! events, since the notes list cannot be filtered by lead) are comments, except that a note whose
//! text starts with a **tag** is website behaviour that amoCRM has no event for: whatever
//! records it (a site tracker, a form handler, a Salesbot step, a rep) adds a common
//! note like `[demo] Demo request from /pricing`, `[download] Price list 2026`,
//! `[page] https://site.ru/pricing`, `[form] Contact form`, `[meeting] …` or
//! `[email_open] …`; the text after the tag is the subject, and a URL in it is the
//! activity's URL. The tags are the shared table of [`crate::crm::tags`], the same the
//! Bitrix24 integration reads from activity subjects. Notes leadscore posts itself start with `[leadscore]` and are ignored.

mod change_feed;
mod events;
mod fetch;
mod fit_history;
mod link;
mod lookup;
mod outcomes;
#[cfg(feature = "demo")]
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
use leadscore_amocrm::auth::{Auth, OAuthSettings, TokenPair, TokenStore};
use leadscore_amocrm::client::{Client, ClientConfig};
use leadscore_amocrm::error::Error;
use leadscore_amocrm::limiter::LimiterConfig;

pub use fetch::{event_activity, note_activity};
#[cfg(feature = "demo")]
pub use seed_history::{backtest_config_for, seed_history};

use super::vault::TokenVault;
use super::{
    Changed, ClosedLeads, Crm, CrmAdmin, CrmError, FetchBatch, FetchOutcome, Fetched, FieldSetup, LeadId, PacingState, PullProgressFn, ScoreWrite,
    TaskRef, TaskRequest, WriteResult,
};
use super::registry::{Adapter, CrmEntry};
use crate::config::{keys_of, FieldsSection, Portal, TaskSection};
use crate::store::Store;
use settings::Settings;

/// The name of this CRM in config files and webhook paths.
pub const NAME: &str = "amocrm";

/// This CRM's line in the registry.
pub const ENTRY: CrmEntry = CrmEntry {
    name: NAME,
    keys: keys_of::<settings::Keys>,
    secrets: settings::SECRETS,
    activity_attrs: fetch::ACTIVITY_ATTRS,
    classify_row: fetch::classify_row,
    settings: settings::parse,
    decode: webhook::decode,
    lead_url: link::lead_url,
    build,
};

/// The registry's builder: one adapter (one client, limiter and token holder) per portal.
fn build(portal: &Portal, store: &Arc<Store>) -> anyhow::Result<Adapter> {
    let crm = AmocrmCrm::new(portal, store.clone())
        .map_err(|e| anyhow::anyhow!("portal {}: cannot build the amoCRM client: {e}", portal.id))?;
    Ok(Adapter::of(crm))
}

/// Event types read for scoring (others are never fetched).
pub const EVENT_TYPES: &[&str] = &[
    "incoming_call",
    "outgoing_call",
    "incoming_mail",
    "outgoing_mail",
    "incoming_chat_message",
    "incoming_sms",
    "link_followed",
    "task_completed",
    "lead_status_changed",
    "common_note_added",
];

/// Leads per worker turn: one page of `filter[id][]` (250, amoCRM's list limit); the
/// turn's writes and tasks go in arrays of 50 inside it.
pub const TURN_LEADS: usize = leadscore_amocrm::client::MAX_LIST_IDS;

/// Prefix of the notes leadscore posts (ignored when reading activity back).
pub const OWN_NOTE_PREFIX: &str = "[leadscore]";

/// Why an amoCRM portal could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The portal's credentials are not amoCRM ones.
    #[error("portal {0}: no amoCRM long-lived token or OAuth credentials")]
    NotAmocrm(String),
    #[error("portal {portal}: {source}")]
    Client {
        portal: String,
        #[source]
        source: Error,
    },
}

/// amoCRM's token store over the shared vault (flushed before a new pair is used).
struct VaultTokenStore(TokenVault);

#[async_trait]
impl TokenStore for VaultTokenStore {
    async fn load(&self) -> Result<Option<TokenPair>, String> {
        match self.0.load().map_err(|e| e.to_string())? {
            Some(pair) => TokenPair::from_json(&pair.to_string()).map(Some),
            None => Ok(None),
        }
    }

    async fn save(&self, pair: &TokenPair) -> Result<(), String> {
        let json = serde_json::from_str(&pair.to_json()).map_err(|e| e.to_string())?;
        self.0.save(json).await.map_err(|e| e.to_string())
    }
}

/// The `Crm` of one amoCRM account.
#[derive(Clone)]
pub struct AmocrmCrm {
    portal_id: String,
    client: Arc<Client>,
    /// Only events this recent are read (rules look back weeks, not years).
    event_window: Duration,
    /// Which stages are won or lost (outcome pulls).
    outcomes: settings::OutcomeMap,
}

impl std::fmt::Debug for AmocrmCrm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmocrmCrm")
            .field("portal_id", &self.portal_id)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl AmocrmCrm {
    /// Build from the resolved config. With OAuth, the pair rotated into the store by an
    /// earlier run wins over the config's refresh token (spent once rotated), and
    /// every new pair is written to the store and flushed before it is used.
    pub fn new(portal: &Portal, store: Arc<Store>) -> Result<AmocrmCrm, BuildError> {
        let Some(settings) = portal.settings_of::<Settings>() else {
            return Err(BuildError::NotAmocrm(portal.id.clone()));
        };
        let (base_url, auth) = match &settings.auth {
            settings::Auth::LongLived { base_url, token } => {
                (base_url, Auth::LongLived(token.clone()))
            }
            settings::Auth::OAuth {
                base_url,
                client_id,
                client_secret,
                redirect_uri,
                refresh_token,
            } => (
                base_url,
                Auth::OAuth {
                    settings: OAuthSettings {
                        client_id: client_id.clone(),
                        client_secret: client_secret.clone(),
                        redirect_uri: redirect_uri.clone(),
                        initial_refresh_token: refresh_token.clone(),
                        refresh_ahead: Duration::from_secs(300),
                    },
                    store: Arc::new(VaultTokenStore(
                        TokenVault::new(store, NAME, &portal.id, refresh_token)
                            .with_legacy_key(format!("amocrm_tokens:{}", portal.id)),
                    )),
                },
            ),
        };
        let client =
            Client::new(Self::client_config(portal, base_url), auth).map_err(|source| {
                BuildError::Client {
                    portal: portal.id.clone(),
                    source,
                }
            })?;
        Ok(Self::with_client(portal, Arc::new(client)))
    }

    /// Build around a ready client (tests, the demo).
    pub fn with_client(portal: &Portal, client: Arc<Client>) -> AmocrmCrm {
        AmocrmCrm {
            portal_id: portal.id.clone(),
            client,
            event_window: Duration::from_secs(180 * 86_400),
            outcomes: portal
                .settings_of::<Settings>()
                .map(|s| s.outcomes.clone())
                .unwrap_or_default(),
        }
    }

    /// The client settings a portal's config implies (its rate limit).
    pub fn client_config(portal: &Portal, base_url: &str) -> ClientConfig {
        let mut c = ClientConfig::new(base_url);
        c.limiter = LimiterConfig {
            per_second: portal.rate_limit.per_second,
            burst: portal.rate_limit.burst,
            ..LimiterConfig::default()
        };
        c
    }

    /// Read events this far back (default 180 days).
    pub fn with_event_window(mut self, window: Duration) -> Self {
        self.event_window = window;
        self
    }

    /// The underlying client (counters, blocked flag for metrics and benchmarks).
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The portal this CRM talks to (config id).
    pub fn portal_id(&self) -> &str {
        &self.portal_id
    }
}

#[async_trait]
impl Crm for AmocrmCrm {
    fn batch_size(&self) -> usize {
        TURN_LEADS
    }

    fn pacing(&self) -> Option<PacingState> {
        let s = self.client.stats();
        Some(PacingState {
            methods: Vec::new(),
            requests: s.requests,
            limit_errors: s.rate_limited,
            wait_secs: s.total_wait.as_secs_f64(),
            blocked: s.blocked,
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
        // amoCRM's webhooks name the lead: there are no activity subjects to resolve.
        Ok(FetchOutcome {
            leads: self.fetch_reads(fields, batch.leads).await?,
            activity_leads: batch.activities.iter().map(|a| (a.clone(), None)).collect(),
        })
    }

    async fn write_scores(
        &self,
        fields: &FieldsSection,
        writes: &[ScoreWrite],
    ) -> Result<BTreeMap<LeadId, WriteResult>, CrmError> {
        self.write(fields, writes).await
    }

    async fn find_task(
        &self,
        task: &TaskSection,
        lead_id: &str,
        marker: &str,
    ) -> Result<Option<TaskRef>, CrmError> {
        self.find(task, lead_id, marker).await
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
        progress: &PullProgressFn,
    ) -> Result<ClosedLeads, CrmError> {
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
impl CrmAdmin for AmocrmCrm {
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
        Error::Blocked { .. } => CrmError::Blocked(e.to_string()),
        Error::Unauthorized { .. } | Error::TokenRevoked { .. } => CrmError::Auth(e.to_string()),
        _ if e.is_retryable() => CrmError::Transient {
            message: e.to_string(),
            retry_after: e.retry_after(),
        },
        _ => CrmError::Rejected(e.to_string()),
    }
}

/// amoCRM ids are decimal integers; anything else never reaches the API.
fn parse_id(s: &str) -> Option<u64> {
    let s = s.trim();
    (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// The same error again, for every lead of a failed request.
fn clone_err(e: &CrmError) -> CrmError {
    e.clone()
}
