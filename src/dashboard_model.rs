//! `GET /dashboard/model`: the live period's numbers for the model, behind the same
//! guard as `/dashboard` (token or loopback). What a sales lead asks of a model before
//! trusting it: how leads spread over the tiers, and, with a shadow model configured,
//! how often it agrees with the live one, where leads would move and how many call-now
//! tasks each would have sent. Leads are listed by name with a link to their CRM card.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use crate::crm::registry;
use crate::dashboard::{authorize, escape, StoreUnreadable};
use crate::intake::AppState;
use crate::pipeline::Pipeline;
use crate::store::StoreError;

/// Most disagreeing leads listed per portal.
const LIST: usize = 50;

/// One portal's numbers over its ledger.
#[derive(Debug, Default)]
struct PortalNumbers {
    id: String,
    /// Leads per live tier (their latest written score).
    tiers: BTreeMap<String, usize>,
    /// (live tier, shadow tier) → leads, latest entries that carry a shadow score.
    migration: BTreeMap<(String, String), usize>,
    /// Call-now crossings over the ledger: live (portal threshold), shadow (its own).
    live_calls: usize,
    shadow_calls: usize,
    /// Leads whose live and shadow tiers differ.
    differ: Vec<Differ>,
    /// Recorded closes per tier the lead had when it closed: (closed, won, days to
    /// close of each lead whose creation time is known).
    closes: BTreeMap<String, (usize, usize, Vec<f64>)>,
}

/// A lead the live and shadow models put in different tiers.
#[derive(Debug)]
struct Differ {
    id: String,
    name: Option<String>,
    /// Its card in the CRM's web UI.
    url: Option<String>,
    live: String,
    shadow: String,
}

fn numbers(p: &Pipeline) -> Result<Vec<PortalNumbers>, StoreError> {
    let mut out = Vec::new();
    let mut ids: Vec<String> = p.portals().map(|rt| rt.portal.id.clone()).collect();
    ids.sort();
    for id in ids {
        let Some(rt) = p.live_portal(&id) else {
            continue;
        };
        let portal = &rt.portal;
        let link = registry::of(portal).ok().map(|e| e.lead_url);
        let mut n = PortalNumbers {
            id: id.clone(),
            ..Default::default()
        };
        for (_, o) in p.store.live_outcomes(&id)? {
            let c = n.closes.entry(o.tier.clone()).or_default();
            c.0 += 1;
            c.1 += usize::from(o.outcome == crate::backtest::Outcome::Won);
            if let Some(created) = o.created_at {
                c.2.push((o.closed_at - created).num_seconds().max(0) as f64 / 86_400.0);
            }
        }
        for (lead, _) in p.store.written_all(&id)? {
            let ledger = p.store.ledger(&id, &lead)?;
            let (live, shadow) = crate::store::crossings(&ledger, portal.threshold);
            n.live_calls += live;
            n.shadow_calls += shadow;
            let Some(last) = ledger.last() else { continue };
            *n.tiers.entry(last.tier.clone()).or_default() += 1;
            let Some(s) = &last.shadow else { continue };
            *n.migration
                .entry((last.tier.clone(), s.tier.clone()))
                .or_default() += 1;
            if s.tier != last.tier && n.differ.len() < LIST {
                let name = p.store.snapshot(&id, &lead)?.and_then(|s| s.lead.name);
                let url = link.and_then(|f| f(portal, &lead));
                n.differ.push(Differ {
                    id: lead.clone(),
                    name,
                    url,
                    live: last.tier.clone(),
                    shadow: s.tier.clone(),
                });
            }
        }
        out.push(n);
    }
    Ok(out)
}

/// `<a href=CARD>NAME</a>` (escaped), or the bare name when the card's address is unknown.
fn lead_cell(id: &str, name: Option<&str>, url: Option<&str>) -> String {
    let label = escape(name.unwrap_or(id));
    match url {
        Some(u) => format!(
            "<a href=\"{}\">{label}</a> <span class=\"muted\">#{}</span>",
            escape(u),
            escape(id)
        ),
        None => format!("{label} <span class=\"muted\">#{}</span>", escape(id)),
    }
}

