//! Bitrix24 outgoing webhooks → subjects for the queue.

use leadscore_bitrix24::webhook::{self, EventKind, WebhookError};

use crate::intake::{Decoded, IntakeError};
use super::settings::Settings;
use crate::config::Portal;
use crate::crm::Subject;

/// Authenticate, parse and route one Bitrix24 event. The application token is checked
/// first, by a linear scan of the raw body, so a body without it is refused (401) before
/// anything is decoded. Lead events queue the lead; activity events queue the activity
/// (its lead is looked up by a worker, since the event carries only the activity id);
/// deal events queue the deal as `D_<id>` when the portal scores deals (`entities`),
/// and events of an entity the portal does not score are ignored with a debug line;
/// everything else is acknowledged and ignored. With `max_event_age_secs` set, an event
/// whose `ts` is missing or too far from now is refused as a replay (401). The query
/// string is not used: Bitrix24 authenticates events by the token in the body.
pub fn decode(portal: &Portal, _query: Option<&str>, body: &[u8]) -> Result<Decoded, IntakeError> {
    let settings = portal
        .settings_of::<Settings>()
        .ok_or(IntakeError::UnknownPortal)?;
    let check = &settings.webhook;
    let entities = settings.entities;
    let Some(token) = check.secret.as_ref() else {
        // Validation requires a token for Bitrix24 portals; refuse rather than trust.
        return Err(IntakeError::Unauthorized("no application token configured"));
    };
    webhook::authenticate(body, token)
        .map_err(|_| IntakeError::Unauthorized("wrong application token"))?;
    let unverified = webhook::parse(body).map_err(|e| IntakeError::Malformed(e.to_string()))?;
    let event = unverified
        .verify(
            token,
            check.member_id.as_deref(),
            check.domain.as_deref(),
        )
        .map_err(|e| match e {
            WebhookError::WrongPortal(what) => IntakeError::Unauthorized(match what {
                "member_id" => "member_id does not match the portal",
                _ => "domain does not match the portal",
            }),
            _ => IntakeError::Unauthorized("wrong application token"),
        })?;
    if let Some(max_age) = check.max_event_age_secs {
        if !event.is_fresh(chrono::Utc::now().timestamp(), max_age) {
            return Err(IntakeError::Unauthorized(
                "event ts is missing or older than max_event_age_secs (a replay?)",
            ));
        }
    }
    let subjects = match (event.kind, event.entity_id.clone()) {
        (k, Some(id)) if k.is_lead() && entities.lead => vec![Subject::Lead(id)],
        // A deal is scored under `D_<id>` (Bitrix24's binding notation).
        (k, Some(id)) if k.is_deal() && entities.deal => {
            vec![Subject::Lead(super::entity::Entity::Deal.id(&id))]
        }
        (k, _) if k.is_lead() || k.is_deal() => {
            tracing::debug!(portal = %portal.id, event = %event.name, "event of an entity this portal does not score (`entities`): ignored");
            Vec::new()
        }
        // A deleted activity changes its lead's score too, but its owner can no longer
        // be looked up; the reconciliation sweep covers that lead.
        (EventKind::ActivityDelete, _) => Vec::new(),
        (k, Some(id)) if k.is_activity() => vec![Subject::Activity(id)],
        _ => Vec::new(),
    };
    let detail = match &event.entity_id {
        Some(id) => format!("{} {}", event.name, id),
        None => event.name.clone(),
    };
    // Bitrix24 names activities by their own events (activity subjects, resolved to
    // their lead in the worker turn), so no lead event vouches for its activities.
    Ok(Decoded {
        subjects,
        detail,
        activities: Vec::new(),
    })
}
