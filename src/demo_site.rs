//! The demo's website scene: behaviour the CRM does not hold. A visitor reads the
//! pricing page and downloads the price list on the company's site (the tracking
//! snippet's batches to `POST /track`); nothing reaches any lead while she is
//! anonymous. She fills in the site's form, the site's backend identifies her by
//! e-mail with a signed `POST /identify`, leadscore finds her lead in the CRM
//! (`crm.duplicate.findbycomm`), and her earlier visits count on the lead's card.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::demo::{random_token, PORTAL};
use crate::demo_portal::{Scene, ScenePortal};
use crate::tracking::identify;

/// The site's public key and its origin (the snippet's page).
const SITE_KEY: &str = "site-romashka-demo";
const ORIGIN: &str = "https://romashka-demo.ru";

/// The example model's buying-group rule (commented there), switched on for the scene,
/// with its task: three people of one company reading at once.
const BUYING_GROUP_RULE: &str = r#"
[[scoring.rules]]
id = "buying_group"
group = "engagement"
label = "группа закупки"
points = 15
buying_group = { kinds = ["page_view", "download", "form"], window_days = 7, min_people = 3 }
task = "Несколько сотрудников «{company}» изучают цены"

"#;

/// A browser's batch of events, as the snippet sends it.
async fn track(addr: SocketAddr, visitor: &str, events: Value) -> anyhow::Result<()> {
    let batch = json!({"k": SITE_KEY, "v": visitor, "e": events});
    let status = reqwest::Client::new()
        .post(format!("http://{addr}/track/{PORTAL}"))
        .header("origin", ORIGIN)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
        )
        .header("content-type", "text/plain")
        .body(batch.to_string())
        .send()
        .await?
        .status();
    anyhow::ensure!(status.as_u16() == 204, "tracking refused: {status}");
    Ok(())
}