fn render(portals: &[PortalNumbers]) -> String {
    let mut h = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>leadscore model</title><style>body{font-family:sans-serif;margin:2em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em}\
.muted{color:#777}</style></head><body><h1>Model: the live period</h1>",
    );
    for n in portals {
        let _ = write!(h, "<h2>Portal {}</h2>", escape(&n.id));
        let total: usize = n.tiers.values().sum();
        h.push_str("<h3>Score distribution per tier</h3><table><tr><th>Tier</th><th>Leads</th><th>Share</th></tr>");
        for (tier, c) in &n.tiers {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{c}</td><td>{:.0}%</td></tr>",
                escape(tier),
                100.0 * *c as f64 / total.max(1) as f64
            );
        }
        h.push_str("</table>");
        let compared: usize = n.migration.values().sum();
        if compared == 0 {
            h.push_str("<p class=\"shadow\">No shadow scores yet (set <code>server.shadow_model</code>).</p>");
        } else {
            let same: usize = n
                .migration
                .iter()
                .filter(|((a, b), _)| a == b)
                .map(|(_, c)| c)
                .sum();
            let _ = write!(
                h,
                "<h3>Live vs shadow</h3><p class=\"agreement\">Same tier: {same} of {compared} leads ({:.0}%)</p>\
<p class=\"calls\">Call-now tasks: live {}, shadow would have sent {}</p>\
<table><tr><th>Live tier</th><th>Shadow tier</th><th>Leads</th></tr>",
                100.0 * same as f64 / compared as f64,
                n.live_calls,
                n.shadow_calls
            );
            for ((a, b), c) in &n.migration {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{c}</td></tr>",
                    escape(a),
                    escape(b)
                );
            }
            h.push_str("</table>");
            if !n.differ.is_empty() {
                h.push_str("<h3>Leads the models disagree on</h3><table class=\"leads\"><tr><th>Lead</th><th>Live</th><th>Shadow</th></tr>");
                for d in &n.differ {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        lead_cell(&d.id, d.name.as_deref(), d.url.as_deref()),
                        escape(&d.live),
                        escape(&d.shadow)
                    );
                }
                h.push_str("</table>");
            }
        }
        h.push_str("<h3>Conversion by tier, time to close</h3>");
        render_closes(&mut h, &n.closes);
    }
    h.push_str("</body></html>");
    h
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Conversion and median days to close per tier the leads had when they closed.
fn render_closes(h: &mut String, closes: &BTreeMap<String, (usize, usize, Vec<f64>)>) {
    if closes.is_empty() {
        h.push_str("<p class=\"outcomes\">No outcomes yet.</p>");
        return;
    }
    h.push_str(
        "<table class=\"outcomes\"><tr><th>Tier when closed</th><th>Closed</th><th>Won</th>\
<th>Conversion</th><th>Median days to close</th></tr>",
    );
    let days = |v: &[f64]| median(v).map_or("–".to_string(), |d| format!("{d:.1}"));
    let (mut all, mut won, mut spans) = (0, 0, Vec::new());
    for (tier, (n, w, d)) in closes {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{n}</td><td>{w}</td><td>{:.0}%</td><td>{}</td></tr>",
            escape(tier),
            100.0 * *w as f64 / (*n).max(1) as f64,
            days(d)
        );
        all += n;
        won += w;
        spans.extend_from_slice(d);
    }
    let _ = write!(
        h,
        "<tr><th>All</th><th>{all}</th><th>{won}</th><th>{:.0}%</th><th>{}</th></tr></table>",
        100.0 * won as f64 / all.max(1) as f64,
        days(&spans)
    );
}

/// `GET /dashboard/model`: the HTML page.
pub async fn page(State(state): State<AppState>, req: Request) -> Response {
    if let Err(d) = authorize(&req) {
        return d.into_response();
    }
    let p = state.pipeline.clone();
    match tokio::task::spawn_blocking(move || numbers(&p)).await {
        Ok(Ok(n)) => ([(header::CACHE_CONTROL, "no-store")], Html(render(&n))).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the ledger for the model page");
            StoreUnreadable.into_response()
        }
        Err(_) => StoreUnreadable.into_response(),
    }
}
