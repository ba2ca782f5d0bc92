//! `crm.duplicate.findbycomm`: the ids of the records holding any of up to 20 e-mails
//! or phones, as `{"LEAD": [ids]}` (integers, ascending), or PHP's empty array `[]`
//! when nothing matches. Like the portal's duplicate index, e-mails match without
//! regard to case and surrounding spaces, and phones on their digits only (no trunk
//! prefix is rewritten: `8 912…` and `+7 912…` are different numbers to it). The
//! sandbox holds leads only, so `CONTACT` and `COMPANY` never match; no `entity_type`
//! searches every type.

use serde_json::{json, Map, Value};

use super::api::Output;
use super::php::{as_list, param, scalar_string};
use super::store::{ApiError, State};

/// Most values one call may carry.
const MAX_VALUES: usize = 20;

/// Runs the method.
pub(crate) fn find_by_comm(st: &State, p: &Map<String, Value>) -> Result<Output, ApiError> {
    let kind = param(p, &["type", "TYPE"])
        .and_then(scalar_string)
        .map(|t| t.to_ascii_uppercase())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                400,
                "Communication type is not defined",
                "Parameter 'type' is required.",
            )
        })?;
    if kind != "EMAIL" && kind != "PHONE" {
        return Err(ApiError::new(
            400,
            "",
            format!("Communication type '{kind}' is not supported in current context"),
        ));
    }
    let values: Vec<String> = param(p, &["values", "VALUES"])
        .map(as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(scalar_string)
        .filter(|v| !v.trim().is_empty())
        .take(MAX_VALUES)
        .collect();
    if values.is_empty() {
        return Err(ApiError::new(
            400,
            "",
            "Communication values is not defined",
        ));
    }
    let entity = param(p, &["entity_type", "ENTITY_TYPE"])
        .and_then(scalar_string)
        .map(|e| e.to_ascii_uppercase());
    if entity.as_deref().is_some_and(|e| e != "LEAD") {
        return Ok(Output::plain(json!([])));
    }
    let norm = |v: &str| normalize(&kind, v);
    let wanted: Vec<String> = values.iter().map(|v| norm(v)).collect();
    let ids: Vec<u64> = st
        .leads
        .values()
        .filter(|l| {
            l.multi
                .iter()
                .any(|m| m.type_id == kind && wanted.contains(&norm(&m.value)))
        })
        .map(|l| l.id)
        .collect();
    Ok(Output::plain(if ids.is_empty() {
        json!([])
    } else {
        json!({ "LEAD": ids })
    }))
}

/// The form the duplicate index keeps a value in.
fn normalize(kind: &str, v: &str) -> String {
    if kind == "PHONE" {
        v.chars().filter(char::is_ascii_digit).collect()
    } else {
        v.trim().to_lowercase()
    }
}
