//! The systemd notification protocol, end to end: the real `leadscore serve` binary
//! against the Bitrix24 sandbox, with `NOTIFY_SOCKET` pointing at a datagram socket this
//! test owns (what systemd does for a `Type=notify` unit).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leadscore::demo;
use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};
use tokio::net::UnixDatagram;

/// Kills the daemon if the test fails half-way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collect datagrams until one contains `line`, or fail after `limit`.
async fn wait_for(rx: &UnixDatagram, line: &str, limit: Duration, seen: &mut Vec<String>) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout_at(deadline, rx.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {line} within {limit:?}; got {seen:?}"))
            .expect("recv");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = msg.lines().any(|l| l == line);
        seen.push(msg);
        if found {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prepared = demo::prepare(&sandbox, dir.path(), "notify-test-token-0123456789")
        .await
        .unwrap();
    let config_path = prepared.config_path.clone();
    drop(prepared); // the daemon needs the sled lock

    let sock_path = dir.path().join("notify.sock");
    let rx = UnixDatagram::bind(&sock_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .args(["--log-format", "json"])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut daemon = Guard(child);
    let mut seen = Vec::new();

    wait_for(&rx, "READY=1", Duration::from_secs(30), &mut seen).await;
    assert!(
        seen[0]
            .lines()
            .any(|l| l.starts_with("STATUS=queue 0, dead letters 0")),
        "READY carries a status line: {seen:?}"
    );
    // Two pings: the watchdog keeps going at WATCHDOG_USEC/2 = 100 ms.
    let started = tokio::time::Instant::now();
    wait_for(&rx, "WATCHDOG=1", Duration::from_secs(5), &mut seen).await;
    wait_for(&rx, "WATCHDOG=1", Duration::from_secs(5), &mut seen).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "pings are frequent"
    );
    assert!(
        !seen.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING before SIGTERM: {seen:?}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    wait_for(&rx, "STOPPING=1", Duration::from_secs(10), &mut seen).await;
    let exit = tokio::task::spawn_blocking(move || {
        let status = daemon.0.wait();
        (status, daemon)
    })
    .await
    .unwrap();
    assert!(
        exit.0.unwrap().success(),
        "a SIGTERM'd daemon exits cleanly"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watchdog_usec_there_are_no_pings() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prepared = demo::prepare(&sandbox, dir.path(), "notify-test-token-0123456789")
        .await
        .unwrap();
    let config_path = prepared.config_path.clone();
    drop(prepared);

    let sock_path = dir.path().join("notify.sock");
    let rx = UnixDatagram::bind(&sock_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &sock_path)
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let daemon = Guard(child);
    let mut seen = Vec::new();
    wait_for(&rx, "READY=1", Duration::from_secs(30), &mut seen).await;
    let mut buf = vec![0u8; 4096];
    // The status refresh comes every 10 s, so nothing should arrive in 1 s.
    let quiet = tokio::time::timeout(Duration::from_secs(1), rx.recv(&mut buf)).await;
    assert!(quiet.is_err(), "unexpected datagram without a watchdog");
    drop(daemon);
    sandbox.shutdown().await;
}
