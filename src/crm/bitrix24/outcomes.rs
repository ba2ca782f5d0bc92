//! Closed leads for backtests: converted (`STATUS_SEMANTIC_ID` S) and failed (F) leads,
//! the deals made from the converted ones (`crm.deal.list` by `LEAD_ID`: the stage
//! semantics say won or lost, `OPPORTUNITY` the size, `CLOSEDATE` when) and every
//! lead's activities. Everything is a 50-row list page inside a 50-command `batch`:
//! the closed leads are walked with `>ID` pages chained by `$result[…][49][ID]`
//! references (2,500 leads per request), deals and activities by lists over 50 lead
//! ids at a time whose follow-up pages (`>ID` of the last row) from all groups are
//! packed together. So a pull costs close to its floor: every row page the data needs,
//! divided by 50 commands per request.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadscore_bitrix24::batch::{BatchCommand, CommandResult};
use leadscore_bitrix24::client::decode_list;
use leadscore_bitrix24::types::{value_text, ActivityRecord};
use serde_json::{json, Map, Value};

use super::{to_crm, Bitrix24Crm, ACTIVITY_SELECT, LEAD_OWNER_TYPE};
use crate::backtest::{ClosedLead, Outcome};
use crate::config::FieldsSection;
use crate::crm::{ClosedLeads, CrmError, PullProgress, PullProgressFn};

/// Rows per list page and commands per batch (both fixed by Bitrix24).
const PAGE: usize = 50;
const BATCH: usize = 50;

/// Lead columns a backtest needs (those scoring reads plus the close facts).
const LEAD_SELECT: [&str; 4] = ["*", "UF_*", "EMAIL", "PHONE"];

const DEAL_SELECT: [&str; 8] = [
    "ID",
    "LEAD_ID",
    "STAGE_ID",
    "STAGE_SEMANTIC_ID",
    "OPPORTUNITY",
    "CLOSEDATE",
    "DATE_MODIFY",
    "ASSIGNED_BY_ID",
];

/// A list being read page by page: its method, filter and select; `after` is the
/// `>ID` of the next page (`None`: the first page).
struct ListJob {
    method: &'static str,
    filter: Value,
    select: &'static [&'static str],
    after: Option<u64>,
}

impl ListJob {
    fn command(&self, key: String) -> BatchCommand {
        let mut filter = self.filter.clone();
        if let Some(after) = self.after {
            filter[">ID"] = json!(after);
        }
        BatchCommand::new(
            key,
            self.method,
            json!({"filter": filter, "select": self.select, "order": {"ID": "ASC"}, "start": -1}),
        )
    }
}

