//! Identify calls that name the person by e-mail or phone (issue 17), over real HTTP
//! against both sandbox CRMs: the daemon finds the lead in the CRM (Bitrix24
//! `crm.duplicate.findbycomm`, amoCRM's contact search), attaches the visitor's earlier
//! events and the lead's score rises in the CRM; an unsigned call attaches nothing; a
//! CRM outage is answered 503 with Retry-After and the same call succeeds later; the
//! e-mail or phone never reaches the data dir's files; `forget --email` (the CLI on a
//! stopped daemon) and `/admin/forget` by phone erase the person's data and say what.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use leadscore::tracking::identify;
use leadscore_amocrm_sandbox::{FieldValue, NewContact, NewLead};
use leadscore_bitrix24_sandbox::{FaultConfig, FaultKind};
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::common::{self, Daemon, Options};
use crate::e2e_amocrm::Daemon as AmoDaemon;
use crate::tracking::{with_tracking, ORIGIN, SECRET, SITE_KEY};

const PORTAL: &str = "demo";

/// A visitor's pricing-page view and price-list download (+5 and +10 in the seed model).
async fn browse(addr: SocketAddr, visitor: &str) {
    let batch = json!({"k": SITE_KEY, "v": visitor, "e": [
        {"t": "page_view", "u": "https://shop.example.ru/pricing", "ti": "Цены"},
        {"t": "download", "u": "https://shop.example.ru/files/price.pdf", "ti": "Прайс-лист"}
    ]});
    let status = reqwest::Client::new()
        .post(format!("http://{addr}/track/{PORTAL}"))
        .header("origin", ORIGIN)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
        )
        .body(batch.to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
}

/// `POST /identify` with `body`, signed by the site's backend or not at all.
async fn identify_call(
    addr: SocketAddr,
    body: &Value,
    signed: bool,
) -> (u16, Value, Option<String>) {
    let body = body.to_string();
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/identify/{PORTAL}"))
        .body(body.clone());
    if signed {
        let ts = Utc::now().timestamp();
        let sig = identify::sign(&SecretString::from(SECRET), ts, body.as_bytes());
        req = req
            .header(identify::TIMESTAMP_HEADER, ts.to_string())
            .header(identify::SIGNATURE_HEADER, sig);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.json().await.unwrap_or(Value::Null), retry)
}

