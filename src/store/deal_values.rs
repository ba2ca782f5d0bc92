//! One small record per stored lead that has an amount (its rep, pipeline and stage),
//! kept beside its input snapshot, so `status` and the dashboard sum the pipeline
//! without decoding every snapshot: a snapshot with 200 activities is kilobytes, this
//! record tens of bytes. Stores written before the index existed get it built once,
//! from their snapshots, the first time a portal's values are asked for.

use serde::{Deserialize, Serialize};

use super::{enc, lead_key, per_lead, Store, StoreError};
use crate::lead::Lead;

/// Meta key saying a portal's index covers every snapshot.
fn built_key(portal: &str) -> String {
    format!("deal_values_built:{portal}")
}

/// What the weighted pipeline value needs of a lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DealValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rep: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stage: Option<String>,
    amount: f64,
}

impl Store {
    /// Keep a lead's record in step with its snapshot (called on every snapshot write).
    pub(super) fn index_deal_value(&self, portal: &str, lead: &Lead) -> Result<(), StoreError> {
        let key = lead_key(portal, &lead.id);
        match lead.amount.filter(|a| a.is_finite()) {
            Some(amount) => {
                let v = DealValue {
                    rep: lead.responsible_id.clone(),
                    pipeline: lead.pipeline.clone(),
                    stage: lead.stage.clone(),
                    amount,
                };
                self.deal_values.insert(key, enc(&v))?;
            }
            None => {
                self.deal_values.remove(key)?;
            }
        }
        Ok(())
    }

    /// Forget a deleted lead's record.
    pub(super) fn unindex_deal_value(&self, portal: &str, lead: &str) -> Result<(), StoreError> {
        self.deal_values.remove(lead_key(portal, lead))?;
        Ok(())
    }

    /// Every stored lead of a portal that has an amount, as a lead carrying only what
    /// the pipeline sums read (id, rep, pipeline, stage, amount).
    pub fn deal_values(&self, portal: &str) -> Result<Vec<Lead>, StoreError> {
        if self.meta_get(&built_key(portal))?.is_none() {
            for id in self.snapshot_ids(portal)? {
                if let Some(snap) = self.snapshot(portal, &id)? {
                    self.index_deal_value(portal, &snap.lead)?;
                }
            }
            self.meta_set(&built_key(portal), "1")?;
        }
        let records: Vec<(String, DealValue)> = per_lead(&self.deal_values, "deal_values", portal)?;
        Ok(records
            .into_iter()
            .map(|(id, v)| Lead {
                id,
                responsible_id: v.rep,
                pipeline: v.pipeline,
                stage: v.stage,
                amount: Some(v.amount),
                ..Lead::default()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InputSnapshot;
    use chrono::Utc;

    fn deal(id: &str, rep: &str, stage: &str, amount: Option<f64>) -> Lead {
        Lead {
            id: id.into(),
            responsible_id: Some(rep.into()),
            pipeline: Some("0".into()),
            stage: Some(stage.into()),
            amount,
            ..Lead::default()
        }
    }

    fn snap(lead: Lead) -> InputSnapshot {
        InputSnapshot {
            lead,
            activities: Vec::new(),
            activity_cursor: None,
            activities_read_at: Utc::now(),
            full_read_at: Utc::now(),
        }
    }

    #[test]
    fn the_index_follows_snapshots_and_is_built_once_for_old_stores() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A store from before the index: snapshots only.
        for (id, amount) in [("1", Some(100.0)), ("2", None), ("3", Some(50.0))] {
            let s = snap(deal(id, "7", "NEW", amount));
            store
                .snapshot
                .insert(lead_key("p", id), super::super::snapshot_codec::encode(&s))
                .unwrap();
        }
        let ids = |v: Vec<Lead>| v.into_iter().map(|l| l.id).collect::<Vec<_>>();
        assert_eq!(ids(store.deal_values("p").unwrap()), ["1", "3"]);
        // From now on every snapshot write keeps it in step.
        store
            .put_snapshot("p", "2", &snap(deal("2", "7", "WON", Some(9.0))))
            .unwrap();
        store
            .put_snapshot("p", "1", &snap(deal("1", "7", "NEW", None)))
            .unwrap();
        store.remove_snapshot("p", "3").unwrap();
        let now = store.deal_values("p").unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(
            (now[0].id.as_str(), now[0].stage.as_deref(), now[0].amount),
            ("2", Some("WON"), Some(9.0))
        );
        assert!(store.deal_values("other").unwrap().is_empty());
    }
}
