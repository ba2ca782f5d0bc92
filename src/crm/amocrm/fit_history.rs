//! The fit fields of closed leads as they stood before each later change. amoCRM logs
//! every change of a lead's custom field as a `custom_field_{ID}_value_changed` event
//! whose `value_before` / `value_after` hold the field's values
//! (`[{"custom_field_value": {"field_id", "field_type", "enum_id", "text"}}]`), so a
//! field's value as of an instant is today's value walked back through the changes
//! after it: the `value_before` of the earliest change at or after the instant. A
//! field with no change event keeps today's value (as far as the log, which amoCRM
//! does not keep forever, knows). Contact and company fields are not replayed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use leadscore_amocrm::types::{
    CustomField, CustomFieldValues, Event, FieldValue, Lead as AmoLead,
};
use serde_json::Value;

use super::fetch::unix;
use super::{to_crm, AmocrmCrm};
use crate::backtest::{EarlierFit, FitHistory};
use crate::config::FieldsSection;
use crate::crm::CrmError;
use leadscore_amocrm::types::{Company, Contact};

/// The event type that stands for every `custom_field_{ID}_value_changed` in a filter.
pub(super) const FIELD_CHANGED: &str = "custom_field_value_changed";

/// Fit fields a lead takes from its main contact and company, never replayed.
const FROM_CONTACT: &[&str] = &["position", "email", "phone", "company"];

/// One change of one lead custom field.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Change {
    /// Unix seconds.
    pub at: i64,
    pub field_id: u64,
    /// The field's values before the change (empty: it was empty).
    pub before: Vec<FieldValue>,
}

