//! Closed leads for backtests. amoCRM keeps the outcome on the lead itself: its stage
//! (`status_id` 142 won, 143 lost, or the portal's own stages in `won_statuses` /
//! `lost_statuses`), `closed_at`, `price` and `loss_reason_id` (named with
//! `with=loss_reason`). The pull reads the pipelines (one request), the leads of each
//! closing stage pipeline by pipeline (the docs allow one stage of one pipeline per
//! `filter[statuses]`; 250 leads per request, with contacts and loss reason), their
//! main contacts and companies (250 per request), the lead event feed between the
//! first creation and the last close (100 events per request, the rest of a list the
//! page cap cuts read on from its oldest second: the per-lead filter takes 10 leads per
//! request, so the feed is cheaper while leads average fewer than 10 events and most
//! events in the span are the closed leads'),
//! the common notes the events name (250 per request), and the history of the fit
//! fields and the price (`fit_history`: the lead field definitions, then only the
//! change events of the mapped fields and the price, per id or account-wide, whichever
//! is cheaper: see `change_feed`) so fit fields are scored as they were at the as-of
//! instant and `amount` is the price as it stood at the close.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadscore_amocrm::types::{Lead as AmoLead, Pipeline};

use super::fetch::{event_types, unix};
use super::settings::OutcomeMap;
use super::{to_crm, AmocrmCrm};
use crate::backtest::{ClosedLead, Outcome};
use crate::config::FieldsSection;
use crate::crm::{ClosedLeads, CrmError, PullProgress, PullProgressFn};

/// Rows per list page (amoCRM's `limit` maximum for leads, contacts, companies, notes).
const PAGE: usize = 250;
/// Rows per page of the event feed (its `limit` maximum).
const EVENT_PAGE: usize = 100;

impl AmocrmCrm {
    /// See the module doc.
    pub(super) async fn read_outcomes(
        &self,
        fields: &FieldsSection,
        progress: &PullProgressFn,
    ) -> Result<ClosedLeads, CrmError> {
        let requests = || self.client.stats().requests;
        let pipelines = self.client.pipelines().await.map_err(to_crm)?;
        let mut leads: BTreeMap<u64, AmoLead> = BTreeMap::new();
        let mut lead_pages = 0;
        for (pipeline, status) in closing_stages(&self.outcomes, &pipelines) {
            let got = self
                .client
                .leads_in_status(pipeline, status)
                .await
                .map_err(to_crm)?;
            lead_pages += got.len().div_ceil(PAGE).max(1);
            for l in got.into_iter().filter(|l| l.is_deleted != Some(true)) {
                leads.insert(l.id, l);
            }
            progress(PullProgress {
                phase: "leads",
                rows: leads.len(),
                requests: requests(),
            });
        }
        let leads: Vec<AmoLead> = leads.into_values().collect();
        let related = self.related(&leads).await?;
        progress(PullProgress {
            phase: "contacts+companies",
            rows: related.counts().0 + related.counts().1,
            requests: requests(),
        });
        let span = leads
            .iter()
            .filter_map(|l| Some((l.created_at?, closed_at(l)?)))
            .fold(None, |acc: Option<(i64, i64)>, (c, z)| {
                Some(acc.map_or((c, z), |(a, b)| (a.min(c), b.max(z))))
            });
        let events = match span {
            Some((from, to)) => {
                let types = event_types(&fields.activity_map);
                let types: Vec<&str> = types.iter().map(String::as_str).collect();
                let wanted: std::collections::HashSet<u64> = leads.iter().map(|l| l.id).collect();
                let all = self
                    .client
                    .event_feed((&["lead"], &types), from, to)
                    .await
                    .map_err(to_crm)?;
                let n = all.len();
                let mine: Vec<_> = all
                    .into_iter()
                    .filter(|e| e.entity_id.is_some_and(|id| wanted.contains(&id)))
                    .collect();
                (mine, n)
            }
            None => (Vec::new(), 0),
        };
        progress(PullProgress {
            phase: "events",
            rows: events.1,
            requests: requests(),
        });
        let notes_before = requests();
        let mut acts = self.activities(&leads, &events.0, fields).await?;
        let note_pages = (requests() - notes_before) as usize;
        let history_before = requests();
        let contacts: Vec<_> = leads.iter().filter_map(|l| related.of(l).0).collect();
        let log = self.field_changes(fields, &leads, &contacts).await?;
        let history_pages = requests() - history_before;
        progress(PullProgress {
            phase: "field history",
            rows: log.changes(),
            requests: requests(),
        });
        let stage_names: BTreeMap<u64, &str> = pipelines
            .iter()
            .flat_map(|p| p.embedded.statuses.iter())
            .map(|s| (s.id, s.name.as_str()))
            .collect();
        let mut out = Vec::with_capacity(leads.len());
        for raw in &leads {
            let Some((outcome, closed)) = decide(&self.outcomes, raw) else {
                continue;
            };
            let (contact, company) = related.of(raw);
            let (lead, _) = self.lead_from(fields, raw, contact, company);
            let fit_history = self.fit_history(fields, raw, (contact, company), &log);
            let created_at = lead.created_at.unwrap_or(closed);
            let stage = raw.status_id.map(|s| {
                stage_names
                    .get(&s)
                    .filter(|n| !n.is_empty())
                    .map_or_else(|| s.to_string(), |n| n.to_string())
            });
            out.push(ClosedLead {
                activities: acts.remove(&raw.id).unwrap_or_default(),
                created_at,
                closed_at: closed.max(created_at),
                outcome,
                amount: log
                    .price_at(raw, closed.timestamp() + 1)
                    .filter(|p| *p > 0.0),
                rep_id: raw
                    .responsible_user_id
                    .filter(|u| *u != 0)
                    .map(|u| u.to_string()),
                loss_reason: (outcome == Outcome::Lost)
                    .then(|| loss_reason(raw))
                    .flatten(),
                stage,
                lead,
                fit_history: Some(fit_history),
            });
        }
        let (contacts, companies) = related.counts();
        let pages = |n: usize| n.div_ceil(PAGE) as u64;
        let floor = 1
            + lead_pages as u64
            + pages(contacts)
            + pages(companies)
            + events.1.div_ceil(EVENT_PAGE) as u64
            + note_pages as u64
            + history_pages;
        Ok(ClosedLeads {
            leads: out,
            floor_requests: Some(floor),
        })
    }
}

