//! Outgoing webhooks the way amoCRM sends them: API v2 field names in a
//! `application/x-www-form-urlencoded` body with PHP bracket keys
//! (`leads[update][0][custom_fields][0][values][0][value]=…`), every lead changed by one
//! request in one POST per subscription, `account[...]` keys last, User-Agent
//! `amoCRM-WebHook-client/1.0`; delivered asynchronously, once, without retries. A
//! subscription that keeps failing (more than `failures` within `within`, the last one
//! failed) is disabled, as amoCRM does after 100 failures in two hours.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{FixedOffset, TimeZone};
use leadscore_sandbox_kit::{lock, outbox, Courier, Outbox, OutboxQueue, Outgoing};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::model::{FieldType, Lead, Note};
use super::query::encode;
use super::store::{now_unix, State};
use super::{Delivery, WebhookInfo, WebhookPolicy};

/// How many deliveries may be in flight at once.
const CONCURRENCY: usize = 4;

/// Most delivery records kept (the oldest tenth is dropped past it).
const DELIVERY_LOG_CAP: usize = 50_000;

/// The account's time zone for v2 `date_create` strings (Moscow).
const ACCOUNT_OFFSET_SECS: i32 = 3 * 3600;

/// One entity change in v2 form, before it is numbered inside a body.
#[derive(Clone, Debug)]
pub(crate) struct HookItem {
    /// Subscription code it belongs to (`update_lead`).
    pub setting: &'static str,
    /// `leads`.
    pub entity: &'static str,
    /// `add`, `update`, `status`, `responsible`, `note`.
    pub action: &'static str,
    /// Keys below `{entity}[{action}][{i}]`, with their values.
    pub pairs: Vec<(String, String)>,
}

fn setting_for(action: &str) -> &'static str {
    match action {
        "add" => "add_lead",
        "update" => "update_lead",
        "status" => "status_lead",
        "responsible" => "responsible_lead",
        "note" => "note_lead",
        _ => "update_lead",
    }
}

fn action_name(action: &str) -> &'static str {
    match action {
        "add" => "add",
        "status" => "status",
        "responsible" => "responsible",
        "note" => "note",
        _ => "update",
    }
}

/// A lead in the v2 shape of captured `leads[add|update|status|responsible]` hooks.
pub(crate) fn lead_item(
    st: &State,
    lead: &Lead,
    action: &str,
    old_status: Option<(u64, u64)>,
) -> HookItem {
    let mut p: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| p.push((k.to_owned(), v));
    put("[id]", lead.id.to_string());
    put("[name]", lead.name.clone());
    put("[status_id]", lead.status_id.to_string());
    if let Some((s, _)) = old_status {
        put("[old_status_id]", s.to_string());
    }
    put("[price]", lead.price.to_string());
    put(
        "[responsible_user_id]",
        lead.responsible_user_id.to_string(),
    );
    put("[last_modified]", lead.updated_at.to_string());
    put("[modified_user_id]", lead.updated_by.to_string());
    put("[created_user_id]", lead.created_by.to_string());
    put("[date_create]", lead.created_at.to_string());
    put("[pipeline_id]", lead.pipeline_id.to_string());
    if action == "status" {
        if let Some((_, pl)) = old_status {
            put("[old_pipeline_id]", pl.to_string());
        }
    }
    for (k, tag) in lead.tags.iter().enumerate() {
        put(&format!("[tags][{k}][id]"), tag.id.to_string());
        put(&format!("[tags][{k}][name]"), tag.name.clone());
    }
    put("[account_id]", st.account_id.to_string());
    for (k, fv) in lead.fields.iter().enumerate() {
        let Some(field) = st.fields.get(&fv.field_id) else {
            continue;
        };
        put(&format!("[custom_fields][{k}][id]"), field.id.to_string());
        put(&format!("[custom_fields][{k}][name]"), field.name.clone());
        for (m, v) in fv.values.iter().enumerate() {
            let base = format!("[custom_fields][{k}][values][{m}]");
            match field.field_type {
                // Captured date values carry no `[value]` sub-key.
                FieldType::Date => put(&base, v.text()),
                FieldType::Checkbox => {
                    let on = v.value.as_bool().unwrap_or(false);
                    put(
                        &format!("{base}[value]"),
                        if on { "1" } else { "0" }.to_owned(),
                    );
                }
                _ => {
                    put(&format!("{base}[value]"), v.text());
                    if let Some(e) = v.enum_id {
                        put(&format!("{base}[enum]"), e.to_string());
                    }
                }
            }
        }
    }
    put("[created_at]", lead.created_at.to_string());
    put("[updated_at]", lead.updated_at.to_string());
    HookItem {
        setting: setting_for(action),
        entity: "leads",
        action: action_name(action),
        pairs: p,
    }
}