fn time_of(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = value_text(v?)?;
    DateTime::parse_from_rfc3339(&s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn text_of(row: &Map<String, Value>, key: &str) -> Option<String> {
    row.get(key).and_then(value_text).filter(|s| !s.is_empty())
}

fn id_of(row: &Map<String, Value>) -> Option<u64> {
    text_of(row, "ID").and_then(|s| s.parse().ok())
}

fn rows_of(method: &str, r: &CommandResult) -> Result<Vec<Map<String, Value>>, CrmError> {
    match &r.result {
        Ok(v) => decode_list(method, v).map_err(to_crm),
        Err(e) => Err(to_crm(e.clone())),
    }
}

/// Is `row`'s semantic id or own id (under `id_key`) one of `listed`?
fn listed(row: &Map<String, Value>, semantic_key: &str, id_key: &str, listed: &[String]) -> bool {
    [semantic_key, id_key]
        .iter()
        .filter_map(|k| text_of(row, k))
        .any(|v| listed.contains(&v))
}

impl Bitrix24Crm {
    fn requests(&self) -> u64 {
        self.client.stats().requests_sent
    }

    /// See the module doc.
    pub(super) async fn read_outcomes(
        &self,
        fields: &FieldsSection,
        progress: &PullProgressFn,
    ) -> Result<ClosedLeads, CrmError> {
        let leads = self.closed_lead_rows(progress).await?;
        let converted: Vec<u64> = leads
            .iter()
            .filter(|(_, r)| text_of(r, "STATUS_SEMANTIC_ID").as_deref() == Some("S"))
            .map(|(id, _)| *id)
            .collect();
        let ids: Vec<u64> = leads.keys().copied().collect();
        // Lists over `group` leads: 50 ids each on a large portal (fewest pages), fewer
        // on a small one so one round of pages fills a batch (fewest rounds).
        let group = ids.len().div_ceil(BATCH).clamp(5, PAGE);
        let mut jobs: Vec<ListJob> = converted
            .chunks(group)
            .map(|c| ListJob {
                method: "crm.deal.list",
                filter: json!({"@LEAD_ID": c}),
                select: &DEAL_SELECT,
                after: None,
            })
            .collect();
        jobs.extend(ids.chunks(group).map(|c| ListJob {
            method: "crm.activity.list",
            filter: json!({"OWNER_TYPE_ID": LEAD_OWNER_TYPE, "@OWNER_ID": c}),
            select: &ACTIVITY_SELECT,
            after: None,
        }));
        let mut deals: BTreeMap<u64, Vec<Map<String, Value>>> = BTreeMap::new();
        let mut acts: BTreeMap<u64, Vec<ActivityRecord>> = BTreeMap::new();
        let (mut n_deals, mut n_acts) = (0, 0);
        // Rounds: one page of every unfinished list, packed 50 commands per request.
        while !jobs.is_empty() {
            let mut next = Vec::new();
            for chunk in jobs.chunks(BATCH) {
                let cmds: Vec<BatchCommand> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, j)| j.command(format!("j{i}")))
                    .collect();
                let results = self.client.batch(&cmds).await.map_err(to_crm)?;
                for (i, job) in chunk.iter().enumerate() {
                    let rows = rows_of(job.method, &results[&format!("j{i}")])?;
                    let last = rows.iter().filter_map(id_of).max();
                    let full = rows.len() >= PAGE;
                    for row in rows {
                        if job.method == "crm.deal.list" {
                            n_deals += 1;
                            if let Some(l) = text_of(&row, "LEAD_ID").and_then(|s| s.parse().ok()) {
                                deals.entry(l).or_default().push(row);
                            }
                        } else {
                            n_acts += 1;
                            let rec: ActivityRecord =
                                leadscore_bitrix24::client::decode("crm.activity.list", &Value::Object(row))
                                    .map_err(to_crm)?;
                            if let Some(o) = rec.owner_id.as_deref().and_then(|s| s.parse().ok()) {
                                acts.entry(o).or_default().push(rec);
                            }
                        }
                    }
                    if let (true, Some(last)) = (full, last) {
                        next.push(ListJob {
                            method: job.method,
                            filter: job.filter.clone(),
                            select: job.select,
                            after: Some(last),
                        });
                    }
                }
                progress(PullProgress {
                    phase: "deals+activities",
                    rows: n_deals + n_acts,
                    requests: self.requests(),
                });
            }
            jobs = next;
        }
        let floor = floor_requests(leads.len(), n_deals, n_acts);
        let mut out = Vec::new();
        for (id, row) in &leads {
            let Some(outcome) = decide(&self.outcomes, row, deals.get(id).map(Vec::as_slice))
            else {
                continue;
            };
            let (lead, _) = self.lead_from(fields, row)?;
            let mut activities: Vec<_> = acts
                .remove(id)
                .unwrap_or_default()
                .iter()
                .filter_map(|a| self.classifier.classify(&fields.activity_map, a))
                .collect();
            activities.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
            let created_at = lead.created_at.unwrap_or(outcome.closed_at);
            out.push(ClosedLead {
                lead,
                activities,
                created_at,
                closed_at: outcome.closed_at.max(created_at),
                outcome: outcome.outcome,
                amount: outcome.amount,
                rep_id: outcome.rep,
                loss_reason: outcome.loss_reason,
                stage: outcome.stage,
                fit_history: None,
            });
        }
        Ok(ClosedLeads {
            leads: out,
            floor_requests: Some(floor),
        })
    }

    /// Every converted or failed lead, by id: `>ID` pages chained inside each batch.
    async fn closed_lead_rows(
        &self,
        progress: &PullProgressFn,
    ) -> Result<BTreeMap<u64, Map<String, Value>>, CrmError> {
        let mut out = BTreeMap::new();
        let mut after: u64 = 0;
        loop {
            let cmds: Vec<BatchCommand> = (0..BATCH)
                .map(|i| {
                    let from = if i == 0 {
                        json!(after)
                    } else {
                        json!(format!("$result[p{:02}][{}][ID]", i - 1, PAGE - 1))
                    };
                    // Zero-padded keys: a portal that runs commands in key order still
                    // runs each page after the one it refers to.
                    BatchCommand::new(
                        format!("p{i:02}"),
                        "crm.lead.list",
                        json!({"filter": {"@STATUS_SEMANTIC_ID": ["S", "F"], ">ID": from},
                               "select": LEAD_SELECT, "order": {"ID": "ASC"}, "start": -1}),
                    )
                })
                .collect();
            let results = self.client.batch(&cmds).await.map_err(to_crm)?;
            let mut done = false;
            for i in 0..BATCH {
                // A page after a short one refers to a row that does not exist: its
                // answer (an error or a repeat) is not read.
                let rows = rows_of("crm.lead.list", &results[&format!("p{i:02}")])?;
                let n = rows.len();
                for row in rows {
                    if let Some(id) = id_of(&row) {
                        after = after.max(id);
                        out.insert(id, row);
                    }
                }
                if n < PAGE {
                    done = true;
                    break;
                }
            }
            progress(PullProgress {
                phase: "leads",
                rows: out.len(),
                requests: self.requests(),
            });
            if done {
                return Ok(out);
            }
        }
    }

}