/// `POST /admin/forget` (loopback needs no token) and its report.
pub(crate) async fn admin_forget(addr: SocketAddr, request: Value) -> Value {
    reqwest::Client::new()
        .post(format!("http://{addr}/admin/forget"))
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Does any file under `dir` contain `needle`?
fn dir_contains(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            return dir_contains(&path, needle);
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

fn findbycomm_calls(d: &Daemon) -> usize {
    d.sandbox
        .calls()
        .iter()
        .filter(|c| c.method == "crm.duplicate.findbycomm")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_email_finds_the_bitrix24_lead_and_forget_by_email_erases_it() {
    let mut d = Daemon::start(Options {
        configure: Some(with_tracking),
        ..Options::default()
    })
    .await;
    // The CRM holds the e-mail in its own spelling.
    let mut fields = common::strong_lead_fields(1, "240", "Москва");
    fields["TITLE"] = json!("Ромашка");
    fields["NAME"] = json!("Анна");
    fields["EMAIL"] = json!([{"VALUE": "Anna.Smirnova@Romashka-Test.RU", "VALUE_TYPE": "WORK"}]);
    let lead = d.sandbox.add_lead(fields).unwrap();
    // A newer lead with the same e-mail, already converted: not the one.
    d.sandbox
        .add_lead(json!({
            "TITLE": "Ромашка (повтор)", "STATUS_ID": "CONVERTED",
            "EMAIL": [{"VALUE": "ANNA.Smirnova@romashka-test.ru", "VALUE_TYPE": "WORK"}],
        }))
        .unwrap();
    d.settle().await;
    let before = d.crm_score(lead).expect("scored");
    let addr = d.addr();
    browse(addr, "v-anna-laptop-0001").await;

    // A browser (or anyone without the secret) naming the e-mail attaches nothing.
    let sent = "  anna.smirnova@ROMASHKA-test.ru ";
    let call = json!({"visitor": "v-anna-laptop-0001", "email": sent});
    assert_eq!(identify_call(addr, &call, false).await.0, 401);
    d.settle().await;
    assert_eq!(
        d.store()
            .visitor_lead(PORTAL, "v-anna-laptop-0001")
            .unwrap(),
        None
    );
    assert_eq!(d.crm_score(lead), Some(before));
    assert_eq!(
        findbycomm_calls(&d),
        0,
        "an unsigned call never reaches the CRM"
    );

    // A CRM outage: 503 with Retry-After, nothing attached; the same signed call
    // succeeds once the CRM is back.
    d.sandbox
        .set_faults(FaultConfig::only(FaultKind::InternalServerError, 1.0, 3));
    let (status, _, retry) = identify_call(addr, &call, true).await;
    d.sandbox.set_faults(FaultConfig::default());
    assert_eq!(status, 503);
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 1));
    assert_eq!(
        d.store()
            .visitor_lead(PORTAL, "v-anna-laptop-0001")
            .unwrap(),
        None
    );

    // The site's backend: the lead is found and the earlier events count.
    let (status, answer, _) = identify_call(addr, &call, true).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"attached": 2, "found": true}))
    );
    d.settle().await;
    assert_eq!(
        d.crm_score(lead),
        Some(before + 15),
        "pricing +5, price list +10"
    );
    let asked = findbycomm_calls(&d);

    // Her phone's browser, identified by the same e-mail: from the cache, no CRM call.
    browse(addr, "v-anna-phone-00002").await;
    let phone_call =
        json!({"visitor": "v-anna-phone-00002", "email": "Anna.Smirnova@romashka-test.ru"});
    assert_eq!(identify_call(addr, &phone_call, true).await.0, 200);
    assert_eq!(findbycomm_calls(&d), asked, "the resolution was cached");
    // An e-mail no lead has: 202, nothing attached, nothing cached.
    let nobody = json!({"visitor": "v-somebody-000003", "email": "nobody@elsewhere-test.ru"});
    let (status, answer, _) = identify_call(addr, &nobody, true).await;
    assert_eq!(
        (status, &answer),
        (202, &json!({"attached": 0, "found": false}))
    );
    d.settle().await;

    // Neither the e-mail as sent nor normalised is in the data dir (the CRM's own
    // spelling is: the lead's snapshot holds its fields).
    let data = d.config.server.data_dir.clone();
    for needle in [
        sent.trim(),
        "anna.smirnova@romashka-test.ru",
        "nobody@elsewhere-test.ru",
    ] {
        assert!(!dir_contains(&data, needle), "{needle} is in the data dir");
    }
    assert!(
        dir_contains(&data, "Anna.Smirnova@Romashka-Test.RU"),
        "the search can see"
    );

    // `leadscore forget --email` on the stopped daemon's store.
    d.stop().await;
    let mut out = None;
    for _ in 0..40 {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
            .args([
                "forget",
                "--portal",
                PORTAL,
                "--email",
                "ANNA.SMIRNOVA@romashka-test.ru",
            ])
            .arg("--config")
            .arg(d.config_path())
            .env_remove("LEADSCORE_CONFIG")
            .output()
            .unwrap();
        if o.status.success() {
            out = Some(String::from_utf8_lossy(&o.stdout).into_owned());
            break;
        }
        // sled lets go of its lock a moment after the daemon's last handle is dropped.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = out.expect("forget ran");
    assert!(
        out.contains("erased 4 event(s) and 2 identification(s) of 2 visitor(s)")
            && out.contains("and 1 cached e-mail/phone resolution(s)"),
        "{out}"
    );
    let store = d.stopped_store();
    for v in ["v-anna-laptop-0001", "v-anna-phone-00002"] {
        assert_eq!(store.visitor_lead(PORTAL, v).unwrap(), None);
    }
    assert!(store
        .tracked_for_lead(PORTAL, &lead.to_string())
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_phone_in_another_format_finds_the_open_amocrm_lead() {
    let d = AmoDaemon::start_with(true, with_tracking).await;
    let contact = d
        .sandbox
        .add_contact(NewContact {
            name: "Пётр Иванов".into(),
            position: Some("Генеральный директор".into()),
            emails: vec!["petr@zavod-test.ru".into()],
            phones: vec!["+7 (912) 345-67-89".into()],
            responsible_user_id: None,
            company_id: None,
        })
        .unwrap();
    let now = Utc::now().timestamp();
    let fit = |name: &str, created: i64, status: Option<u64>| {
        let mut l = NewLead::named(name);
        l.created_at = Some(created);
        l.status_id = status;
        l.fields = vec![
            (d.fit.industry, FieldValue::Text("Производство".into())),
            (d.fit.revenue, FieldValue::Number(8e8)),
            (d.fit.employees, FieldValue::Number(240.0)),
            (d.fit.region, FieldValue::Text("Москва".into())),
        ];
        l
    };
    // An older open lead, the open one of today, and a newer won one: today's wins.
    let old = d
        .sandbox
        .add_lead(fit("Старая заявка", now - 90 * 86_400, None))
        .unwrap();
    let current = d.sandbox.add_lead(fit("Заявка", now - 3600, None)).unwrap();
    let won = d
        .sandbox
        .add_lead(fit("Выигранная", now - 60, Some(142)))
        .unwrap();
    for id in [old, current, won] {
        d.sandbox.link_contact(id, contact, true).unwrap();
    }
    d.settle().await;
    let before = d.score(current).expect("scored");
    let old_before = d.score(old);
    let addr = d.running.as_ref().unwrap().addr;
    browse(addr, "v-petr-desktop-001").await;

    let call = json!({"visitor": "v-petr-desktop-001", "phone": "8 912 345 67 89"});
    assert_eq!(identify_call(addr, &call, false).await.0, 401, "unsigned");
    let (status, answer, _) = identify_call(addr, &call, true).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"attached": 2, "found": true}))
    );
    d.settle().await;
    assert_eq!(d.score(current), Some(before + 15));
    assert_eq!(d.score(old), old_before, "the older lead is not the one");
    let searches: Vec<String> = d
        .sandbox
        .calls()
        .iter()
        .filter(|c| c.path.starts_with("/api/v4/contacts") && c.query.contains("query="))
        .map(|c| c.query.clone())
        .collect();
    assert_eq!(searches.len(), 1, "{searches:?}");
    assert!(searches[0].contains("query=9123456789"), "{searches:?}");

    let data = d.config.server.data_dir.clone();
    for needle in ["79123456789", "89123456789", "8 912 345 67 89"] {
        assert!(!dir_contains(&data, needle), "{needle} is in the data dir");
    }

    // The erasure request through the running daemon, by the phone as written anywhere.
    let report = admin_forget(addr, json!({"portal": PORTAL, "phone": "+7 912 345-67-89"})).await;
    assert_eq!(
        report,
        json!({"visitors": ["v-petr-desktop-001"], "events": 2, "identities": 1, "resolutions": 1})
    );
    let store = &d.pipeline().store;
    assert_eq!(
        store.visitor_lead(PORTAL, "v-petr-desktop-001").unwrap(),
        None
    );
    // Asking again finds nothing left.
    let again = admin_forget(addr, json!({"portal": PORTAL, "phone": "89123456789"})).await;
    assert_eq!(again["resolutions"], 0);
    assert_eq!(again["visitors"], json!([]));
}