/// The site's backend after a form: `POST /identify`, signed with the portal's secret
/// (or not, as a browser pretending to be the backend would).
async fn identify(
    addr: SocketAddr,
    secret: &SecretString,
    body: Value,
    signed: bool,
) -> anyhow::Result<(u16, Value)> {
    let body = body.to_string();
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/identify/{PORTAL}"))
        .body(body.clone());
    if signed {
        let ts = Utc::now().timestamp();
        req = req
            .header(identify::TIMESTAMP_HEADER, ts.to_string())
            .header(
                identify::SIGNATURE_HEADER,
                identify::sign(secret, ts, body.as_bytes()),
            );
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// The lead's score and card line, as the CRM holds them.
fn card(portal: &ScenePortal, id: u64) -> (i64, String) {
    let lead = portal.sandbox.get_lead(id).unwrap_or(Value::Null);
    let score = lead["UF_CRM_LEADSCORE"]
        .as_i64()
        .or_else(|| {
            lead["UF_CRM_LEADSCORE"]
                .as_str()
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or(0);
    let why = lead["UF_CRM_LEADSCORE_WHY"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (score, why)
}

/// Run the scene and print what a rep and an admin would see.
pub async fn run(dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let secret = random_token(40);
    let tracking = format!(
        "[portal.tracking]\nsite_key = \"{SITE_KEY}\"\nallowed_origins = [\"{ORIGIN}\"]\nidentify_secret = \"{secret}\"\n\n[portal.fields.map]\n"
    );
    let edit = |text: String| {
        // The model comes last in the demo config: the rule joins the example's rules.
        text.replacen("[portal.fields.map]\n", &tracking, 1) + BUYING_GROUP_RULE
    };
    let portal = ScenePortal::start(
        dir,
        Scene {
            name: "site",
            simple_mode: false,
            edit: &edit,
            events: &["ONCRMLEADADD", "ONCRMLEADUPDATE", "ONCRMACTIVITYADD"],
        },
    )
    .await?;
    anyhow::ensure!(
        portal.config.portals[0].tracking.is_some() && !portal.config.model.rule_tasks().is_empty(),
        "the demo config template changed: the website scene has no tracking or buying group"
    );
    let secret = SecretString::from(secret);
    let addr = portal.running.addr;
    writeln!(
        out,
        "\nphase 5: the company's website ({ORIGIN}) sends page views to the daemon"
    )?;

    // Anna left a request by phone last week: the CRM has her lead and her e-mail.
    let anna = portal.sandbox.add_lead(json!({
        "TITLE": "Ромашка: станки", "NAME": "Анна", "LAST_NAME": "Смирнова",
        "POST": "Генеральный директор", "ASSIGNED_BY_ID": "3", "COMPANY_TITLE": "Ромашка",
        "EMAIL": [{"VALUE": "Anna.Smirnova@romashka-demo.ru", "VALUE_TYPE": "WORK"}],
        "UF_CRM_INDUSTRY": "Производство", "UF_CRM_REVENUE": "800000000",
        "UF_CRM_EMPLOYEES": "240", "UF_CRM_REGION": "Москва",
    }))?;
    portal.settle().await?;
    let (before, _) = card(&portal, anna);

    // She reads the prices on the site; the browser is anonymous so far.
    let visitor = "v-2b7c1e9a-anna-laptop";
    track(
        addr,
        visitor,
        json!([
            {"t": "page_view", "u": format!("{ORIGIN}/pricing"), "ti": "Цены"},
            {"t": "download", "u": format!("{ORIGIN}/files/price-2027.pdf"), "ti": "Прайс-лист 2027"}
        ]),
    )
    .await?;
    portal.settle().await?;
    let (anonymous, _) = card(&portal, anna);
    writeln!(
        out,
        "lead {anna} (Анна Смирнова, CEO): score {before}; she reads the pricing page and downloads the price list as an anonymous visitor: score still {anonymous}"
    )?;

    // A page script claiming her e-mail is no proof: refused, nothing attached.
    let claim = json!({"visitor": visitor, "email": "anna.smirnova@romashka-demo.ru"});
    let (unsigned, _) = identify(addr, &secret, claim.clone(), false).await?;
    // She sends the site's contact form; its backend identifies her, signed.
    let (status, answer) = identify(addr, &secret, claim, true).await?;
    anyhow::ensure!(status == 200, "identify failed: {status} {answer}");
    portal.settle().await?;
    let (after, why) = card(&portal, anna);
    writeln!(
        out,
        "an unsigned identify (a browser claiming her e-mail): {unsigned}, nothing attached"
    )?;
    writeln!(
        out,
        "the form's backend identifies her by e-mail (signed): {status} {answer}; the CRM lead is found by crm.duplicate.findbycomm"
    )?;
    // The card lines the visits added (the fit lines were there before).
    let visits: Vec<&str> = why
        .split("; ")
        .filter(|part| {
            let p = part.to_lowercase();
            p.contains("цен") || p.contains("прайс")
        })
        .collect();
    let tasks = portal.sandbox.tasks().len();
    writeln!(
        out,
        "lead {anna}: score {anonymous} → {after} ({}); call-now tasks: {tasks}",
        visits.join("; ")
    )?;

    // Two colleagues read the prices too and leave their e-mails in the form: three
    // people of one company at once, a buying group.
    let colleagues = [
        (
            "Пётр",
            "Кузнецов",
            "Технический директор",
            "p.kuznetsov@romashka-demo.ru",
            "v-5d1f0c2e-petr",
        ),
        (
            "Ольга",
            "Иванова",
            "Менеджер по закупкам",
            "o.ivanova@romashka-demo.ru",
            "v-9a4b7d31-olga",
        ),
    ];
    let mut ids = vec![anna];
    for (name, last, post, email, _) in colleagues {
        ids.push(portal.sandbox.add_lead(json!({
            "TITLE": "Ромашка: станки", "NAME": name, "LAST_NAME": last, "POST": post,
            "ASSIGNED_BY_ID": "3", "EMAIL": [{"VALUE": email, "VALUE_TYPE": "WORK"}],
            "COMPANY_TITLE": "Ромашка",
        }))?);
    }
    portal.settle().await?;
    for (.., email, visitor) in colleagues {
        let page = json!([{"t": "page_view", "u": format!("{ORIGIN}/pricing"), "ti": "Цены"}]);
        track(addr, visitor, page).await?;
        let (status, answer) = identify(
            addr,
            &secret,
            json!({"visitor": visitor, "email": email}),
            true,
        )
        .await?;
        anyhow::ensure!(status == 200, "identify failed: {status} {answer}");
    }
    portal.settle().await?;
    writeln!(
        out,
        "two colleagues read the prices and send the form: three people of romashka-demo.ru active this week"
    )?;
    for id in &ids {
        let (score, why) = card(&portal, *id);
        let group = why
            .split("; ")
            .find(|p| p.contains("группа закупки"))
            .unwrap_or("no group line");
        writeln!(out, "lead {id} now scores {score}: {group}")?;
    }
    let tasks = portal.sandbox.tasks();
    for t in &tasks {
        writeln!(
            out,
            "task for rep {} on {}: {}",
            t.responsible_id,
            t.crm_bindings.join(","),
            t.title
        )?;
    }
    let store = &portal.store;
    let raw_in_store = store
        .visitor_lead(PORTAL, visitor)
        .context("cannot read the visitor")?;
    writeln!(
        out,
        "sled keeps the visitor → lead link ({}), never the e-mail (only its keyed hash)",
        raw_in_store.as_deref().unwrap_or("none")
    )?;
    portal.stop().await
}
