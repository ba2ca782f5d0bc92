//! The accept loop: the router on hyper's HTTP/1 connections, with what `axum::serve`
//! leaves out for a port open to strangers.
//!
//! - A cap on open connections (`[server] max_connections`): at the cap the loop stops
//!   accepting and further clients wait in the kernel's backlog, so the daemon never runs
//!   out of file descriptors in the middle of a webhook.
//! - A header read timeout (`header_read_timeout_secs`, hyper's own timer): a request
//!   head must be complete this long after the connection opens or its previous answer
//!   is sent, so silent and slowloris connections are closed.
//! - A keep-alive timeout (`keep_alive_timeout_secs`): a connection that has been
//!   answered and has nothing in flight is closed after this long without a new request.
//! - The body read timeout is the router's (`intake::read_body_in_time`), since only
//!   the handler knows when it wants the body.
//!
//! Shutdown stays graceful: on `shutdown` the loop stops accepting, idle connections
//! close at once and requests in flight are answered first (the timeouts bound how long
//! that can take).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::Server;

/// Per-connection limits, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time allowed for a whole request head, counted from when the server waits for it.
    pub header_read_timeout: Duration,
    /// Time an answered connection may stay idle; zero turns keep-alive off.
    pub keep_alive_timeout: Duration,
}

impl ConnLimits {
    /// From the loaded config.
    pub fn from_server(server: &Server) -> ConnLimits {
        ConnLimits {
            max_connections: server.max_connections,
            header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
            keep_alive_timeout: Duration::from_secs(server.keep_alive_timeout_secs),
        }
    }
}

/// Serve `router` on `listener` until `shutdown` is cancelled and every connection has
/// closed. Each request carries `ConnectInfo<SocketAddr>` (the dashboard's loopback
/// check needs the peer).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    router.clone(),
                    limits,
                    shutdown.clone(),
                    permit,
                ));
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; connections that
                // close meanwhile give the descriptors back.
                warn!(error = %e, "cannot accept a connection; retrying in 100 ms");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// What the keep-alive timer needs to know about a connection's requests.
struct Activity {
    /// When the connection was accepted.
    epoch: Instant,
    in_flight: AtomicUsize,
    answered: AtomicU64,
    /// Milliseconds after `epoch` when the last answer was produced.
    last_answer_ms: AtomicU64,
    /// Woken when a request ends, so the timer is re-armed.
    changed: Notify,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            last_answer_ms: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When the connection is idle long enough to be closed, if it is idle at all.
    fn idle_deadline(&self, keep_alive: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 || self.answered.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_answer_ms.load(Ordering::SeqCst));
        Some(self.epoch + last + keep_alive)
    }
}

/// A request being handled; dropping it marks the answer.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.last_answer_ms.store(ms, Ordering::SeqCst);
        a.answered.fetch_add(1, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
        a.changed.notify_one();
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let inner = TowerToHyperService::new(router);
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = activity.begin();
            let answer = inner.call(req);
            async move {
                let resp = answer.await;
                drop(in_flight);
                resp
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(!limits.keep_alive_timeout.is_zero());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = if closing {
            None
        } else {
            activity.idle_deadline(limits.keep_alive_timeout)
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(idle_at.unwrap_or(activity.epoch)), if idle_at.is_some() => {
                if activity.idle_deadline(limits.keep_alive_timeout)
                    .is_some_and(|at| at <= Instant::now())
                {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Descriptors kept free for everything but client connections (sled's files, the CRM
/// clients' sockets, the listener, logs).
const RESERVED_FDS: u64 = 64;

/// The soft limit on open files from `/proc/self/limits` (`None`: not Linux, or
/// unlimited).
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&text)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A warning when this process may open fewer files than `max_connections` needs
/// (plus [`RESERVED_FDS`]): past it, accepting fails and clients wait or time out. For
/// `leadscore check` and the daemon's start-up log.
pub fn fd_limit_warning(max_connections: usize) -> Option<String> {
    limit_warning(max_connections, open_files_limit())
}

fn limit_warning(max_connections: usize, limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    let needed = (max_connections as u64).saturating_add(RESERVED_FDS);
    (limit < needed).then(|| {
        format!(
            "this process may open {limit} files, fewer than server.max_connections ({max_connections}) + {RESERVED_FDS} for the store and CRM clients: raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) or lower max_connections"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str =
        "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            256                  524288               files     \n\
Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn the_soft_open_files_limit_is_read() {
        assert_eq!(parse_open_files_limit(LIMITS), Some(256));
        let unlimited = LIMITS.replace("256 ", "unlimited ");
        assert_eq!(parse_open_files_limit(&unlimited), None);
        assert_eq!(parse_open_files_limit(""), None);
    }

    #[test]
    fn a_limit_below_the_connection_cap_warns() {
        let w = limit_warning(1024, Some(256)).unwrap();
        assert!(w.contains("256") && w.contains("1024"), "{w}");
        assert!(limit_warning(1024, Some(1087)).is_some());
        assert_eq!(limit_warning(1024, Some(1088)), None);
        assert_eq!(limit_warning(1024, None), None);
    }
}