/// v2 numeric note types for the v4 names the sandbox knows (others map to 4, common).
fn v2_note_type(note_type: &str) -> u32 {
    match note_type {
        "call_in" => 10,
        "call_out" => 11,
        "service_message" | "extended_service_message" => 25,
        "sms_in" => 102,
        "sms_out" => 103,
        _ => 4,
    }
}

fn v2_date(unix: i64) -> String {
    let Some(tz) = FixedOffset::east_opt(ACCOUNT_OFFSET_SECS) else {
        return String::new();
    };
    match tz.timestamp_opt(unix, 0).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => String::new(),
    }
}

/// A lead note in the v2 shape of captured `leads[note]` hooks.
pub(crate) fn note_item(st: &State, note: &Note) -> HookItem {
    let text = match note.params.get("text") {
        Some(Value::String(s)) => s.clone(),
        _ => note.params.to_string(),
    };
    let date = v2_date(note.created_at);
    let pairs = vec![
        (
            "[note][element_type]",
            note.entity_type.v2_element_type().to_string(),
        ),
        ("[note][element_id]", note.entity_id.to_string()),
        (
            "[note][note_type]",
            v2_note_type(&note.note_type).to_string(),
        ),
        ("[note][text]", text),
        ("[note][account_id]", st.account_id.to_string()),
        ("[note][date_create]", date.clone()),
        ("[note][timestamp_x]", date),
        ("[note][created_by]", note.created_by.to_string()),
        ("[note][modified_by]", note.created_by.to_string()),
        ("[note][main_user_id]", note.responsible_user_id.to_string()),
        ("[note][group_id]", "0".to_owned()),
        ("[note][id]", note.id.to_string()),
        ("[note][created_at]", note.created_at.to_string()),
        ("[note][updated_at]", note.updated_at.to_string()),
    ];
    HookItem {
        setting: "note_lead",
        entity: "leads",
        action: "note",
        pairs: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

/// Identity placed in `account[...]`.
#[derive(Clone, Debug)]
pub(crate) struct AccountKeys {
    pub subdomain: String,
    pub id: u64,
    pub self_link: String,
}

/// Numbers the items per `{entity}[{action}]` and appends the account keys.
pub(crate) fn form_body(items: &[&HookItem], account: &AccountKeys) -> String {
    let mut counters: Vec<((&str, &str), usize)> = Vec::new();
    let mut parts = Vec::new();
    for item in items {
        let key = (item.entity, item.action);
        let i = match counters.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => {
                *n += 1;
                *n - 1
            }
            None => {
                counters.push((key, 1));
                0
            }
        };
        for (suffix, value) in &item.pairs {
            let k = format!("{}[{}][{}]{}", item.entity, item.action, i, suffix);
            parts.push(format!("{}={}", encode(&k), encode(value)));
        }
    }
    for (k, v) in [
        ("account[subdomain]", account.subdomain.clone()),
        ("account[id]", account.id.to_string()),
        ("account[_links][self]", account.self_link.clone()),
    ] {
        parts.push(format!("{}={}", encode(k), encode(&v)));
    }
    parts.join("&")
}

struct Hook {
    id: u64,
    destination: SecretString,
    settings: Vec<String>,
    sort: i64,
    created_by: u64,
    created_at: i64,
    updated_at: i64,
    disabled: bool,
    failures: VecDeque<Instant>,
    failed_total: usize,
}

/// One POST: every wanted item of one request, for one subscription.
pub(crate) struct Job {
    webhook_id: u64,
    destination: SecretString,
    settings: Vec<String>,
    body: String,
}

impl Outgoing for Job {
    fn destination(&self) -> &str {
        self.destination.expose_secret()
    }

    fn body(&self) -> String {
        self.body.clone()
    }
}

/// Subscriptions, the delivery queue and its record.
pub(crate) struct Hooks {
    hooks: Mutex<Vec<Hook>>,
    next_id: Mutex<u64>,
    outbox: Outbox<Job>,
    deliveries: Mutex<Vec<Delivery>>,
    policy: Mutex<WebhookPolicy>,
    account: AccountKeys,
}

impl Hooks {
    /// Subscriptions of `account`, and the queue their worker consumes.
    pub(crate) fn new(
        account: AccountKeys,
        policy: WebhookPolicy,
    ) -> (Arc<Self>, OutboxQueue<Job>) {
        let (outbox, queue) = outbox();
        let hooks = Arc::new(Self {
            hooks: Mutex::new(Vec::new()),
            next_id: Mutex::new(0),
            outbox,
            deliveries: Mutex::new(Vec::new()),
            policy: Mutex::new(policy),
            account,
        });
        (hooks, queue)
    }

    /// Adds a subscription; returns its id.
    pub(crate) fn add(&self, destination: SecretString, settings: &[&str]) -> u64 {
        let id = {
            let mut n = lock(&self.next_id);
            *n += 1;
            *n
        };
        let now = now_unix();
        lock(&self.hooks).push(Hook {
            id,
            destination,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            sort: 10,
            created_by: 0,
            created_at: now,
            updated_at: now,
            disabled: false,
            failures: VecDeque::new(),
            failed_total: 0,
        });
        id
    }

    /// `POST /api/v4/webhooks`: subscribes `destination`, or replaces the settings of
    /// the subscription it already has (and switches it back on).
    pub(crate) fn upsert(
        &self,
        destination: &str,
        settings: Vec<String>,
        sort: i64,
        user: u64,
    ) -> Value {
        let now = now_unix();
        let mut hooks = lock(&self.hooks);
        if let Some(h) = hooks
            .iter_mut()
            .find(|h| h.destination.expose_secret() == destination)
        {
            h.settings = settings;
            h.sort = sort;
            h.updated_at = now;
            h.disabled = false;
            h.failures.clear();
            return self.view(h);
        }
        let id = {
            let mut n = lock(&self.next_id);
            *n += 1;
            *n
        };
        hooks.push(Hook {
            id,
            destination: SecretString::from(destination.to_owned()),
            settings,
            sort,
            created_by: user,
            created_at: now,
            updated_at: now,
            disabled: false,
            failures: VecDeque::new(),
            failed_total: 0,
        });
        hooks.last().map_or(Value::Null, |h| self.view(h))
    }

    /// `DELETE /api/v4/webhooks`: unsubscribes `destination`.
    pub(crate) fn delete_destination(&self, destination: &str) -> bool {
        let mut hooks = lock(&self.hooks);
        let before = hooks.len();
        hooks.retain(|h| h.destination.expose_secret() != destination);
        hooks.len() != before
    }

    /// `GET /api/v4/webhooks` items; the API shows destinations to the admin, as amoCRM does.
    pub(crate) fn views(&self, destination: Option<&str>) -> Vec<Value> {
        lock(&self.hooks)
            .iter()
            .filter(|h| destination.is_none_or(|d| h.destination.expose_secret() == d))
            .map(|h| self.view(h))
            .collect()
    }

    fn view(&self, h: &Hook) -> Value {
        json!({
            "id": h.id,
            "destination": h.destination.expose_secret(),
            "created_at": h.created_at,
            "updated_at": h.updated_at,
            "account_id": self.account.id,
            "created_by": h.created_by,
            "sort": h.sort,
            "disabled": h.disabled,
            "settings": h.settings,
        })
    }

    /// The account's base URL.
    pub(crate) fn base_url(&self) -> &str {
        &self.account.self_link
    }

    /// Removes a subscription.
    pub(crate) fn remove(&self, id: u64) -> bool {
        let mut hooks = lock(&self.hooks);
        let before = hooks.len();
        hooks.retain(|h| h.id != id);
        hooks.len() != before
    }

    /// Re-enables a disabled subscription.
    pub(crate) fn enable(&self, id: u64) -> bool {
        let mut hooks = lock(&self.hooks);
        match hooks.iter_mut().find(|h| h.id == id) {
            Some(h) => {
                h.disabled = false;
                h.failures.clear();
                true
            }
            None => false,
        }
    }

    /// Subscriptions without their destinations (which carry the receiver's secret).
    pub(crate) fn list(&self) -> Vec<WebhookInfo> {
        lock(&self.hooks)
            .iter()
            .map(|h| WebhookInfo {
                id: h.id,
                settings: h.settings.clone(),
                disabled: h.disabled,
                failures: h.failed_total,
            })
            .collect()
    }

    pub(crate) fn set_policy(&self, policy: WebhookPolicy) {
        *lock(&self.policy) = policy;
    }

    /// Queues one POST per enabled subscription that wants any of `items`.
    pub(crate) fn emit(&self, items: &[HookItem]) {
        if items.is_empty() {
            return;
        }
        let jobs: Vec<Job> = lock(&self.hooks)
            .iter()
            .filter(|h| !h.disabled)
            .filter_map(|h| {
                let wanted: Vec<&HookItem> = items
                    .iter()
                    .filter(|i| h.settings.iter().any(|s| s == i.setting))
                    .collect();
                if wanted.is_empty() {
                    return None;
                }
                let mut settings: Vec<String> =
                    wanted.iter().map(|i| i.setting.to_owned()).collect();
                settings.dedup();
                Some(Job {
                    webhook_id: h.id,
                    destination: h.destination.clone(),
                    settings,
                    body: form_body(&wanted, &self.account),
                })
            })
            .collect();
        for job in jobs {
            self.outbox.send(job);
        }
    }

    /// Waits until every queued delivery has been attempted.
    pub(crate) async fn settle(&self) {
        self.outbox.settle().await;
    }

    /// Deliveries queued or in flight.
    pub(crate) fn pending(&self) -> usize {
        self.outbox.pending()
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.deliveries).clone()
    }

    pub(crate) fn clear_deliveries(&self) {
        lock(&self.deliveries).clear();
    }

    fn record(&self, d: Delivery) {
        if !d.ok() {
            let policy = *lock(&self.policy);
            let mut hooks = lock(&self.hooks);
            if let Some(h) = hooks.iter_mut().find(|h| h.id == d.webhook_id) {
                let now = Instant::now();
                h.failed_total += 1;
                h.failures.push_back(now);
                while h
                    .failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= policy.within)
                {
                    h.failures.pop_front();
                }
                if h.failures.len() > policy.failures as usize {
                    if !h.disabled {
                        tracing::warn!(
                            webhook = h.id,
                            "sandbox: webhook disabled after repeated failures"
                        );
                    }
                    h.disabled = true;
                }
            }
        }
        let mut log = lock(&self.deliveries);
        if log.len() >= DELIVERY_LOG_CAP {
            log.drain(..DELIVERY_LOG_CAP / 10);
        }
        log.push(d);
    }
}

