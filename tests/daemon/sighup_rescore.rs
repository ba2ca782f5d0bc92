//! SIGHUP with a changed [scoring] (issue 15, item 5), against the real binary: the
//! daemon (`leadscore serve`) logs what the new model changes on the stored inputs,
//! writes nothing by itself, and with `server.rescore_on_reload = true` rewrites the
//! changed leads through the rescore job, with no new tasks.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Daemon, Options};
use crate::e2e_bitrix24::{config_with_title_points, sixty_scored_leads};

/// `leadscore serve` on `config`, its log lines gathered as they come.
struct Served {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Served {
    fn start(config: &std::path::Path) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_leadscore"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Served { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait (up to 60 s) until the log holds `text`, after `from` bytes of it.
    async fn wait_log(&self, text: &str, from: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if log.get(from..).is_some_and(|l| l.contains(text)) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {text:?} in:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// SIGTERM and wait for a clean exit (the store is flushed and released).
    fn stop(mut self) {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}\n{}", self.log());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The edited config with `[server] rescore_on_reload` set (and no sweep during the
/// test, so every request counted is the reload's).
fn with_rescore_on_reload(path: &std::path::Path, on: bool) {
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let server = doc["server"].as_table_mut().unwrap();
    server.insert("rescore_on_reload".into(), toml::Value::Boolean(on));
    server.insert("sweep_interval_secs".into(), toml::Value::Integer(3600));
    std::fs::write(path, toml::to_string(&doc).unwrap()).unwrap();
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_model_logs_the_dry_run_and_rescores_when_asked() {
    // 60 leads scored and stored by the daemon: 55 warm (60), 5 hot (80) with a task.
    let mut d = Daemon::start(Options::default()).await;
    let (plain, asked) = sixty_scored_leads(&d).await;
    assert_eq!(d.crm_score(plain[0]), Some(60));
    let tasks = d.sandbox.tasks().len();
    assert_eq!(tasks, 5);
    d.stop().await;
    d.unbind_events();
    let path = d.dir.path().join("served.toml");
    let listen = free_port();

    // Without rescore_on_reload: the summary is logged, nothing is written. With it:
    // the same summary, then the changed leads rewritten through the rescore path
    // (scored from the stored inputs, no activity read), and no task.
    for rescore_on_reload in [false, true] {
        config_with_title_points(&d, 15, &listen, &path);
        with_rescore_on_reload(&path, rescore_on_reload);
        let served = Served::start(&path);
        served.wait_log("listening", 0).await;
        config_with_title_points(&d, 30, &listen, &path);
        with_rescore_on_reload(&path, rescore_on_reload);
        d.sandbox.reset_counters();
        let from = served.log().len();
        served.signal("HUP");
        let log = served
            .wait_log("the new scoring model, on the stored leads", from)
            .await;
        assert!(
            log[from..].contains("55 of 60 leads change tier, 55 would newly cross the threshold"),
            "{log}"
        );
        if !rescore_on_reload {
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(d.sandbox.counters().by_method.get("crm.lead.update"), None);
            assert_eq!(d.crm_score(plain[0]), Some(60));
            served.stop();
            continue;
        }
        served
            .wait_log("rescoring the stored leads with the new model", from)
            .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.crm_score(plain[54]) != Some(75) || d.crm_score(asked[4]) != Some(95) {
            assert!(Instant::now() < deadline, "not rescored:\n{}", served.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = d.sandbox.counters();
        assert_eq!(c.by_method.get("crm.lead.update"), Some(&60), "{c:?}");
        assert_eq!(c.by_method.get("crm.activity.list"), None, "{c:?}");
        assert_eq!(
            d.sandbox.tasks().len(),
            tasks,
            "a model change makes no tasks"
        );
        served.stop();
    }
}