/// The (pipeline, stage) pairs to list: every mapped stage in every pipeline that has it.
fn closing_stages(map: &OutcomeMap, pipelines: &[Pipeline]) -> Vec<(u64, u64)> {
    pipelines
        .iter()
        .flat_map(|p| {
            p.embedded
                .statuses
                .iter()
                .filter(|s| map.won_statuses.contains(&s.id) || map.lost_statuses.contains(&s.id))
                .map(move |s| (p.id, s.id))
        })
        .collect()
}

/// When the lead closed: `closed_at`, else its last change.
fn closed_at(l: &AmoLead) -> Option<i64> {
    l.closed_at.filter(|t| *t > 0).or(l.updated_at)
}

/// The outcome of a lead by the portal's mapping (`None`: not in a mapped stage, or
/// no close time).
pub(super) fn decide(map: &OutcomeMap, l: &AmoLead) -> Option<(Outcome, DateTime<Utc>)> {
    let status = l.status_id?;
    let outcome = if map.won_statuses.contains(&status) {
        Outcome::Won
    } else if map.lost_statuses.contains(&status) {
        Outcome::Lost
    } else {
        return None;
    };
    Some((outcome, closed_at(l).and_then(unix)?))
}

/// The loss reason's name, else its id.
fn loss_reason(l: &AmoLead) -> Option<String> {
    l.embedded
        .loss_reason
        .iter()
        .find(|r| Some(r.id) == l.loss_reason_id || l.loss_reason_id.is_none())
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| l.loss_reason_id.filter(|r| *r != 0).map(|r| r.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadscore_amocrm::types::{LossReason, PipelineEmbedded, PipelineStatus};

    fn lead(status: u64, closed: Option<i64>, updated: i64) -> AmoLead {
        AmoLead {
            id: 1,
            status_id: Some(status),
            closed_at: closed,
            updated_at: Some(updated),
            ..AmoLead::default()
        }
    }

    #[test]
    fn stages_decide_by_the_mapping_and_closed_at_wins_over_the_last_change() {
        let d = OutcomeMap::default();
        let (o, at) = decide(&d, &lead(142, Some(1_700_000_000), 1_700_009_999)).unwrap();
        assert_eq!((o, at.timestamp()), (Outcome::Won, 1_700_000_000));
        let (o, at) = decide(&d, &lead(143, None, 1_700_000_500)).unwrap();
        assert_eq!((o, at.timestamp()), (Outcome::Lost, 1_700_000_500));
        assert!(decide(&d, &lead(31_000_001, Some(1), 1)).is_none());
        // A portal's own "refused" stage counts as lost; 143 then does not.
        let custom = OutcomeMap {
            won_statuses: vec![142],
            lost_statuses: vec![31_000_009],
        };
        assert_eq!(decide(&custom, &lead(31_000_009, None, 5)).unwrap().0, Outcome::Lost);
        assert!(decide(&custom, &lead(143, None, 5)).is_none());
    }

    #[test]
    fn closing_stages_are_listed_per_pipeline_that_has_them() {
        let p = |id, stages: &[u64]| Pipeline {
            id,
            name: String::new(),
            embedded: PipelineEmbedded {
                statuses: stages
                    .iter()
                    .map(|s| PipelineStatus {
                        id: *s,
                        name: String::new(),
                    })
                    .collect(),
            },
        };
        let pipelines = [p(1, &[10, 11, 142, 143]), p(2, &[20, 142, 143])];
        assert_eq!(
            closing_stages(&OutcomeMap::default(), &pipelines),
            vec![(1, 142), (1, 143), (2, 142), (2, 143)]
        );
        let custom = OutcomeMap {
            won_statuses: vec![142],
            lost_statuses: vec![20],
        };
        assert_eq!(closing_stages(&custom, &pipelines), vec![(1, 142), (2, 20), (2, 142)]);
    }

    #[test]
    fn the_loss_reason_is_named_when_embedded() {
        let mut l = lead(143, None, 1);
        l.loss_reason_id = Some(7001);
        assert_eq!(loss_reason(&l).as_deref(), Some("7001"));
        l.embedded.loss_reason = vec![LossReason {
            id: 7001,
            name: "Дорого".into(),
        }];
        assert_eq!(loss_reason(&l).as_deref(), Some("Дорого"));
    }
}