/// The change an event records (`None`: not a custom field change, or no time).
pub(super) fn change_of(e: &Event) -> Option<Change> {
    let field_id = e
        .kind
        .strip_prefix("custom_field_")?
        .strip_suffix("_value_changed")?
        .parse()
        .ok()?;
    let before = e
        .value_before
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("custom_field_value"))
                .filter_map(|v| {
                    let text = v.get("text").and_then(Value::as_str)?.trim();
                    (!text.is_empty()).then(|| FieldValue {
                        value: Value::String(text.to_string()),
                        enum_id: v.get("enum_id").and_then(Value::as_u64),
                        enum_code: None,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Change {
        at: e.created_at?,
        field_id,
        before,
    })
}

/// A lead's custom fields as they were strictly before `since`: each field changed at
/// or after `since` gets the `before` of its earliest such change. `changes` must be
/// in the order they happened (the log's order within one second).
pub(super) fn rewind(
    today: &[CustomFieldValues],
    changes: &[Change],
    since: i64,
) -> Vec<CustomFieldValues> {
    let mut earliest: BTreeMap<u64, &Change> = BTreeMap::new();
    for c in changes.iter().filter(|c| c.at >= since) {
        earliest.entry(c.field_id).or_insert(c);
    }
    let mut out: Vec<CustomFieldValues> = today
        .iter()
        .filter(|f| !earliest.contains_key(&f.field_id))
        .cloned()
        .collect();
    for (id, c) in earliest {
        if c.before.is_empty() {
            continue;
        }
        let mut f = today
            .iter()
            .find(|f| f.field_id == id)
            .cloned()
            .unwrap_or_else(|| CustomFieldValues {
                field_id: id,
                ..CustomFieldValues::default()
            });
        f.values = c.before.clone();
        out.push(f);
    }
    out
}

/// The mapped fit fields that are lead custom fields, so their changes are in the
/// lead's event log.
#[derive(Debug, Default)]
pub(super) struct Replayable {
    /// Neutral name → lead field id.
    pub fields: BTreeMap<String, u64>,
    /// Their definitions, to name a field that is empty today but had a value then.
    defs: BTreeMap<u64, CustomField>,
}

impl Replayable {
    /// Resolve `fields.map` against the account's lead field definitions by id, code
    /// or name, as `lead_from` reads them (a target that is no lead field is a
    /// contact's or company's: not replayed).
    pub(super) fn resolve(fields: &FieldsSection, defs: &[CustomField]) -> Replayable {
        let mut r = Replayable::default();
        for (neutral, target) in &fields.map {
            let t = target.trim();
            let def = match t.parse::<u64>() {
                Ok(id) => defs.iter().find(|d| d.id == Some(id)),
                Err(_) => defs
                    .iter()
                    .find(|d| d.code.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(t)))
                    .or_else(|| defs.iter().find(|d| d.name.eq_ignore_ascii_case(t))),
            };
            if let Some((d, id)) = def.and_then(|d| Some((d, d.id?))) {
                r.fields.insert(neutral.clone(), id);
                r.defs.insert(id, d.clone());
            }
        }
        r
    }

    /// The fit fields of a pull that stay today's values: the contact's and
    /// company's, and mapped ones that are not lead fields.
    pub(super) fn today(&self, fields: &FieldsSection) -> Vec<String> {
        let mut out: BTreeSet<String> = FROM_CONTACT.iter().map(|s| s.to_string()).collect();
        out.extend(fields.map.keys().cloned());
        out.retain(|n| !self.fields.contains_key(n));
        out.into_iter().collect()
    }

    /// Give a field rewound into existence the code and name `lead_from` may look
    /// it up by.
    fn name(&self, f: &mut CustomFieldValues) {
        if let Some(d) = self.defs.get(&f.field_id) {
            f.field_code = f.field_code.take().or_else(|| d.code.clone());
            f.field_name = f.field_name.take().or_else(|| Some(d.name.clone()));
        }
    }
}

impl AmocrmCrm {
    /// The changes of the mapped lead fields of `leads`, by lead, in the order they
    /// happened: the account's lead field definitions (one request), then the
    /// `custom_field_value_changed` events of 10 leads per request (the most
    /// `filter[entity_id]` takes), at any time (a change after the close still has to
    /// be walked back from today's value). No request when no fit field is a lead field.
    pub(super) async fn field_changes(
        &self,
        fields: &FieldsSection,
        leads: &[AmoLead],
    ) -> Result<(Replayable, HashMap<u64, Vec<Change>>), CrmError> {
        let mut by_lead: HashMap<u64, Vec<Change>> = HashMap::new();
        if fields.map.is_empty() || leads.is_empty() {
            return Ok((Replayable::default(), by_lead));
        }
        let defs = self.client.lead_custom_fields().await.map_err(to_crm)?;
        let replayable = Replayable::resolve(fields, &defs);
        if replayable.fields.is_empty() {
            return Ok((replayable, by_lead));
        }
        let ids: Vec<u64> = leads.iter().map(|l| l.id).collect();
        let wanted: BTreeSet<u64> = replayable.fields.values().copied().collect();
        let mut events = self
            .client
            .lead_events(&ids, &[FIELD_CHANGED], None)
            .await
            .map_err(to_crm)?;
        // The log lists the newest first; per lead, oldest first keeps a second's order.
        events.reverse();
        for e in &events {
            let (Some(lead), Some(c)) = (e.entity_id, change_of(e)) else {
                continue;
            };
            if wanted.contains(&c.field_id) {
                by_lead.entry(lead).or_default().push(c);
            }
        }
        for changes in by_lead.values_mut() {
            changes.sort_by_key(|c| c.at);
        }
        Ok((replayable, by_lead))
    }

    /// `raw`'s lead as it stood before each instant one of the `replayed` fields
    /// changed at (`changes`: this lead's, in order), dropping an instant where
    /// nothing scored differed from the next state.
    pub(super) fn fit_history(
        &self,
        fields: &FieldsSection,
        raw: &AmoLead,
        related: (Option<&Contact>, Option<&Company>),
        changes: &[Change],
        replayed: &Replayable,
    ) -> FitHistory {
        let ids: BTreeSet<u64> = replayed.fields.values().copied().collect();
        let mine: Vec<Change> = changes
            .iter()
            .filter(|c| ids.contains(&c.field_id))
            .cloned()
            .collect();
        let instants: BTreeSet<i64> = mine.iter().map(|c| c.at).collect();
        let mut later = self.lead_from(fields, raw, related.0, related.1).0;
        let mut earlier = Vec::new();
        for t in instants.into_iter().rev() {
            let Some(until) = unix(t) else { continue };
            let mut r = raw.clone();
            r.custom_fields_values = rewind(&raw.custom_fields_values, &mine, t);
            r.custom_fields_values.iter_mut().for_each(|f| replayed.name(f));
            let (lead, _) = self.lead_from(fields, &r, related.0, related.1);
            if lead != later {
                earlier.push(EarlierFit {
                    until,
                    lead: lead.clone(),
                });
            }
            later = lead;
        }
        earlier.reverse();
        FitHistory {
            replayed: replayed.fields.keys().cloned().collect(),
            today: replayed.today(fields),
            earlier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(field_id: u64, v: &str) -> CustomFieldValues {
        CustomFieldValues {
            field_id,
            values: vec![FieldValue {
                value: Value::String(v.into()),
                ..FieldValue::default()
            }],
            ..CustomFieldValues::default()
        }
    }

    fn change(at: i64, field_id: u64, before: Option<&str>) -> Change {
        Change {
            at,
            field_id,
            before: before.map_or_else(Vec::new, |v| text(field_id, v).values),
        }
    }

    fn value(fields: &[CustomFieldValues], id: u64) -> Option<String> {
        fields
            .iter()
            .find(|f| f.field_id == id)
            .and_then(|f| f.values.first()?.text())
    }

    /// Employees (field 1): empty until 100, then 10, 40 at 200, 600 at 300 (today).
    /// Region (field 2) never changed: "Москва" all along.
    #[test]
    fn rewinding_takes_the_value_before_the_earliest_change_at_or_after_the_instant() {
        let today = vec![text(1, "600"), text(2, "Москва")];
        let log = vec![
            change(100, 1, None),
            change(200, 1, Some("10")),
            change(300, 1, Some("40")),
        ];
        let at = |t| rewind(&today, &log, t);
        assert_eq!(value(&at(50), 1), None, "empty before its first value");
        assert_eq!(value(&at(100), 1), None, "a change at the instant is not known yet");
        assert_eq!(value(&at(101), 1).as_deref(), Some("10"));
        assert_eq!(value(&at(200), 1).as_deref(), Some("10"));
        assert_eq!(value(&at(250), 1).as_deref(), Some("40"));
        assert_eq!(value(&at(300), 1).as_deref(), Some("40"));
        assert_eq!(value(&at(301), 1).as_deref(), Some("600"), "today's after the last");
        for t in [50, 150, 250, 400] {
            assert_eq!(value(&at(t), 2).as_deref(), Some("Москва"), "no events: today's");
        }
    }

    #[test]
    fn two_changes_in_one_second_rewind_to_the_first_ones_before() {
        let today = vec![text(1, "c")];
        let log = vec![change(100, 1, Some("a")), change(100, 1, Some("b"))];
        assert_eq!(value(&rewind(&today, &log, 100), 1).as_deref(), Some("a"));
    }

    #[test]
    fn events_read_as_changes() {
        let e: Event = serde_json::from_value(serde_json::json!({
            "id": "01j", "type": "custom_field_77_value_changed", "entity_id": 5,
            "entity_type": "lead", "created_at": 1_700_000_000,
            "value_after": [{"custom_field_value": {"field_id": 77, "field_type": "numeric", "enum_id": null, "text": "600"}}],
            "value_before": [{"custom_field_value": {"field_id": 77, "field_type": "numeric", "enum_id": null, "text": "40"}}],
        }))
        .unwrap();
        let c = change_of(&e).unwrap();
        assert_eq!((c.at, c.field_id), (1_700_000_000, 77));
        assert_eq!(c.before[0].text().as_deref(), Some("40"));
        let mut empty = e.clone();
        empty.value_before = serde_json::json!([]);
        assert!(change_of(&empty).unwrap().before.is_empty());
        let mut other = e;
        other.kind = "custom_field_value_changed".into();
        assert!(change_of(&other).is_none());
    }
}
