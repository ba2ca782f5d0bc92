//! amoCRM's search: `GET /api/v4/contacts?query=…&with=leads`, the contacts whose name
//! or any field (phones and e-mails included) matches a text, with their leads' ids.
//! Kept apart from the client's transport and its id-based reads.

use serde_json::Value;

use crate::client::Client;
use crate::error::Error;
use crate::types::{Contact, Page};

impl Client {
    /// The contacts amoCRM's search finds for `query`, with `_embedded.leads`; the first
    /// page only (50), enough for one person.
    pub async fn contacts_by_query(&self, query: &str) -> Result<Vec<Contact>, Error> {
        let q = percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
        let path = format!("/api/v4/contacts?query={q}&with=leads&limit=50");
        let Some(v) = self.get(&path).await? else {
            return Ok(Vec::new());
        };
        let page: Page = serde_json::from_value(v).map_err(|e| Error::Decode {
            what: "/api/v4/contacts".into(),
            detail: e.to_string(),
        })?;
        match page.embedded.get("contacts") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|c| {
                    serde_json::from_value(c.clone()).map_err(|e| Error::Decode {
                        what: "contacts item".into(),
                        detail: e.to_string(),
                    })
                })
                .collect(),
            _ => Ok(Vec::new()),
        }
    }
}
