//! The systemd notification protocol (`sd_notify`), so the unit can be `Type=notify`
//! with a watchdog.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`). Writing it
//! here keeps libsystemd and its C toolchain out of the build. Without `$NOTIFY_SOCKET`
//! (a terminal, a container, the tests) every call is a no-op.
//!
//! What the daemon says:
//! - `READY=1` once the listener is bound and the pipeline started, so `systemctl start`
//!   returns only when webhooks can be accepted;
//! - `STOPPING=1` as soon as a shutdown is requested;
//! - `WATCHDOG=1` every `WATCHDOG_USEC / 2`, but only while the workers run and the store
//!   answers: a wedged daemon stops pinging and systemd restarts it;
//! - `STATUS=queue N, dead letters M` with every ping, shown by `systemctl status`.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::Store;

/// Why a notification could not be sent (the daemon logs it and carries on: systemd
/// is an observer, never a reason to stop scoring).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {0:?} is not a usable socket address: {1}")]
    Address(String, std::io::Error),
    #[error("cannot send to NOTIFY_SOCKET: {0}")]
    Send(std::io::Error),
}

/// A connection to the service manager, or nothing when not run by one.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<String>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Read `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring `$WATCHDOG_PID` when set:
    /// the watchdog belongs to that process only).
    pub fn from_env() -> Notifier {
        let target = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        let pid_matches = match std::env::var("WATCHDOG_PID") {
            Ok(pid) => pid.trim().parse::<u32>().ok() == Some(std::process::id()),
            Err(_) => true,
        };
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|us| *us > 0 && pid_matches)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Whether a service manager listens (then `notify` sends something).
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog timeout systemd enforces, when it enforces one.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled())
    }

    /// Send one message (newline-separated `KEY=VALUE` lines). A no-op without a socket.
    pub fn notify(&self, message: &str) -> Result<(), NotifyError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let socket = UnixDatagram::unbound().map_err(NotifyError::Send)?;
        if let Some(name) = target.strip_prefix('@') {
            send_abstract(&socket, name, message.as_bytes())
                .map_err(|e| NotifyError::Address(target.clone(), e))?;
        } else {
            socket
                .send_to(message.as_bytes(), target)
                .map_err(NotifyError::Send)?;
        }
        Ok(())
    }

    /// `notify`, logging (not returning) a failure.
    pub fn notify_or_log(&self, message: &str) {
        if let Err(e) = self.notify(message) {
            warn!(error = %e, "systemd notification failed");
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &str, message: &[u8]) -> std::io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(message, &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract unix sockets exist on Linux only",
    ))
}

/// The `STATUS=` line: what `systemctl status leadscore` shows under the unit.
pub fn status_line(store: &Store) -> String {
    let s = store.stats();
    format!(
        "STATUS=queue {}, dead letters {}, leads scored {}",
        s.pending, s.dead_letters, s.leads_scored
    )
}

/// Tell systemd the daemon is up, then ping the watchdog while `workers_alive` is not
/// cancelled and the store answers, and say `STOPPING=1` once `shutdown` fires.
/// `workers_alive` is cancelled when the worker task ends for any reason (also a panic).
pub async fn supervise(
    notifier: Arc<Notifier>,
    store: Arc<Store>,
    workers_alive: CancellationToken,
    shutdown: CancellationToken,
) {
    if !notifier.enabled() {
        return;
    }
    notifier.notify_or_log(&format!("READY=1\n{}", status_line(&store)));
    let period = notifier
        .watchdog_timeout()
        .map(|t| (t / 2).max(Duration::from_millis(10)));
    loop {
        let tick = async {
            match period {
                Some(p) => tokio::time::sleep(p).await,
                // No watchdog: refresh the status line now and then.
                None => tokio::time::sleep(Duration::from_secs(10)).await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick => {}
        }
        if shutdown.is_cancelled() {
            break;
        }
        let store_ok = store.pending_get(b"watchdog-probe").is_ok();
        let workers_ok = !workers_alive.is_cancelled();
        if period.is_some() && store_ok && workers_ok {
            notifier.notify_or_log(&format!("WATCHDOG=1\n{}", status_line(&store)));
        } else if period.is_some() {
            warn!(store_ok, workers_ok, "not pinging the systemd watchdog");
        } else {
            notifier.notify_or_log(&status_line(&store));
        }
    }
    debug!("telling systemd we are stopping");
    notifier.notify_or_log(&format!("STOPPING=1\n{}", status_line(&store)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(target: &str) -> Notifier {
        Notifier {
            target: Some(target.to_string()),
            watchdog: None,
        }
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        notifier(path.to_str().unwrap()).notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("leadscore-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        notifier(&format!("@{name}")).notify("STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        assert!(matches!(
            notifier(path.to_str().unwrap()).notify("READY=1"),
            Err(NotifyError::Send(_))
        ));
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let n = Notifier::default();
        assert!(!n.enabled());
        assert!(n.notify("READY=1").is_ok());
        let n = Notifier {
            target: None,
            watchdog: Some(Duration::from_secs(30)),
        };
        assert_eq!(n.watchdog_timeout(), None);
    }
}
