//! `forget`: erase one person's tracking data, named by a visitor id, a lead, an e-mail
//! or a phone, and say what was erased (an answer to a 152-FZ / GDPR erasure request).
//! The same code runs in `leadscore forget` on a stopped daemon's store and behind the
//! running daemon's `POST /admin/forget`.

use super::contact::ContactPoint;
use crate::store::{Store, StoreError};

/// Whose tracking data `forget` erases: exactly one of the four.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ForgetRequest {
    pub portal: String,
    /// One visitor id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor: Option<String>,
    /// Every visitor identified as this lead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<String>,
    /// Every visitor identified by this e-mail, and its cached resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Every visitor identified by this phone, and its cached resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// What `forget` erased, to show the person (or the admin answering their request).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForgetReport {
    pub visitors: Vec<String>,
    pub events: usize,
    pub identities: usize,
    /// Cached e-mail / phone → lead resolutions erased.
    #[serde(default)]
    pub resolutions: usize,
}

/// Why nothing was erased.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// The request does not name one person (the admin endpoint answers 400).
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ForgetRequest {
    /// The e-mail or phone named, normalised (`None`: a visitor or lead is named).
    fn contact(&self) -> Result<Option<ContactPoint>, ForgetError> {
        let named = [
            self.visitor.is_some(),
            self.lead.is_some(),
            self.email.is_some(),
            self.phone.is_some(),
        ];
        if named.iter().filter(|n| **n).count() != 1 {
            return Err(ForgetError::Request(
                "name exactly one of visitor, lead, email and phone".into(),
            ));
        }
        let bad = |what: &str| ForgetError::Request(format!("{what} is malformed"));
        match (&self.email, &self.phone) {
            (Some(e), _) => ContactPoint::email(e).map(Some).ok_or_else(|| bad("email")),
            (_, Some(p)) => ContactPoint::phone(p).map(Some).ok_or_else(|| bad("phone")),
            _ => Ok(None),
        }
    }
}

/// Erase the tracking data a request names (events, identities, index entries, cached
/// resolutions).
pub fn forget(store: &Store, req: &ForgetRequest) -> Result<ForgetReport, ForgetError> {
    let mut report = ForgetReport::default();
    let visitors = match (req.contact()?, &req.visitor, &req.lead) {
        (Some(who), _, _) => {
            let traces = store.forget_contact(&req.portal, &who)?;
            report.resolutions = traces.resolutions;
            traces.visitors
        }
        (None, Some(v), _) => vec![v.clone()],
        (None, None, Some(lead)) => {
            report.resolutions = store.forget_lead_contacts(&req.portal, lead)?;
            store.visitors_of_lead(&req.portal, lead)?
        }
        (None, None, None) => Vec::new(),
    };
    for v in &visitors {
        let gone = store.forget_visitor(&req.portal, v)?;
        report.events += gone.events;
        report.identities += usize::from(gone.identified_as.is_some());
    }
    report.visitors = visitors;
    Ok(report)
}