/// The outcome of a closed lead by the portal's mapping (`None`: not closed yet, e.g. a
/// converted lead whose deals are all still open, or a failed lead in a status the
/// mapping leaves out).
fn decide(
    map: &super::settings::OutcomeMap,
    lead: &Map<String, Value>,
    deals: Option<&[Map<String, Value>]>,
) -> Option<Decided> {
        let lead_closed = time_of(lead.get("DATE_CLOSED")).or_else(|| time_of(lead.get("DATE_MODIFY")));
        if text_of(lead, "STATUS_SEMANTIC_ID").as_deref() == Some("F") {
            if !listed(lead, "STATUS_SEMANTIC_ID", "STATUS_ID", &map.lost_lead_statuses) {
                return None;
            }
            return Some(Decided {
                outcome: Outcome::Lost,
                closed_at: lead_closed?,
                amount: text_of(lead, "OPPORTUNITY").and_then(|s| s.parse().ok()).filter(|a| *a > 0.0),
                rep: text_of(lead, "ASSIGNED_BY_ID"),
                loss_reason: text_of(lead, "STATUS_ID"),
                stage: text_of(lead, "STATUS_ID"),
            });
        }
        let deals = deals?;
        let closed_at = |d: &Map<String, Value>| {
            time_of(d.get("CLOSEDATE")).or_else(|| time_of(d.get("DATE_MODIFY")))
        };
        let decided = |d: &Map<String, Value>, outcome| {
            Some(Decided {
                outcome,
                closed_at: closed_at(d)?,
                amount: text_of(d, "OPPORTUNITY").and_then(|s| s.parse().ok()),
                rep: text_of(d, "ASSIGNED_BY_ID"),
                loss_reason: (outcome == Outcome::Lost).then(|| text_of(d, "STAGE_ID")).flatten(),
                stage: text_of(d, "STAGE_ID"),
            })
        };
        let won = |d: &&Map<String, Value>| listed(d, "STAGE_SEMANTIC_ID", "STAGE_ID", &map.won_stages);
        let lost = |d: &&Map<String, Value>| listed(d, "STAGE_SEMANTIC_ID", "STAGE_ID", &map.lost_stages);
        // Won as soon as one deal is won (the first win); lost only when every deal is.
        if let Some(d) = deals.iter().filter(won).min_by_key(|d| closed_at(d)) {
            return decided(d, Outcome::Won);
        }
        if !deals.is_empty() && deals.iter().all(|d| lost(&d)) {
            return deals
                .iter()
                .max_by_key(|d| closed_at(d))
                .and_then(|d| decided(d, Outcome::Lost));
        }
        None
}

/// A lead's own close, as an outcome webhook records it: converted (`STATUS_SEMANTIC_ID`
/// S) counts as won at its conversion, failed (F) as lost when its status is in
/// `lost_lead_statuses`; at `DATE_CLOSED`, else `DATE_MODIFY`. (Whether the deal made
/// from a converted lead was won is for a pull to read.)
pub(super) fn lead_closed(
    map: &super::settings::OutcomeMap,
    lead: &Map<String, Value>,
) -> Option<crate::crm::Closed> {
    let outcome = match text_of(lead, "STATUS_SEMANTIC_ID").as_deref() {
        Some("S") => Outcome::Won,
        Some("F") if listed(lead, "STATUS_SEMANTIC_ID", "STATUS_ID", &map.lost_lead_statuses) => {
            Outcome::Lost
        }
        _ => return None,
    };
    let at = time_of(lead.get("DATE_CLOSED")).or_else(|| time_of(lead.get("DATE_MODIFY")))?;
    Some(crate::crm::Closed { outcome, at })
}