/// The demo's website scene: anonymous visits change nothing, an unsigned identify is
/// refused, the signed one attaches both events and the lead's score rises by them;
/// two colleagues make a buying group with one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_website_scene_scores_the_visits_once_identified() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    leadscore::demo_site::run(dir.path(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let line = |start: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
            .to_string()
    };
    let first = line("lead 1 (Анна Смирнова, CEO): score ");
    let before: i64 = first["lead 1 (Анна Смирнова, CEO): score ".len()..]
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first.ends_with(&format!("score still {before}")), "{text}");
    assert!(
        line("an unsigned identify").contains(": 401, nothing attached"),
        "{text}"
    );
    assert!(
        line("the form's backend").contains(r#"200 {"attached":2,"found":true}"#),
        "{text}"
    );
    let after = line("lead 1: score ");
    assert!(
        after.starts_with(&format!("lead 1: score {before} → {} (", before + 15)),
        "pricing +5, price list +10: {text}"
    );
    assert!(after.contains("цены") && after.contains("прайс"), "{text}");
    // Two colleagues identified: the buying group shows on all three cards, and its
    // task goes once, to the highest-scored lead (Анна's).
    for id in 1..=3 {
        assert!(
            line(&format!("lead {id} now scores "))
                .contains("+15 группа закупки: 3 сотрудника «Ромашка» за 7 дней"),
            "{text}"
        );
    }
    let group_tasks: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("изучают цены"))
        .collect();
    assert_eq!(
        group_tasks,
        ["task for rep 3 on L_1: Несколько сотрудников «Ромашка» изучают цены"],
        "{text}"
    );
}
