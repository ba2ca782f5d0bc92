//! `leadscore rescore` on an amoCRM account over HTTP (issue 15, item 4): the dry run
//! previews the tier migration and writes nothing; the real run goes through the
//! running daemon with progress lines, scores from the stored inputs (no events read),
//! writes in PATCHes of 50 and creates no task.

use serde_json::json;

use crate::e2e_amocrm::Daemon;
use crate::e2e_bitrix24::{rescore_cli, succeeded, title_points_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_model_change_is_previewed_then_rescored_through_the_daemon() {
    let mut d = Daemon::start(true).await;
    let mut plain = Vec::new();
    let mut asked = Vec::new();
    for n in 0..23 {
        let lead = d.add_strong_lead(n);
        if n < 3 {
            d.sandbox
                .add_note(lead, "common", json!({"text": "[demo] Заявка на демо"}))
                .unwrap();
            asked.push(lead);
        } else {
            plain.push(lead);
        }
    }
    d.settle().await;
    assert_eq!(d.score(plain[0]), Some(60));
    assert_eq!(d.score(asked[0]), Some(80));
    let tasks: usize = asked.iter().map(|l| d.sandbox.tasks_of(*l).len()).sum();
    assert_eq!(tasks, 3);

    // A new model: the job title is worth 30, so the 20 warm leads become hot (75).
    let path = d.dir.path().join("rescore.toml");
    let addr = d.running.as_ref().unwrap().addr.to_string();
    title_points_config(&d.dir.path().join("demo.toml"), 30, &addr, &path);
    let new = leadscore::config::load(&path).unwrap();
    d.pipeline().reload(&new).unwrap();

    // No echo webhooks from here on: every request counted is the rescore's.
    d.unbind();
    d.sandbox.reset_calls();
    let (stdout, _) = succeeded(&rescore_cli(&path, &["--dry-run"], None));
    assert!(
        stdout.contains("20 would newly cross the threshold"),
        "{stdout}"
    );
    assert_eq!(d.patches(), 0, "a dry run writes nothing");

    let (stdout, stderr) = succeeded(&rescore_cli(&path, &[], None));
    assert!(stderr.contains("rescore: 23/23 leads"), "{stderr}");
    assert!(stdout.contains("rescore finished: 23 leads"), "{stdout}");
    d.settle().await;
    assert_eq!(d.score(plain[0]), Some(75));
    assert_eq!(d.score(asked[0]), Some(95));
    let after: usize = plain
        .iter()
        .chain(&asked)
        .map(|l| d.sandbox.tasks_of(*l).len())
        .sum();
    assert_eq!(after, tasks, "a model change makes no tasks");
    let calls = d.sandbox.calls();
    assert_eq!(d.patches(), 1, "23 leads in one PATCH");
    assert!(
        !calls
            .iter()
            .any(|c| c.method == "GET" && c.path.starts_with("/api/v4/")),
        "scored from stored inputs: {calls:#?}"
    );
    assert_eq!(d.sandbox.count_status(429), 0);
}
