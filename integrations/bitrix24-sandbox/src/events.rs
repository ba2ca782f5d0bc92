//! Outgoing webhooks, delivered like the portal's queue server does: asynchronously,
//! form-encoded (`event`, `event_handler_id`, `data[FIELDS][ID]`, `ts`, `auth[...]`),
//! once, with no retries; a failure is only recorded.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leadscore_sandbox_kit::{lock, outbox, Courier, Outbox, OutboxQueue, Outgoing};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use super::Delivery;

/// What PHP's `http_build_query` leaves unescaped.
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// How many deliveries may be in flight at once.
const CONCURRENCY: usize = 8;

/// One outgoing-webhook subscription, as saved in the portal's UI.
#[derive(Clone)]
pub(crate) struct Binding {
    pub id: u32,
    pub event: String,
    pub url: String,
    pub token: SecretString,
}

/// One POST: the event, its subscription, and who sends it.
pub(crate) struct Job {
    binding: Binding,
    event: String,
    entity_id: u64,
    who: Arc<PortalIdentity>,
}

impl Outgoing for Job {
    fn destination(&self) -> &str {
        &self.binding.url
    }

    fn body(&self) -> String {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        form_body(
            &self.event,
            self.binding.id,
            self.entity_id,
            ts,
            &self.who,
            &self.binding.token,
        )
    }
}

/// Identity of the portal as it appears in `auth[...]`.
#[derive(Clone, Debug)]
pub(crate) struct PortalIdentity {
    pub domain: String,
    pub client_endpoint: String,
    pub server_endpoint: String,
    pub member_id: String,
}

/// Subscriptions, the delivery queue and its record.
pub(crate) struct EventBus {
    bindings: Mutex<Vec<Binding>>,
    next_id: AtomicU32,
    who: Arc<PortalIdentity>,
    outbox: Outbox<Job>,
    deliveries: Mutex<Vec<Delivery>>,
}

impl EventBus {
    /// A bus and the receiving end its worker consumes.
    pub(crate) fn new(who: PortalIdentity) -> (Arc<Self>, OutboxQueue<Job>) {
        let (outbox, queue) = outbox();
        let bus = Arc::new(Self {
            bindings: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(1),
            who: Arc::new(who),
            outbox,
            deliveries: Mutex::new(Vec::new()),
        });
        (bus, queue)
    }

    /// Adds a subscription; returns its `event_handler_id`.
    pub(crate) fn bind(&self, event: &str, url: &str, token: SecretString) -> u32 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        lock(&self.bindings).push(Binding {
            id,
            event: event.to_ascii_uppercase(),
            url: url.to_owned(),
            token,
        });
        id
    }

    /// Removes a subscription; `false` if there was none with that id.
    pub(crate) fn unbind(&self, id: u32) -> bool {
        let mut b = lock(&self.bindings);
        let before = b.len();
        b.retain(|x| x.id != id);
        b.len() != before
    }

    /// Queues one POST per subscription to `event`.
    pub(crate) fn emit(&self, event: &str, entity_id: u64) {
        let targets: Vec<Binding> = lock(&self.bindings)
            .iter()
            .filter(|b| b.event == event)
            .cloned()
            .collect();
        for binding in targets {
            self.outbox.send(Job {
                binding,
                event: event.to_owned(),
                entity_id,
                who: self.who.clone(),
            });
        }
    }

    /// Waits until every queued delivery has been attempted.
    pub(crate) async fn settle(&self) {
        self.outbox.settle().await;
    }

    /// Deliveries attempted so far.
    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.deliveries).clone()
    }

    /// Deliveries still queued or in flight.
    pub(crate) fn pending(&self) -> usize {
        self.outbox.pending()
    }
}

/// Builds the form body exactly as the portal sends it.
pub(crate) fn form_body(
    event: &str,
    handler_id: u32,
    entity_id: u64,
    ts: u64,
    who: &PortalIdentity,
    token: &SecretString,
) -> String {
    let pairs: [(&str, String); 9] = [
        ("event", event.to_owned()),
        ("event_handler_id", handler_id.to_string()),
        ("data[FIELDS][ID]", entity_id.to_string()),
        ("ts", ts.to_string()),
        ("auth[domain]", who.domain.clone()),
        ("auth[client_endpoint]", who.client_endpoint.clone()),
        ("auth[server_endpoint]", who.server_endpoint.clone()),
        ("auth[member_id]", who.member_id.clone()),
        ("auth[application_token]", token.expose_secret().to_owned()),
    ];
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, FORM),
                utf8_percent_encode(v, FORM)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Runs the delivery worker until shutdown: each POST once, up to [`CONCURRENCY`] at a
/// time, every attempt recorded.
pub(crate) async fn run(
    bus: Arc<EventBus>,
    queue: OutboxQueue<Job>,
    timeout: Duration,
    delay: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let courier = Courier {
        concurrency: CONCURRENCY,
        timeout,
        delay,
        user_agent: None,
    };
    queue
        .deliver(courier, shutdown, move |job, attempt| {
            lock(&bus.deliveries).push(Delivery {
                handler_id: job.binding.id,
                event: job.event,
                entity_id: job.entity_id,
                handler_url: job.binding.url,
                status: attempt.status,
                error: attempt.error,
                at: SystemTime::now(),
            });
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_matches_the_real_capture_layout() {
        let who = PortalIdentity {
            domain: "b24-46hovy.bitrix24.ru".into(),
            client_endpoint: "https://b24-46hovy.bitrix24.ru/rest/".into(),
            server_endpoint: "https://oauth.bitrix.info/rest/".into(),
            member_id: "1b87798bc2d16c4b7f2a604e0c899a34".into(),
        };
        let token = SecretString::from("o8kfcne3du24sfvoeahh43uf9oygu2x3");
        let body = form_body("ONCRMLEADADD", 7, 365, 1545851621, &who, &token);
        assert_eq!(
            body,
            "event=ONCRMLEADADD&event_handler_id=7&data%5BFIELDS%5D%5BID%5D=365&ts=1545851621\
             &auth%5Bdomain%5D=b24-46hovy.bitrix24.ru\
             &auth%5Bclient_endpoint%5D=https%3A%2F%2Fb24-46hovy.bitrix24.ru%2Frest%2F\
             &auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F\
             &auth%5Bmember_id%5D=1b87798bc2d16c4b7f2a604e0c899a34\
             &auth%5Bapplication_token%5D=o8kfcne3du24sfvoeahh43uf9oygu2x3"
        );
    }
}
