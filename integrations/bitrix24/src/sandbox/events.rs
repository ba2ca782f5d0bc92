//! Outgoing webhooks, delivered like the portal's queue server does: asynchronously,
//! form-encoded (`event`, `event_handler_id`, `data[FIELDS][ID]`, `ts`, `auth[...]`),
//! once, with no retries; a failure is only recorded.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

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

struct Job {
    binding: Binding,
    event: String,
    entity_id: u64,
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
    tx: mpsc::UnboundedSender<Job>,
    pending: AtomicUsize,
    idle: Notify,
    deliveries: Mutex<Vec<Delivery>>,
}

impl EventBus {
    /// A bus and the receiving end its worker consumes.
    pub(crate) fn new() -> (Arc<Self>, EventQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let bus = Arc::new(Self {
            bindings: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(1),
            tx,
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
            deliveries: Mutex::new(Vec::new()),
        });
        (bus, EventQueue(rx))
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
            self.pending.fetch_add(1, Ordering::SeqCst);
            let job = Job {
                binding,
                event: event.to_owned(),
                entity_id,
            };
            if self.tx.send(job).is_err() {
                self.finish();
            }
        }
    }

    fn finish(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until every queued delivery has been attempted.
    pub(crate) async fn settle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Deliveries attempted so far.
    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.deliveries).clone()
    }

    /// Deliveries still queued or in flight.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

/// The worker's end of the queue.
pub(crate) struct EventQueue(mpsc::UnboundedReceiver<Job>);

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

/// Runs the delivery worker until shutdown.
pub(crate) async fn run(
    bus: Arc<EventBus>,
    queue: EventQueue,
    who: PortalIdentity,
    timeout: Duration,
    delay: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rx = queue.0;
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "sandbox: cannot build the delivery client");
            return;
        }
    };
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        let job = tokio::select! {
            job = rx.recv() => job,
            _ = shutdown.wait_for(|s| *s) => None,
        };
        let Some(job) = job else {
            break;
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let bus = bus.clone();
        let client = client.clone();
        let who = who.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let body = form_body(
                &job.event,
                job.binding.id,
                job.entity_id,
                ts,
                &who,
                &job.binding.token,
            );
            let outcome = client
                .post(&job.binding.url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await;
            let (status, error) = match outcome {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let error =
                        (!resp.status().is_success()).then(|| format!("handler answered {status}"));
                    (Some(status), error)
                }
                Err(e) => (None, Some(e.without_url().to_string())),
            };
            if let Some(err) = &error {
                tracing::debug!(event = %job.event, id = job.entity_id, error = %err, "sandbox: delivery failed, not retried");
            }
            lock(&bus.deliveries).push(Delivery {
                handler_id: job.binding.id,
                event: job.event,
                entity_id: job.entity_id,
                handler_url: job.binding.url,
                status,
                error,
                at: SystemTime::now(),
            });
            drop(permit);
            bus.finish();
        });
    }
    // Whatever is still queued will never be sent: count it as finished so that
    // `settle` does not hang after shutdown.
    rx.close();
    while rx.try_recv().is_ok() {
        bus.finish();
    }
}

/// Locks a mutex, recovering the data if a panicking holder poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
