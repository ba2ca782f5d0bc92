//! Outgoing webhooks the way CRMs send them: queued by the change that fired them,
//! POSTed form-encoded asynchronously, a few at a time, once, with no retries (a failure
//! is only recorded). [`Outbox::settle`] lets a test wait until everything queued has
//! been attempted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify, Semaphore};

/// One queued POST.
pub trait Outgoing: Send + 'static {
    /// Where to POST. It may carry the receiver's secret, so it is never logged.
    fn destination(&self) -> &str;
    /// The form body, built when the POST is made (after any delay), so a timestamp in
    /// it is the sending time.
    fn body(&self) -> String;
}

/// How one POST ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Why the CRM counts it as failed (non-2xx, timeout, refused connection).
    pub error: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// How the CRM's sender behaves.
#[derive(Clone, Debug)]
pub struct Courier {
    /// POSTs in flight at once (so two events for one lead may arrive out of order).
    pub concurrency: usize,
    /// Timeout of one POST, connecting included.
    pub timeout: Duration,
    /// Wait before each POST ("the request may arrive with a slight delay").
    pub delay: Duration,
    /// The sender's `User-Agent`, if the CRM sends a recognisable one.
    pub user_agent: Option<&'static str>,
}

/// Counts queued and in-flight POSTs and wakes `settle` when none are left.
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    fn finish(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The sending end: what a sandbox's change hands its webhooks to.
pub struct Outbox<J> {
    tx: mpsc::UnboundedSender<J>,
    pending: Arc<Pending>,
}

/// The delivering end, consumed by [`OutboxQueue::deliver`].
pub struct OutboxQueue<J> {
    rx: mpsc::UnboundedReceiver<J>,
    pending: Arc<Pending>,
}

/// A new, empty queue.
pub fn outbox<J>() -> (Outbox<J>, OutboxQueue<J>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(Pending::default());
    (
        Outbox {
            tx,
            pending: pending.clone(),
        },
        OutboxQueue { rx, pending },
    )
}

impl<J> Outbox<J> {
    /// Queues one POST.
    pub fn send(&self, job: J) {
        self.pending.count.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(job).is_err() {
            // The worker is gone (shutdown): it will never be attempted.
            self.pending.finish();
        }
    }

    /// POSTs queued or in flight.
    pub fn pending(&self) -> usize {
        self.pending.count.load(Ordering::SeqCst)
    }

    /// Waits until every queued POST has been attempted (and recorded).
    pub async fn settle(&self) {
        loop {
            let notified = self.pending.idle.notified();
            if self.pending() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl<J: Outgoing> OutboxQueue<J> {
    /// Delivers until `shutdown` turns `true`, handing each job and its outcome to
    /// `record` before the job counts as done (so `settle` returns after the record).
    /// Whatever is still queued at shutdown counts as done, unsent, so `settle` cannot
    /// hang afterwards.
    pub async fn deliver(
        mut self,
        courier: Courier,
        mut shutdown: watch::Receiver<bool>,
        record: impl Fn(J, Attempt) + Send + Sync + 'static,
    ) {
        let mut builder = reqwest::Client::builder()
            .timeout(courier.timeout)
            .connect_timeout(courier.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(agent) = courier.user_agent {
            builder = builder.user_agent(agent);
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "sandbox: cannot build the webhook client");
                self.drain();
                return;
            }
        };
        let record = Arc::new(record);
        let slots = Arc::new(Semaphore::new(courier.concurrency));
        loop {
            let job = tokio::select! {
                job = self.rx.recv() => job,
                _ = shutdown.wait_for(|s| *s) => None,
            };
            let Some(job) = job else {
                break;
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                self.pending.finish();
                break;
            };
            let (client, record, pending) = (client.clone(), record.clone(), self.pending.clone());
            let delay = courier.delay;
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let attempt = post(&client, job.destination().to_owned(), job.body()).await;
                record(job, attempt);
                drop(permit);
                pending.finish();
            });
        }
        self.drain();
    }

    fn drain(&mut self) {
        self.rx.close();
        while self.rx.try_recv().is_ok() {
            self.pending.finish();
        }
    }
}

async fn post(client: &reqwest::Client, destination: String, body: String) -> Attempt {
    let started = Instant::now();
    let outcome = client
        .post(destination)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await;
    let (status, error) = match outcome {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let ok = resp.status().is_success();
            (
                Some(code),
                (!ok).then(|| format!("receiver answered {code}")),
            )
        }
        // Without the URL: it may carry the receiver's secret.
        Err(e) => (None, Some(e.without_url().to_string())),
    };
    if let Some(err) = &error {
        tracing::debug!(error = %err, "sandbox: webhook delivery failed, not retried");
    }
    Attempt {
        status,
        error,
        elapsed: started.elapsed(),
    }
}