/// Delivers queued webhooks until shutdown, as amoCRM's sender: up to [`CONCURRENCY`]
/// at a time, its own User-Agent, no redirects followed.
pub(crate) async fn run(
    hooks: Arc<Hooks>,
    queue: OutboxQueue<Job>,
    timeout: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let courier = Courier {
        concurrency: CONCURRENCY,
        timeout,
        delay: Duration::ZERO,
        user_agent: Some("amoCRM-WebHook-client/1.0"),
    };
    queue
        .deliver(courier, shutdown, move |job, attempt| {
            hooks.record(Delivery {
                webhook_id: job.webhook_id,
                settings: job.settings,
                body: job.body,
                status: attempt.status,
                error: attempt.error,
                at: SystemTime::now(),
                elapsed: attempt.elapsed,
            });
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(action: &'static str, id: u64) -> HookItem {
        HookItem {
            setting: setting_for(action),
            entity: "leads",
            action: action_name(action),
            pairs: vec![
                ("[id]".into(), id.to_string()),
                ("[name]".into(), "Some text".into()),
            ],
        }
    }

    #[test]
    fn items_are_numbered_per_action_and_account_comes_last() {
        let account = AccountKeys {
            subdomain: "ablaser".into(),
            id: 29_715_442,
            self_link: "https://ablaser.amocrm.ru".into(),
        };
        let (a, b, c) = (item("update", 1), item("update", 2), item("status", 1));
        let body = form_body(&[&a, &b, &c], &account);
        assert_eq!(
            body,
            "leads%5Bupdate%5D%5B0%5D%5Bid%5D=1&leads%5Bupdate%5D%5B0%5D%5Bname%5D=Some+text\
             &leads%5Bupdate%5D%5B1%5D%5Bid%5D=2&leads%5Bupdate%5D%5B1%5D%5Bname%5D=Some+text\
             &leads%5Bstatus%5D%5B0%5D%5Bid%5D=1&leads%5Bstatus%5D%5B0%5D%5Bname%5D=Some+text\
             &account%5Bsubdomain%5D=ablaser&account%5Bid%5D=29715442\
             &account%5B_links%5D%5Bself%5D=https%3A%2F%2Fablaser.amocrm.ru"
        );
    }

    #[test]
    fn v2_dates_are_in_account_time() {
        assert_eq!(v2_date(1_601_242_011), "2020-09-28 00:26:51");
    }
}
