//! Loads a history of closed leads (e.g. `backtest::generate`'s) into the Bitrix24
//! sandbox as the portal would hold it, so outcome reads and backtests run against real
//! HTTP: a converted lead with a won (`WON`) deal per win; per loss, a junk lead
//! (`JUNK`) or a converted lead with a lost (`LOSE`) deal, alternately; activities as
//! calls, meetings and e-mails by `TYPE_ID`, web behaviour by subject tags
//! (`[page] https://…`), which is how the classifier reads them back.

use chrono::{DateTime, SecondsFormat, Utc};
use leadscore_bitrix24_sandbox::SandboxHandle;
use serde_json::{json, Map, Value};

use crate::backtest::{ClosedLead, Outcome};
use crate::config::FieldsSection;
use crate::lead::{Activity, ActivityKind, Direction};

/// `config/leadscore.example.toml` pointed at the sandbox (its inbound webhook, a test
/// application token) with its store in `data_dir`: the config of outcome tests and of
/// the pull bench.
pub fn example_config_for(sb: &SandboxHandle, data_dir: &std::path::Path) -> String {
    use secrecy::ExposeSecret;
    include_str!("../../../config/leadscore.example.toml")
        .replace(
            "webhook_url_env = \"LEADSCORE_B24_WEBHOOK_URL\"",
            &format!("webhook_url = \"{}\"", sb.webhook_url().expose_secret()),
        )
        .replace(
            "application_token_env = \"LEADSCORE_B24_APP_TOKEN\"",
            "application_token = \"sandbox-history-token-0123456789\"",
        )
        .replace(
            "data_dir = \"/var/lib/leadscore\"",
            &format!("data_dir = {:?}", data_dir.display().to_string()),
        )
}

/// The site whose pages seeded page views point at (the tag reader needs a full URL).
const SITE: &str = "https://site.example";

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Seed `history` into `sb`; lead fields go to the user fields `fields.map` names
/// (created when missing). Returns the new lead ids in the order of `history`.
pub fn seed_history(
    sb: &SandboxHandle,
    fields: &FieldsSection,
    history: &[ClosedLead],
) -> anyhow::Result<Vec<u64>> {
    let existing: Vec<String> = sb
        .userfields()
        .iter()
        .filter_map(|u| u.get("FIELD_NAME").and_then(Value::as_str).map(String::from))
        .collect();
    for (field, uf) in &fields.map {
        if existing.contains(uf) {
            continue;
        }
        let numeric = matches!(field.as_str(), "revenue" | "employees");
        sb.add_userfield(json!({"FIELD_NAME": uf, "USER_TYPE_ID": if numeric { "double" } else { "string" }, "LABEL": field}))
            .map_err(|e| anyhow::anyhow!("cannot add {uf}: {e}"))?;
    }
    let mut ids = Vec::with_capacity(history.len());
    for (i, c) in history.iter().enumerate() {
        let l = &c.lead;
        let junk = c.outcome == Outcome::Lost && i % 2 == 0;
        let mut f = Map::new();
        f.insert("TITLE".into(), json!(l.company.clone().unwrap_or_else(|| format!("Lead {}", l.id))));
        if let Some(n) = &l.name {
            f.insert("NAME".into(), json!(n));
        }
        if let Some(p) = &l.position {
            f.insert("POST".into(), json!(p));
        }
        if let Some(co) = &l.company {
            f.insert("COMPANY_TITLE".into(), json!(co));
        }
        if let Some(s) = &l.source {
            f.insert("SOURCE_ID".into(), json!(s));
        }
        if let Some(r) = c.rep() {
            f.insert("ASSIGNED_BY_ID".into(), json!(r));
        }
        let multi = |v: &[String], t: &str| -> Value {
            v.iter()
                .map(|x| json!({"VALUE": x, "VALUE_TYPE": "WORK", "TYPE_ID": t}))
                .collect()
        };
        f.insert("EMAIL".into(), multi(&l.emails, "EMAIL"));
        f.insert("PHONE".into(), multi(&l.phones, "PHONE"));
        for (field, uf) in &fields.map {
            let v = match field.as_str() {
                "industry" => l.industry.clone().map(Value::from),
                "region" => l.region.clone().map(Value::from),
                "revenue" => l.revenue.map(Value::from),
                "employees" => l.employees.map(Value::from),
                other => l.custom.get(other.strip_prefix("custom.").unwrap_or(other)).cloned().map(Value::from),
            };
            if let Some(v) = v {
                f.insert(uf.clone(), v);
            }
        }
        f.insert("STATUS_ID".into(), json!(if junk { "JUNK" } else { "CONVERTED" }));
        f.insert("DATE_CREATE".into(), json!(at(c.created_at)));
        f.insert("DATE_MODIFY".into(), json!(at(c.closed_at)));
        if junk {
            if let Some(a) = c.amount {
                f.insert("OPPORTUNITY".into(), json!(a));
            }
        }
        let id = sb
            .add_lead(Value::Object(f))
            .map_err(|e| anyhow::anyhow!("cannot add lead {}: {e}", l.id))?;
        if !junk {
            let stage = if c.outcome == Outcome::Won { "WON" } else { "LOSE" };
            sb.add_deal(json!({
                "TITLE": format!("Deal of lead {id}"), "LEAD_ID": id, "STAGE_ID": stage,
                "OPPORTUNITY": c.amount.unwrap_or(0.0), "CLOSEDATE": at(c.closed_at),
                "DATE_CREATE": at(c.created_at), "ASSIGNED_BY_ID": c.rep(),
            }))
            .map_err(|e| anyhow::anyhow!("cannot add a deal: {e}"))?;
        }
        for a in &c.activities {
            sb.add_activity(activity_fields(id, a))
                .map_err(|e| anyhow::anyhow!("cannot add an activity: {e}"))?;
        }
        ids.push(id);
    }
    Ok(ids)
}

/// One neutral activity as a `crm.activity.add` the classifier reads back as the same kind.
fn activity_fields(lead: u64, a: &Activity) -> Value {
    let direction = match a.direction {
        Some(Direction::Outgoing) => 2,
        _ => 1,
    };
    let subject = a.subject.clone().unwrap_or_default();
    let url = a.url.as_deref().map(|u| {
        if u.starts_with("http") {
            u.to_string()
        } else {
            format!("{SITE}{u}")
        }
    });
    let (type_id, subject) = match &a.kind {
        ActivityKind::Call => (2, subject),
        ActivityKind::Meeting => (1, subject),
        ActivityKind::Email => (4, subject),
        ActivityKind::DemoRequest => (6, format!("[demo] {subject}")),
        ActivityKind::Download => (6, format!("[download] {subject}")),
        ActivityKind::PageView => (6, format!("[page] {}", url.clone().unwrap_or_default())),
        ActivityKind::Form => (6, format!("[form] {subject}")),
        ActivityKind::EmailOpen => (6, format!("[email_open] {subject}")),
        other => (6, format!("[{}] {subject}", other.as_str())),
    };
    json!({
        "OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": type_id, "PROVIDER_ID": "REST_APP",
        "SUBJECT": subject.trim(), "DESCRIPTION": url.unwrap_or_default(), "DIRECTION": direction,
        "COMPLETED": "Y", "START_TIME": at(a.at), "CREATED": at(a.at),
    })
}
