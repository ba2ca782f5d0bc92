//! Website tracking end to end over HTTP (issue 17): events of an anonymous visitor
//! change nothing; a signed identify call from the site's backend attaches them and the
//! lead's score in the sandbox CRM rises; unsigned, stale, forged and replayed identify
//! calls are refused and attach nothing; a browser cannot name a lead.

use crate::common;

use std::sync::Arc;

use chrono::Utc;
use common::{Daemon, Options};
use leadscore::config::tracking::Tracking;
use leadscore::config::Config;
use leadscore::tracking::identify;
use secrecy::SecretString;
use serde_json::json;

pub(crate) const ORIGIN: &str = "https://shop.example.ru";
pub(crate) const SITE_KEY: &str = "site-key-1234";
pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef-tracking";
const VISITOR: &str = "v-0011223344556677";

/// The first portal with website tracking on (the shop's origin, key and secret).
pub(crate) fn with_tracking(c: &mut Config) {
    c.portals[0].tracking = Some(Arc::new(Tracking {
        site_key: SITE_KEY.into(),
        allowed_origins: vec![ORIGIN.into()],
        identify_secret: SecretString::from(SECRET),
        anonymous_days: 30,
        max_skew_secs: 300,
        per_ip_per_minute: 120,
        per_visitor_per_minute: 60,
        resolution_days: 30,
        visitor_field: None,
    }));
}

async fn track(d: &Daemon, origin: &str, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "http://{}/track/{}",
            d.addr(),
            leadscore::demo::PORTAL
        ))
        .header("origin", origin)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
        )
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn identify_raw(d: &Daemon, ts: Option<i64>, sig: Option<&str>, body: &str) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!(
            "http://{}/identify/{}",
            d.addr(),
            leadscore::demo::PORTAL
        ))
        .body(body.to_string());
    if let Some(ts) = ts {
        req = req.header(identify::TIMESTAMP_HEADER, ts.to_string());
    }
    if let Some(sig) = sig {
        req = req.header(identify::SIGNATURE_HEADER, sig);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_identified_by_the_site_backend_raises_the_lead_score_and_nothing_else_can() {
    let d = Daemon::start(Options {
        configure: Some(with_tracking),
        ..Options::default()
    })
    .await;
    let lead = d.add_strong_lead(1);
    d.settle().await;
    let before = d.crm_score(lead).expect("scored");

    // Anonymous browsing: kept, counted for nobody.
    let page = json!({"k": SITE_KEY, "v": VISITOR, "e": [
        {"t": "page_view", "u": "https://shop.example.ru/pricing", "ti": "Цены"},
        {"t": "download", "u": "https://shop.example.ru/files/price.pdf", "ti": "Прайс-лист 2027"}
    ]});
    assert_eq!(track(&d, ORIGIN, page.clone()).await, 204);
    // Not from the site, or claiming an identity: refused.
    assert_eq!(track(&d, "https://evil.example", page.clone()).await, 403);
    let mut claim = page.clone();
    claim["email"] = json!("ceo1@factory1.ru");
    assert_eq!(track(&d, ORIGIN, claim).await, 400);
    let mut wrong_key = page.clone();
    wrong_key["k"] = json!("another-site-key");
    assert_eq!(track(&d, ORIGIN, wrong_key).await, 403);

    // Identify calls that are not the backend's attach nothing.
    let body = format!(r#"{{"visitor":"{VISITOR}","lead_id":"{lead}"}}"#);
    let now = Utc::now().timestamp();
    let good = identify::sign(&SecretString::from(SECRET), now, body.as_bytes());
    let forged = identify::sign(
        &SecretString::from("not-the-secret-not-the-secret-000"),
        now,
        body.as_bytes(),
    );
    let stale_ts = now - 3600;
    let stale = identify::sign(&SecretString::from(SECRET), stale_ts, body.as_bytes());
    assert_eq!(identify_raw(&d, None, None, &body).await, 401, "unsigned");
    assert_eq!(
        identify_raw(&d, Some(now), Some(&forged), &body).await,
        401,
        "forged"
    );
    assert_eq!(
        identify_raw(&d, Some(stale_ts), Some(&stale), &body).await,
        401,
        "stale"
    );
    let other_lead = body.replace(&format!("\"{lead}\""), "\"999\"");
    assert_eq!(
        identify_raw(&d, Some(now), Some(&good), &other_lead).await,
        401,
        "a signature does not carry over to another body"
    );
    d.settle().await;
    assert_eq!(
        d.store()
            .visitor_lead(leadscore::demo::PORTAL, VISITOR)
            .unwrap(),
        None
    );
    assert_eq!(
        d.crm_score(lead),
        Some(before),
        "nothing attached, nothing changed"
    );

    // The backend's signed call attaches the visitor; the score rises in the CRM.
    assert_eq!(identify_raw(&d, Some(now), Some(&good), &body).await, 200);
    d.settle().await;
    let after = d.crm_score(lead).unwrap();
    assert_eq!(after, before + 15, "pricing page +5 and price list +10");
    // The same call again is a replay.
    assert_eq!(
        identify_raw(&d, Some(now), Some(&good), &body).await,
        401,
        "replayed"
    );

    // Later events of the identified visitor count at once; a preflight is answered.
    let blog = json!({"k": SITE_KEY, "v": VISITOR, "e": [{"t": "page_view", "u": "https://shop.example.ru/blog/a"}]});
    assert_eq!(track(&d, ORIGIN, blog).await, 204);
    d.settle().await;
    assert!(d.crm_score(lead).unwrap() >= after);
    let pre = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/track/{}", d.addr(), leadscore::demo::PORTAL),
        )
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.headers()["access-control-allow-origin"], ORIGIN);
    // A signed campaign link identifies a new visitor; a forged one does not.
    let token = leadscore::tracking::link::token(&SecretString::from(SECRET), &lead.to_string());
    let forged = format!("{lead}.00112233445566778899aabbccddeeff");
    let visit = |v: &str, ls: &str| json!({"k": SITE_KEY, "v": v, "ls": ls, "e": [{"t": "page_view", "u": "https://shop.example.ru/offer"}]});
    assert_eq!(
        track(&d, ORIGIN, visit("v-mail-forged-0001", &forged)).await,
        204
    );
    assert_eq!(
        track(&d, ORIGIN, visit("v-mail-signed-0001", &token)).await,
        204
    );
    let store = d.store();
    assert_eq!(
        store
            .visitor_lead(leadscore::demo::PORTAL, "v-mail-forged-0001")
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .visitor_lead(leadscore::demo::PORTAL, "v-mail-signed-0001")
            .unwrap(),
        Some(lead.to_string())
    );
    // An erasure request for the lead removes both its visitors and says so.
    let report = crate::identify_contact::admin_forget(
        d.addr(),
        json!({"portal": leadscore::demo::PORTAL, "lead": lead.to_string()}),
    )
    .await;
    assert_eq!(report["identities"], 2, "{report}");
    assert_eq!(report["events"], 4, "{report}");
    assert!(store
        .tracked_for_lead(leadscore::demo::PORTAL, &lead.to_string())
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .visitor_lead(leadscore::demo::PORTAL, VISITOR)
            .unwrap(),
        None
    );
    let js = reqwest::get(format!("http://{}/track.js", d.addr()))
        .await
        .unwrap();
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert!(js.text().await.unwrap().contains("/track/"));
}

