//! amoCRM webhooks → subjects for the queue.
//!
//! amoCRM does not sign CRM webhooks: the hook URL carries our secret
//! (`/webhooks/amocrm/{portal}?secret=…`), compared in constant time, and the body's
//! `account[id]` / `account[subdomain]` must be the portal's when the config names
//! them. One POST may carry several leads and actions; each lead is queued once.

use leadscore_amocrm::webhook::{self, WebhookError};

use crate::intake::{Decoded, IntakeError};
use super::settings::Settings;
use crate::config::Portal;
use crate::crm::Subject;

/// Authenticate (the URL's secret, before the body is decoded), parse and route one
/// amoCRM webhook. Lead events and notes on leads
/// (and chat messages bound to a lead) queue the lead; contacts, companies, tasks and
/// anything else are acknowledged and ignored.
pub fn decode(portal: &Portal, query: Option<&str>, body: &[u8]) -> Result<Decoded, IntakeError> {
    let check = &portal
        .settings_of::<Settings>()
        .ok_or(IntakeError::UnknownPortal)?
        .webhook;
    let Some(secret) = check.secret.as_ref() else {
        // Validation requires a secret for amoCRM portals; refuse rather than trust.
        return Err(IntakeError::Unauthorized("no webhook secret configured"));
    };
    // The secret first, from the query alone: a stranger's body is never decoded.
    webhook::authenticate(query, secret).map_err(|e| {
        IntakeError::Unauthorized(match e {
            WebhookError::MissingSecret => "no secret in the webhook URL",
            _ => "wrong webhook secret",
        })
    })?;
    let given = webhook::query_secret(query);
    let unverified = webhook::parse(body).map_err(|e| IntakeError::Malformed(e.to_string()))?;
    let hook = unverified
        .verify(
            given.as_deref(),
            secret,
            check.account_id.as_deref(),
            check.subdomain.as_deref(),
        )
        .map_err(|e| {
            IntakeError::Unauthorized(match e {
                WebhookError::MissingSecret => "no secret in the webhook URL",
                WebhookError::WrongAccount("account[id]") => {
                    "account[id] does not match the portal"
                }
                WebhookError::WrongAccount(_) => "account[subdomain] does not match the portal",
                _ => "wrong webhook secret",
            })
        })?;
    let subjects = hook.lead_ids().into_iter().map(Subject::Lead).collect();
    Ok(Decoded {
        subjects,
        detail: hook.summary(),
        activities: hook
            .activity_lead_ids()
            .into_iter()
            .map(Subject::Lead)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::config::{FieldsSection, RateLimitSection, TaskSection};
    use crate::crm::amocrm::settings::{Auth, WebhookCheck};
    use crate::crm::amocrm::NAME;

    /// A portal expecting `secret` (and the account, when given).
    pub(crate) fn portal_with(
        secret: Option<&str>,
        account_id: Option<&str>,
        subdomain: Option<&str>,
    ) -> Portal {
        Portal {
            id: "amo".into(),
            crm: NAME,
            settings: std::sync::Arc::new(Settings {
                auth: Auth::LongLived {
                    base_url: "https://x.amocrm.ru".into(),
                    token: SecretString::from("t"),
                },
                webhook: WebhookCheck {
                    secret: secret.map(SecretString::from),
                    account_id: account_id.map(str::to_string),
                    subdomain: subdomain.map(str::to_string),
                },
                outcomes: Default::default(),
            }),
            rate_limit: RateLimitSection {
                per_second: 7.0,
                burst: 7,
                operating_limit_secs: None,
                operating_window_secs: None,
            },
            fields: FieldsSection::default(),
            task: TaskSection::default(),
            threshold: 70,
            rearm_below: 60,
            model: None,
            tracking: None,
            reminder: None,
            stages: Default::default(),
        }
    }

    pub(crate) fn portal(account_id: Option<&str>, subdomain: Option<&str>) -> Portal {
        portal_with(Some("hook-s3cret"), account_id, subdomain)
    }

    const MULTI: &str = "leads%5Bupdate%5D%5B0%5D%5Bid%5D=11&leads%5Bupdate%5D%5B1%5D%5Bid%5D=12\
        &leads%5Bstatus%5D%5B0%5D%5Bid%5D=11&leads%5Bnote%5D%5B0%5D%5Bnote%5D%5Belement_type%5D=2\
        &leads%5Bnote%5D%5B0%5D%5Bnote%5D%5Belement_id%5D=13&contacts%5Bupdate%5D%5B0%5D%5Bid%5D=99\
        &account%5Bid%5D=29715442&account%5Bsubdomain%5D=ablaser";

    #[test]
    fn every_lead_once_notes_to_their_lead_other_entities_ignored() {
        let d = decode(
            &portal(Some("29715442"), Some("ablaser")),
            Some("secret=hook-s3cret"),
            MULTI.as_bytes(),
        )
        .unwrap();
        let mut got = d.subjects.clone();
        got.sort();
        assert_eq!(
            got,
            vec![
                Subject::Lead("11".into()),
                Subject::Lead("12".into()),
                Subject::Lead("13".into())
            ]
        );
        assert!(d.detail.contains("leads[update]") && d.detail.contains("contacts[update]"));
        // Only the note's lead had its activities changed (11 and 12 were updated, 11's
        // status moved: none of that says anything of their notes).
        assert_eq!(d.activities, vec![Subject::Lead("13".into())]);
        let d = decode(
            &portal(None, None),
            Some("secret=hook-s3cret"),
            b"contacts[add][0][id]=1&account[id]=5",
        )
        .unwrap();
        assert!(d.subjects.is_empty());
    }

    #[test]
    fn secret_and_account_are_checked() {
        let p = portal(Some("29715442"), Some("ablaser"));
        for q in [
            None,
            Some(""),
            Some("secret="),
            Some("secret=nope"),
            Some("x=hook-s3cret"),
        ] {
            assert!(
                matches!(
                    decode(&p, q, MULTI.as_bytes()),
                    Err(IntakeError::Unauthorized(_))
                ),
                "{q:?}"
            );
        }
        let other_account = portal(Some("1"), None);
        assert!(matches!(
            decode(&other_account, Some("secret=hook-s3cret"), MULTI.as_bytes()),
            Err(IntakeError::Unauthorized(
                "account[id] does not match the portal"
            ))
        ));
        let other_sub = portal(None, Some("other"));
        assert!(matches!(
            decode(&other_sub, Some("secret=hook-s3cret"), MULTI.as_bytes()),
            Err(IntakeError::Unauthorized(
                "account[subdomain] does not match the portal"
            ))
        ));
        let no_secret = portal_with(None, None, None);
        assert!(matches!(
            decode(&no_secret, Some("secret=hook-s3cret"), MULTI.as_bytes()),
            Err(IntakeError::Unauthorized(_))
        ));
    }

    #[test]
    fn without_the_secret_the_body_is_never_parsed() {
        let p = portal(None, None);
        // Malformed, and 80 kB of `a[]`: both refused for the secret, not the body.
        let repro = vec!["a[]"; 20_000].join("&");
        for body in [&b"a=%zz"[..], repro.as_bytes()] {
            assert!(matches!(
                decode(&p, Some("secret=nope"), body),
                Err(IntakeError::Unauthorized("wrong webhook secret"))
            ));
        }
        let query = format!("{repro}&secret=nope");
        assert!(matches!(
            decode(&p, Some(&query), MULTI.as_bytes()),
            Err(IntakeError::Unauthorized(_))
        ));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let p = portal(None, None);
        for body in [
            &b"{\"leads\":1}"[..],
            b"leads[update][0][name]=no-id&account[id]=1",
            b"leads[update][0][id]=1",
            b"a=%zz",
        ] {
            assert!(
                matches!(
                    decode(&p, Some("secret=hook-s3cret"), body),
                    Err(IntakeError::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

/// Bodies the sandbox account really POSTs (its own v2 form encoder) decode.
#[cfg(test)]
mod sandbox_tests {
    use leadscore_amocrm::types::{FieldWrite, LeadUpdate};
    use leadscore_amocrm::{Auth, Client, ClientConfig};
    use leadscore_amocrm_sandbox::{FieldSpec, FieldType, NewLead, Sandbox, SandboxOptions};
    use serde_json::json;

    use super::tests::portal;
    use super::*;

    #[tokio::test]
    async fn decodes_what_the_account_sends_including_our_own_write() {
        let sb = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
        // Nobody listens on port 9: deliveries fail, but their bodies are recorded.
        sb.add_webhook(
            "http://127.0.0.1:9/webhooks/amocrm/amo?secret=hook-s3cret",
            &[
                "add_lead",
                "update_lead",
                "status_lead",
                "note_lead",
                "add_contact",
            ],
        );
        let score =
            sb.create_lead_field(FieldSpec::new("Lead score", FieldType::Numeric).api_only());
        let a = sb.add_lead(NewLead::named("ACME")).unwrap();
        let b = sb.add_lead(NewLead::named("Globex")).unwrap();
        sb.add_note(a, "common", json!({"text": "[demo] Заявка"}))
            .unwrap();
        let client = Client::new(
            ClientConfig::new(sb.base_url()),
            Auth::LongLived(sb.long_lived_token().unwrap()),
        )
        .unwrap();
        // The daemon's own write of two scores in one PATCH: one hook with both leads.
        client
            .patch_leads_once(&[
                LeadUpdate {
                    id: a,
                    fields: vec![(score.id, FieldWrite::Number(71.0))],
                },
                LeadUpdate {
                    id: b,
                    fields: vec![(score.id, FieldWrite::Number(12.0))],
                },
            ])
            .await
            .unwrap();
        sb.settle().await;
        let deliveries = sb.deliveries();
        assert!(deliveries.len() >= 4, "{}", deliveries.len());
        let p = portal(Some(&sb.account_id().to_string()), Some(&sb.subdomain()));
        let mut all = std::collections::BTreeSet::new();
        for d in &deliveries {
            let decoded = decode(&p, Some("secret=hook-s3cret"), d.body.as_bytes())
                .unwrap_or_else(|e| panic!("{e}: {}", d.body));
            assert!(!decoded.subjects.is_empty(), "{}", d.body);
            all.extend(decoded.subjects);
        }
        assert_eq!(
            all.into_iter().collect::<Vec<_>>(),
            vec![Subject::Lead(a.to_string()), Subject::Lead(b.to_string())]
        );
        // The echo of our write carries the value we wrote (what echo guards compare).
        let echo = deliveries.last().unwrap();
        let hook = leadscore_amocrm::webhook::parse(echo.body.as_bytes())
            .unwrap()
            .verify(
                Some("hook-s3cret"),
                &secrecy::SecretString::from("hook-s3cret"),
                None,
                None,
            )
            .unwrap();
        assert_eq!(hook.lead_ids().len(), 2, "{}", echo.body);
        let item = hook
            .items
            .iter()
            .find(|i| i.id.as_deref() == Some(&a.to_string()))
            .unwrap();
        let cf = item.custom_field(&score.id.to_string()).unwrap();
        assert_eq!(cf.values[0].value, "71");
        sb.shutdown().await;
    }
}
