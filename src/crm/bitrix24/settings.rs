//! The `[[portal]]` keys of a Bitrix24 portal and their validation.
//!
//! A portal signs in with an inbound webhook (`webhook_url`, a secret: its last part is
//! a password) or an OAuth app (`base_url`, `client_id`, `client_secret`,
//! `refresh_token`), and authenticates the events it sends by the outgoing webhook's
//! `application_token` (optionally also `member_id` / `domain`). `plan` picks the
//! default pacing: "standard" 2 requests/s burst 50, "enterprise" 5/s burst 250.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{same_secret, CrmSettings, PortalCheck, PortalCrm, RateLimitSection};

/// The Bitrix24 keys of a `[[portal]]` table, as serde reads them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// Inbound webhook URL `https://PORTAL/rest/USER/CODE/` (secret: the code is a password).
    pub webhook_url: Option<SecretString>,
    pub webhook_url_env: Option<String>,
    pub webhook_url_file: Option<PathBuf>,
    /// Outgoing-webhook application token that authenticates events sent to us.
    pub application_token: Option<SecretString>,
    pub application_token_env: Option<String>,
    pub application_token_file: Option<PathBuf>,
    /// Expected `auth[member_id]` of events (optional extra check).
    pub member_id: Option<String>,
    /// Expected `auth[domain]` of events (optional extra check).
    pub domain: Option<String>,
    /// Refuse events whose `ts` is further than this from now (off when absent: the
    /// portal may deliver late, and the sweep would have to catch what is refused).
    pub max_event_age_secs: Option<u64>,
    /// Bitrix24 plan, for the default rate limit: "standard" (2/s, burst 50) or "enterprise" (5/s, 250).
    pub plan: Option<String>,
    /// The portal URL of an OAuth app.
    pub base_url: Option<String>,
    /// OAuth app credentials.
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// First refresh token; later ones are rotated into the token vault.
    pub refresh_token: Option<SecretString>,
    pub refresh_token_env: Option<String>,
    pub refresh_token_file: Option<PathBuf>,
    /// Deal stages (`STAGE_SEMANTIC_ID` or `STAGE_ID`) that count as won in backtests.
    pub won_stages: Option<Vec<String>>,
    /// Deal stages that count as lost.
    pub lost_stages: Option<Vec<String>>,
    /// Failed lead statuses (`STATUS_SEMANTIC_ID` or `STATUS_ID`) that count as lost; a
    /// failed lead in another status (e.g. a duplicate) is left out of backtests.
    pub lost_lead_statuses: Option<Vec<String>>,
    /// What the portal scores: `["lead"]` (the default), `["deal"]` (a portal in the
    /// simple CRM mode has no leads) or `["lead", "deal"]`.
    pub entities: Option<Vec<String>>,
}

/// Keys whose values are secrets: never shown in a message.
pub const SECRETS: &[&str] = &[
    "webhook_url",
    "application_token",
    "client_secret",
    "refresh_token",
];

/// How the daemon signs in to the portal.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Inbound webhook `https://PORTAL/rest/USER/CODE/`.
    Webhook { url: SecretString },
    /// OAuth application.
    OAuth {
        base_url: String,
        client_id: String,
        client_secret: SecretString,
        refresh_token: SecretString,
    },
}

/// What an incoming event must carry to be trusted.
#[derive(Debug, Clone, Default)]
pub struct WebhookCheck {
    /// The outgoing webhook's application token.
    pub secret: Option<SecretString>,
    /// `auth[member_id]`.
    pub member_id: Option<String>,
    /// `auth[domain]`.
    pub domain: Option<String>,
    /// Refuse events whose `ts` is further than this from now (replays); off when
    /// absent, since the portal may deliver late and the sweep would have to catch
    /// what is refused.
    pub max_event_age_secs: Option<u64>,
}

/// Which closed leads and deals count as won or lost (backtests read outcomes with
/// it). Each value is a semantic id (`S`, `F`) or a portal's own stage / status id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeMap {
    pub won_stages: Vec<String>,
    pub lost_stages: Vec<String>,
    pub lost_lead_statuses: Vec<String>,
}

impl Default for OutcomeMap {
    fn default() -> Self {
        OutcomeMap {
            won_stages: vec!["S".into()],
            lost_stages: vec!["F".into()],
            lost_lead_statuses: vec!["F".into()],
        }
    }
}

/// Which CRM entities a portal scores (`entities = [...]`). A deal's leadscore id is
/// `D_<id>` (Bitrix24's own binding notation); a lead's stays its plain id, so the
/// stored data of portals scoring leads keeps working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entities {
    pub lead: bool,
    pub deal: bool,
}

impl Default for Entities {
    /// Leads only: what every portal scored before deals were supported.
    fn default() -> Self {
        Entities {
            lead: true,
            deal: false,
        }
    }
}