/// The CRM's own record as a trusted channel: a site form sent the visitor id in its
/// hidden `leadscore_visitor` input, the CRM keeps it in a lead field, and the daemon
/// attaches that visitor when it reads the lead. A second lead naming the same visitor
/// does not take it over; a malformed value attaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_id_the_crm_recorded_from_a_form_attaches_the_visitor() {
    fn with_visitor_field(c: &mut Config) {
        with_tracking(c);
        let t = c.portals[0].tracking.as_mut().unwrap();
        Arc::make_mut(t).visitor_field = Some("custom.ls_visitor".into());
        c.portals[0]
            .fields
            .map
            .insert("custom.ls_visitor".into(), "UF_CRM_LS_VISITOR".into());
    }
    let d = Daemon::start(Options {
        configure: Some(with_visitor_field),
        ..Options::default()
    })
    .await;
    let page = json!({"k": SITE_KEY, "v": VISITOR, "e": [
        {"t": "page_view", "u": "https://shop.example.ru/pricing", "ti": "Цены"},
        {"t": "download", "u": "https://shop.example.ru/files/price.pdf", "ti": "Прайс-лист 2027"}
    ]});
    assert_eq!(track(&d, ORIGIN, page).await, 204);
    // A lead without the field, for comparison: the same fit.
    let plain = d.add_strong_lead(1);
    d.settle().await;
    let base = d.crm_score(plain).expect("scored");

    // The form's lead, as the CRM recorded it (with the hidden input's value).
    let mut fields = common::strong_lead_fields(2, "240", "Москва");
    fields["UF_CRM_LS_VISITOR"] = json!(format!(" {VISITOR} "));
    let lead = d.sandbox.add_lead(fields).unwrap();
    d.settle().await;
    let linked = |d: &Daemon| {
        d.store()
            .visitor_lead(leadscore::demo::PORTAL, VISITOR)
            .unwrap()
    };
    assert_eq!(linked(&d), Some(lead.to_string()));
    assert_eq!(
        d.crm_score(lead),
        Some(base + 15),
        "pricing +5, price list +10"
    );

    // Another lead naming the same visitor, and one with garbage: nothing moves.
    let other = d
        .sandbox
        .add_lead(json!({"TITLE": "Lead 3", "UF_CRM_LS_VISITOR": VISITOR}))
        .unwrap();
    let junk = d
        .sandbox
        .add_lead(json!({"TITLE": "Lead 4", "UF_CRM_LS_VISITOR": "<script>x</script>"}))
        .unwrap();
    d.settle().await;
    assert_eq!(linked(&d), Some(lead.to_string()));
    assert!(d
        .store()
        .visitors_of_lead(leadscore::demo::PORTAL, &other.to_string())
        .unwrap()
        .is_empty());
    assert!(d
        .store()
        .visitors_of_lead(leadscore::demo::PORTAL, &junk.to_string())
        .unwrap()
        .is_empty());
}