/// A deal's own close by the stage mapping (`won_stages` / `lost_stages`), at
/// `CLOSEDATE`, else `DATE_MODIFY` (`None`: still open, or a stage the mapping leaves out).
pub(super) fn deal_closed(
    map: &super::settings::OutcomeMap,
    deal: &Map<String, Value>,
) -> Option<crate::crm::Closed> {
    let outcome = if listed(deal, "STAGE_SEMANTIC_ID", "STAGE_ID", &map.won_stages) {
        Outcome::Won
    } else if listed(deal, "STAGE_SEMANTIC_ID", "STAGE_ID", &map.lost_stages) {
        Outcome::Lost
    } else {
        return None;
    };
    let at = time_of(deal.get("CLOSEDATE")).or_else(|| time_of(deal.get("DATE_MODIFY")))?;
    Some(crate::crm::Closed { outcome, at })
}

/// The fewest requests that can read this many rows: the closed leads' pages first
/// (their ids are what deals and activities are asked by), then the deal and activity
/// pages, each request a batch of 50 full pages of 50 rows.
pub(super) fn floor_requests(leads: usize, deals: usize, activities: usize) -> u64 {
    let pages = |rows: usize| rows.div_ceil(PAGE);
    let lead_pages = pages(leads).max(1);
    (lead_pages.div_ceil(BATCH) + (pages(deals) + pages(activities)).div_ceil(BATCH)) as u64
}

/// What one lead's close came to.
struct Decided {
    outcome: Outcome,
    closed_at: DateTime<Utc>,
    amount: Option<f64>,
    rep: Option<String>,
    loss_reason: Option<String>,
    stage: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::bitrix24::settings::OutcomeMap;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_floor_counts_full_pages_in_full_batches() {
        // 10,000 leads = 200 pages = 4 requests; 5,000 deals + 60,000 activities =
        // 100 + 1,200 pages = 26 requests.
        assert_eq!(floor_requests(10_000, 5_000, 60_000), 30);
        assert_eq!(floor_requests(0, 0, 0), 1);
        assert_eq!(floor_requests(51, 1, 1), 2);
    }

    #[test]
    fn deals_and_lead_statuses_decide_by_the_mapping() {
        let d = OutcomeMap::default();
        let converted = row(json!({"STATUS_SEMANTIC_ID": "S", "STATUS_ID": "CONVERTED"}));
        let deal = |stage: &str, sem: &str, at: &str| {
            row(json!({"STAGE_ID": stage, "STAGE_SEMANTIC_ID": sem, "CLOSEDATE": at, "OPPORTUNITY": "1200.50"}))
        };
        let won = deal("WON", "S", "2026-03-01T10:00:00+03:00");
        let lost = deal("LOSE", "F", "2026-02-01T10:00:00+03:00");
        let open = deal("NEW", "P", "2026-04-01T10:00:00+03:00");
        let w = decide(&d, &converted, Some(&[lost.clone(), won.clone()])).unwrap();
        assert_eq!((w.outcome, w.amount), (Outcome::Won, Some(1200.5)));
        assert_eq!(w.closed_at, "2026-03-01T07:00:00Z".parse::<DateTime<Utc>>().unwrap());
        let l = decide(&d, &converted, Some(std::slice::from_ref(&lost))).unwrap();
        assert_eq!((l.outcome, l.loss_reason.as_deref()), (Outcome::Lost, Some("LOSE")));
        assert!(decide(&d, &converted, Some(&[lost.clone(), open])).is_none());
        assert!(decide(&d, &converted, None).is_none());
        // A custom won stage id, and junk leads only when their status is listed.
        let custom = OutcomeMap {
            won_stages: vec!["C1:WON".into()],
            lost_stages: vec!["F".into()],
            lost_lead_statuses: vec!["JUNK".into()],
        };
        let c1 = deal("C1:WON", "S", "2026-03-01T10:00:00+03:00");
        assert_eq!(decide(&custom, &converted, Some(&[c1])).unwrap().outcome, Outcome::Won);
        assert!(decide(&custom, &converted, Some(&[won])).is_none());
        let junk = row(json!({"STATUS_SEMANTIC_ID": "F", "STATUS_ID": "JUNK", "DATE_MODIFY": "2026-01-05T00:00:00+03:00"}));
        let dup = row(json!({"STATUS_SEMANTIC_ID": "F", "STATUS_ID": "1", "DATE_MODIFY": "2026-01-05T00:00:00+03:00"}));
        assert_eq!(decide(&custom, &junk, None).unwrap().outcome, Outcome::Lost);
        assert!(decide(&custom, &dup, None).is_none());
        assert!(decide(&d, &dup, None).is_some());
    }
}
