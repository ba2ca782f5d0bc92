//! Loads a history of closed leads (e.g. `backtest::generate`'s) into the amoCRM
//! sandbox as an account would hold it, so outcome reads and backtests run against
//! real HTTP: each lead in stage 142 (won) or 143 (lost) with `closed_at`, `price`, the
//! responsible rep (added as a user) and, when lost, a loss reason from the account's
//! list; fit data in the custom fields `fields.map` names (created when missing), job
//! title, e-mail and phone on a main contact, the company linked; calls as call notes
//! (amoCRM adds the `incoming_call` event beside each), e-mails as mail events, and
//! website behaviour as common notes tagged `[demo]`, `[page] https://…`, … (how a
//! site tracker records it and how the reader classifies it back).

use std::collections::BTreeMap;

use leadscore_amocrm_sandbox::{
    FieldSpec, FieldType, FieldValue, NewCompany, NewContact, NewEvent, NewLead, SandboxHandle,
    User,
};
use serde_json::json;

use super::settings::{STATUS_LOST, STATUS_WON};
use crate::backtest::{ClosedLead, Outcome};
use crate::config::FieldsSection;
use crate::lead::{Activity, ActivityKind, Direction};

/// The site whose pages seeded page views point at (the tag reader needs a full URL).
const SITE: &str = "https://site.example";

/// The example's `[scoring]` with an amoCRM portal `demo` on `sb` (long-lived token)
/// whose `[portal.fields.map]` points at fit fields created in the account, its
/// store in `data_dir`: the config of the amoCRM outcome tests.
pub fn backtest_config_for(sb: &SandboxHandle, data_dir: &std::path::Path) -> anyhow::Result<String> {
    let fit = crate::demo_amocrm::create_fit_fields(sb);
    crate::demo_amocrm::config_text(data_dir, sb, "sandbox-history-secret-0123456789", fit)
}

fn field_type(field: &str) -> FieldType {
    match field {
        "revenue" | "employees" => FieldType::Numeric,
        _ => FieldType::Text,
    }
}

/// Seed `history` into `sb`; lead fields go to the custom fields `fields.map` names
/// (by id; a name that is not an id creates a field of that name). Returns the new
/// lead ids in the order of `history`.
pub fn seed_history(
    sb: &SandboxHandle,
    fields: &FieldsSection,
    history: &[ClosedLead],
) -> anyhow::Result<Vec<u64>> {
    let existing: Vec<u64> = sb.lead_fields().iter().map(|f| f.id).collect();
    let mut field_ids: BTreeMap<String, u64> = BTreeMap::new();
    for (field, target) in &fields.map {
        let id = match target.trim().parse::<u64>() {
            Ok(id) if existing.contains(&id) => id,
            _ => sb.create_lead_field(FieldSpec::new(target, field_type(field))).id,
        };
        field_ids.insert(field.clone(), id);
    }
    let users: Vec<u64> = sb.users().iter().map(|u| u.id).collect();
    let mut ids = Vec::with_capacity(history.len());
    for c in history {
        let l = &c.lead;
        let rep = c.rep().and_then(|r| r.parse::<u64>().ok()).filter(|r| *r != 0);
        if let Some(r) = rep.filter(|r| !users.contains(r)) {
            sb.add_user(User {
                id: r,
                name: format!("Менеджер {r}"),
                email: format!("rep{r}@sandbox.test"),
                is_admin: false,
            });
        }
        let mut values = Vec::new();
        for (field, id) in &field_ids {
            let v = match field.as_str() {
                "industry" => l.industry.clone().map(FieldValue::Text),
                "region" => l.region.clone().map(FieldValue::Text),
                "revenue" => l.revenue.map(FieldValue::Number),
                "employees" => l.employees.map(FieldValue::Number),
                "source" => l.source.clone().map(FieldValue::Text),
                other => l
                    .custom
                    .get(other.strip_prefix("custom.").unwrap_or(other))
                    .cloned()
                    .map(FieldValue::Text),
            };
            if let Some(v) = v {
                values.push((*id, v));
            }
        }
        let won = c.outcome == Outcome::Won;
        let lead = NewLead {
            name: l.name.clone().unwrap_or_else(|| format!("Lead {}", l.id)),
            price: c.amount.map_or(0, |a| a.round() as i64),
            status_id: Some(if won { STATUS_WON } else { STATUS_LOST }),
            responsible_user_id: rep,
            created_at: Some(c.created_at.timestamp()),
            updated_at: Some(c.closed_at.timestamp()),
            closed_at: Some(c.closed_at.timestamp()),
            loss_reason_id: (!won)
                .then(|| c.loss_reason.as_deref().map(|r| sb.add_loss_reason(r)))
                .flatten(),
            fields: values,
            ..NewLead::default()
        };
        let id = sb
            .add_lead(lead)
            .map_err(|e| anyhow::anyhow!("cannot add lead {}: {e}", l.id))?;
        let contact = sb
            .add_contact(NewContact {
                name: l.name.clone().unwrap_or_default(),
                position: l.position.clone(),
                emails: l.emails.clone(),
                phones: l.phones.clone(),
                responsible_user_id: rep,
                company_id: None,
            })
            .map_err(|e| anyhow::anyhow!("cannot add a contact: {e}"))?;
        sb.link_contact(id, contact, true)
            .map_err(|e| anyhow::anyhow!("cannot link a contact: {e}"))?;
        if let Some(co) = &l.company {
            let company = sb.add_company(NewCompany::named(co));
            sb.link_company(id, company)
                .map_err(|e| anyhow::anyhow!("cannot link a company: {e}"))?;
        }
        for a in &c.activities {
            add_activity(sb, id, a).map_err(|e| anyhow::anyhow!("cannot add an activity: {e}"))?;
        }
        ids.push(id);
    }
    Ok(ids)
}

/// One neutral activity as the note or event the reader classifies back as the same kind.
fn add_activity(
    sb: &SandboxHandle,
    lead: u64,
    a: &Activity,
) -> Result<(), leadscore_amocrm_sandbox::SandboxError> {
    let at = a.at.timestamp();
    let out = a.direction == Some(Direction::Outgoing);
    let subject = a.subject.clone().unwrap_or_default();
    let tagged = |tag: &str, rest: &str| format!("{tag} {rest}").trim().to_string();
    let text = match &a.kind {
        ActivityKind::Call => {
            let params = json!({"uniq": format!("{lead}-{at}"), "duration": 60, "source": "sandbox",
                                "link": "", "phone": "", "call_result": "", "call_status": 4});
            sb.add_note_at(lead, if out { "call_out" } else { "call_in" }, params, at)?;
            return Ok(());
        }
        ActivityKind::Email => {
            let kind = if out { "outgoing_mail" } else { "incoming_mail" };
            sb.add_event(NewEvent::lead(lead, kind).at(at))?;
            return Ok(());
        }
        ActivityKind::PageView => {
            let url = a.url.as_deref().map_or(String::new(), |u| {
                if u.starts_with("http") {
                    u.to_string()
                } else {
                    format!("{SITE}{u}")
                }
            });
            tagged("[page]", &url)
        }
        ActivityKind::DemoRequest => tagged("[demo]", &subject),
        ActivityKind::Download => tagged("[download]", &subject),
        ActivityKind::Form => tagged("[form]", &subject),
        ActivityKind::Meeting => tagged("[meeting]", &subject),
        ActivityKind::EmailOpen => tagged("[email_open]", &subject),
        other => tagged(&format!("[{}]", other.as_str()), &subject),
    };
    sb.add_note_at(lead, "common", json!({"text": text}), at)?;
    Ok(())
}