/// A Bitrix24 portal's own settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auth: Auth,
    pub webhook: WebhookCheck,
    pub outcomes: OutcomeMap,
    pub entities: Entities,
}

impl Settings {
    /// Settings with these credentials and no webhook checks (tests, the benches).
    pub fn with_auth(auth: Auth) -> Arc<dyn CrmSettings> {
        Arc::new(Settings {
            auth,
            webhook: WebhookCheck::default(),
            outcomes: OutcomeMap::default(),
            entities: Entities::default(),
        })
    }

    /// Settings with these credentials scoring these entities (tests).
    pub fn with_entities(auth: Auth, entities: Entities) -> Arc<dyn CrmSettings> {
        Arc::new(Settings {
            auth,
            webhook: WebhookCheck::default(),
            outcomes: OutcomeMap::default(),
            entities,
        })
    }
}

impl CrmSettings for Settings {
    fn auth_label(&self) -> &'static str {
        match self.auth {
            Auth::Webhook { .. } => "inbound webhook",
            Auth::OAuth { .. } => "OAuth app",
        }
    }

    fn base_url(&self) -> Option<&str> {
        match &self.auth {
            // The webhook URL's host is not shown: the URL is a secret.
            Auth::Webhook { .. } => None,
            Auth::OAuth { base_url, .. } => Some(base_url),
        }
    }

    fn same_webhook_checks(&self, other: &dyn CrmSettings) -> bool {
        let Some(o) = other.as_any().downcast_ref::<Settings>() else {
            return false;
        };
        let (a, b) = (&self.webhook, &o.webhook);
        same_secret(&a.secret, &b.secret)
            && a.member_id == b.member_id
            && a.domain == b.domain
            && a.max_event_age_secs == b.max_event_age_secs
    }

    fn scope_label(&self) -> String {
        let e = self.entities;
        [("lead", e.lead), ("deal", e.deal)]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Read and check the Bitrix24 keys of a portal.
pub fn parse(cx: &mut PortalCheck<'_, '_>) -> PortalCrm {
    let Some(s) = cx.keys::<Keys>() else {
        return PortalCrm {
            settings: None,
            default_rate: STANDARD,
            over_limit_note: "",
        };
    };
    if let Some(url) = &s.base_url {
        cx.check_url("base_url", url);
    }
        let webhook_url = cx.credential(
            "webhook_url",
            s.webhook_url.as_ref(),
            s.webhook_url_env.as_deref(),
            s.webhook_url_file.as_deref(),
        );
        let client_secret = cx.credential(
            "client_secret",
            s.client_secret.as_ref(),
            s.client_secret_env.as_deref(),
            s.client_secret_file.as_deref(),
        );
        let refresh_token = cx.credential(
            "refresh_token",
            s.refresh_token.as_ref(),
            s.refresh_token_env.as_deref(),
            s.refresh_token_file.as_deref(),
        );
        let app_token = cx.credential(
            "application_token",
            s.application_token.as_ref(),
            s.application_token_env.as_deref(),
            s.application_token_file.as_deref(),
        );
        let oauth = [
            ("client_id", s.client_id.is_some()),
            ("client_secret", client_secret.given()),
            ("refresh_token", refresh_token.given()),
        ];
        let auth = if webhook_url.given() {
            for (key, _) in oauth.iter().filter(|(_, g)| *g) {
                let key = cx.written_form(key);
                cx.error(
                    &key,
                    "belongs to an OAuth app, but this portal signs in with `webhook_url`: keep one of the two",
                );
            }
            if s.base_url.is_some() {
                cx.warn(
                    "base_url",
                    "ignored: with `webhook_url` the portal address comes from the webhook URL",
                );
            }
            let resolved = webhook_url.is_resolved();
            webhook_url.value().and_then(|url| {
                (!resolved || check_webhook_url(cx, &url)).then_some(Auth::Webhook { url })
            })
        } else if s.base_url.is_some() || oauth.iter().any(|(_, g)| *g) {
            let need = [
                ("base_url", s.base_url.is_some()),
                ("client_id", s.client_id.is_some()),
                ("client_secret", client_secret.given()),
                ("refresh_token", refresh_token.given()),
            ];
            for (key, _) in need.iter().filter(|(_, g)| !*g) {
                cx.error(
                    key,
                    "missing: a Bitrix24 OAuth app needs `base_url`, `client_id`, `client_secret` and `refresh_token`",
                );
            }
            match (
                s.base_url.clone(),
                s.client_id.clone(),
                client_secret.value(),
                refresh_token.value(),
            ) {
                (Some(base_url), Some(client_id), Some(client_secret), Some(refresh_token)) => {
                    Some(Auth::OAuth {
                        base_url,
                        client_id,
                        client_secret,
                        refresh_token,
                    })
                }
                _ => None,
            }
        } else {
            cx.error(
                "",
                "no credentials: give `webhook_url` (an inbound webhook; or `webhook_url_env` / `webhook_url_file`) or an OAuth app (`base_url`, `client_id`, `client_secret`, `refresh_token`)",
            );
            None
        };
        if !app_token.given() {
            cx.error(
                "application_token",
                "missing: the outgoing webhook's application token authenticates the events Bitrix24 sends (also as `application_token_env` / `application_token_file`)",
            );
        }
        let webhook = WebhookCheck {
            secret: app_token.value(),
            member_id: s.member_id.clone(),
            domain: s.domain.clone(),
            max_event_age_secs: s.max_event_age_secs,
        };
        let rate = plan_rate(s.plan.as_deref()).unwrap_or_else(|| {
            cx.error(
                "plan",
                format!(
                    "unknown plan `{}`: use \"standard\" (2 requests/s, burst 50) or \"enterprise\" (5/s, burst 250)",
                    s.plan.as_deref().unwrap_or_default()
                ),
            );
            STANDARD
        });
    let outcomes = outcome_map(cx, &s);
    let entities = entities(cx, s.entities.as_deref());
    PortalCrm {
        settings: auth.map(|auth| {
            Arc::new(Settings {
                auth,
                webhook,
                outcomes,
                entities,
            }) as Arc<dyn CrmSettings>
        }),
        default_rate: rate,
        over_limit_note: "",
    }
}

/// `entities`: "lead" and/or "deal", each at most once, at least one.
fn entities(cx: &mut PortalCheck<'_, '_>, given: Option<&[String]>) -> Entities {
    let Some(list) = given else {
        return Entities::default();
    };
    let mut out = Entities {
        lead: false,
        deal: false,
    };
    for e in list {
        let slot = match e.trim() {
            "lead" => &mut out.lead,
            "deal" => &mut out.deal,
            other => {
                cx.error(
                    "entities",
                    format!("unknown entity `{other}`: use \"lead\" and/or \"deal\""),
                );
                continue;
            }
        };
        if *slot {
            cx.error("entities", format!("`{}` is listed twice", e.trim()));
        }
        *slot = true;
    }
    if !out.lead && !out.deal {
        cx.error(
            "entities",
            "must name at least one of \"lead\" and \"deal\" (a portal in the simple CRM mode has only deals: [\"deal\"])",
        );
        return Entities::default();
    }
    out
}

/// The outcome keys with their defaults; a value may not be empty nor be both won and lost.
fn outcome_map(cx: &mut PortalCheck<'_, '_>, s: &Keys) -> OutcomeMap {
    let d = OutcomeMap::default();
    let mut pick = |key: &str, given: &Option<Vec<String>>, default: Vec<String>| match given {
        None => default,
        Some(v) if v.is_empty() || v.iter().any(|x| x.trim().is_empty()) => {
            cx.error(key, "must list at least one non-empty stage or status id");
            default
        }
        Some(v) => v.iter().map(|x| x.trim().to_string()).collect(),
    };
    let map = OutcomeMap {
        won_stages: pick("won_stages", &s.won_stages, d.won_stages),
        lost_stages: pick("lost_stages", &s.lost_stages, d.lost_stages),
        lost_lead_statuses: pick("lost_lead_statuses", &s.lost_lead_statuses, d.lost_lead_statuses),
    };
    if let Some(both) = map.won_stages.iter().find(|w| map.lost_stages.contains(w)) {
        cx.error(
            "lost_stages",
            format!("`{both}` is also in `won_stages`: a stage is either won or lost"),
        );
    }
    map
}

/// The standard plan's leaky bucket: 2 requests/s, 50 at once.
const STANDARD: RateLimitSection = RateLimitSection {
    per_second: 2.0,
    burst: 50,
    operating_limit_secs: None,
    operating_window_secs: None,
};

/// The default pacing of a plan (`None`: no such plan).
fn plan_rate(plan: Option<&str>) -> Option<RateLimitSection> {
    match plan {
        None | Some("standard") => Some(STANDARD),
        Some("enterprise") => Some(RateLimitSection {
            per_second: 5.0,
            burst: 250,
            ..STANDARD
        }),
        Some(_) => None,
    }
}

/// The URL is a secret (its last part is a password), so the message never shows it.
fn check_webhook_url(cx: &mut PortalCheck<'_, '_>, url: &SecretString) -> bool {
    let ok = match reqwest::Url::parse(url.expose_secret()) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path().starts_with("/rest/")
                && u.path().trim_end_matches('/').split('/').count() >= 4
        }
        Err(_) => false,
    };
    if !ok {
        cx.error(
            "webhook_url",
            "not an inbound webhook URL of the form https://PORTAL/rest/USER_ID/CODE/ (the value is not shown)",
        );
    }
    ok
}
