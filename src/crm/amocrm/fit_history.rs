//! The fit fields of closed leads as they stood before each later change. amoCRM logs
//! every change of a lead's custom field as a `custom_field_{ID}_value_changed` event
//! whose `value_before` / `value_after` hold the field's values
//! (`[{"custom_field_value": {"field_id", "field_type", "enum_id", "text"}}]`), so a
//! field's value as of an instant is today's value walked back through the changes
//! after it: the `value_before` of the earliest change at or after the instant. A
//! field with no change event keeps today's value (as far as the log, which amoCRM
//! does not keep forever, knows). The main contact's fields (job title, e-mail, phone,
//! mapped contact fields) are replayed the same way from the contact's events, and the
//! lead's price (`amount`) from its `sale_field_changed` events
//! (`[{"sale_field_value": {"sale": …}}]`); the company's are today's values. Which
//! events are read, and how, is [`super::change_feed`]'s concern.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use leadscore_amocrm::types::{
    Company, Contact, CustomFieldValues, Event, FieldValue, Lead as AmoLead,
};
use serde_json::Value;

use super::change_feed::Wanted;
use super::fetch::unix;
use super::{to_crm, AmocrmCrm};
use crate::backtest::{EarlierFit, FitHistory};
use crate::config::FieldsSection;
use crate::crm::CrmError;

/// The event type of a change of a lead's price (its budget, `sale`).
const SALE_CHANGED: &str = "sale_field_changed";

/// Fit fields a lead takes from its main contact's own fields.
const FROM_CONTACT: &[&str] = &["email", "phone", "position"];

/// The codes of the contact's system fields those are read from.
const CONTACT_CODES: &[&str] = &["EMAIL", "PHONE", "POSITION"];

/// The event type of a change of custom field `id`.
fn field_changed(id: u64) -> String {
    format!("custom_field_{id}_value_changed")
}

/// The price before a `sale_field_changed` event (`None`: not one, or no time); the
/// inner `None` is no price (none, or 0).
fn price_change_of(e: &Event) -> Option<(i64, Option<f64>)> {
    if e.kind != SALE_CHANGED {
        return None;
    }
    let sale = e.value_before.pointer("/0/sale_field_value/sale");
    let before = sale
        .and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
        .filter(|p| p.is_finite() && *p > 0.0);
    Some((e.created_at?, before))
}

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

/// What a pull knows of its leads' field changes: which fit fields they replay, and
/// the changes of the leads' mapped fields and of their main contacts' fields.
#[derive(Debug, Default)]
pub(super) struct FieldLog {
    /// Mapped fit fields that are lead custom fields: neutral name → field id.
    lead_fields: BTreeMap<String, u64>,
    /// Mapped fit fields found on the main contacts (replayed with the contact).
    contact_fields: BTreeSet<String>,
    /// Whether the main contacts' changes were read.
    contacts_read: bool,
    /// Whether the leads' price changes were read.
    prices_read: bool,
    /// A field's code and name by id, to name a field that is empty today but had a
    /// value then (`lead_from` may look it up by either).
    names: HashMap<u64, (Option<String>, Option<String>)>,
    by_lead: HashMap<u64, Vec<Change>>,
    by_contact: HashMap<u64, Vec<Change>>,
    /// Each lead's price changes, oldest first: (Unix seconds, the price before).
    prices: HashMap<u64, Vec<(i64, Option<f64>)>>,
}

/// `fields.map`'s target `t` is this field (by id, else code, else name), as
/// `lead_from` looks fields up.
fn names_field(t: &str, id: u64, code: Option<&str>, name: Option<&str>) -> bool {
    match t.parse::<u64>() {
        Ok(want) => want == id,
        Err(_) => {
            code.is_some_and(|c| c.eq_ignore_ascii_case(t))
                || name.is_some_and(|n| n.eq_ignore_ascii_case(t))
        }
    }
}

/// What `read` makes of each of `events` (the log's order: newest first), by entity,
/// oldest first.
fn by_entity<T>(
    events: &[Event],
    read: impl Fn(&Event) -> Option<T>,
    at: impl Fn(&T) -> i64,
) -> HashMap<u64, Vec<T>> {
    let mut out: HashMap<u64, Vec<T>> = HashMap::new();
    // Reversed, each entity's changes of one second stay in the order they were made.
    for e in events.iter().rev() {
        if let (Some(id), Some(c)) = (e.entity_id, read(e)) {
            out.entry(id).or_default().push(c);
        }
    }
    for changes in out.values_mut() {
        changes.sort_by_key(&at);
    }
    out
}

impl FieldLog {
    /// Changes read, leads' and contacts' (for the progress line).
    pub(super) fn changes(&self) -> usize {
        self.by_lead
            .values()
            .chain(self.by_contact.values())
            .map(Vec::len)
            .sum()
    }

    /// The lead's price strictly before `since`: the price before its earliest change
    /// at or after `since`, else today's.
    pub(super) fn price_at(&self, raw: &AmoLead, since: i64) -> Option<f64> {
        let changes = self.prices.get(&raw.id).map_or(&[][..], Vec::as_slice);
        match changes.iter().find(|(at, _)| *at >= since) {
            Some((_, before)) => *before,
            None => raw.price,
        }
    }

    /// Fit fields rebuilt from the log.
    fn replayed(&self) -> Vec<String> {
        let mut out: BTreeSet<String> = self.lead_fields.keys().cloned().collect();
        if self.prices_read {
            out.insert("amount".into());
        }
        if self.contacts_read {
            out.extend(FROM_CONTACT.iter().map(|s| s.to_string()));
            out.extend(self.contact_fields.iter().cloned());
        }
        out.into_iter().collect()
    }

    /// Fit fields that stay today's values: the company's name, mapped fields that are
    /// neither the lead's nor the contact's, and the contact's when none was read.
    fn today(&self, fields: &FieldsSection) -> Vec<String> {
        let replayed = self.replayed();
        let mut out: BTreeSet<String> = FROM_CONTACT.iter().map(|s| s.to_string()).collect();
        out.insert("company".into());
        out.extend(fields.map.keys().cloned());
        out.retain(|n| !replayed.contains(n));
        out.into_iter().collect()
    }

    /// `today` with every change in `changes` at or after `since` undone, each field
    /// named.
    fn rewound(
        &self,
        today: &[CustomFieldValues],
        changes: &[Change],
        since: i64,
    ) -> Vec<CustomFieldValues> {
        let mut out = rewind(today, changes, since);
        for f in &mut out {
            if let Some((code, name)) = self.names.get(&f.field_id) {
                f.field_code = f.field_code.take().or_else(|| code.clone());
                f.field_name = f.field_name.take().or_else(|| name.clone());
            }
        }
        out
    }
}

impl AmocrmCrm {
    /// The field changes of `leads` and their main contacts, oldest first: the
    /// account's lead field definitions (one request, when `fields.map` names any
    /// field), then the change events of the mapped lead fields and the price, and of
    /// the contact fields the mapping reads (job title, e-mail, phone, mapped contact
    /// fields, by the ids the pulled contacts carry), from the earliest creation on: a
    /// change after the close still has to be walked back from today's value.
    pub(super) async fn field_changes(
        &self,
        fields: &FieldsSection,
        leads: &[AmoLead],
        contacts: &[&Contact],
    ) -> Result<FieldLog, CrmError> {
        let mut log = FieldLog::default();
        if leads.is_empty() {
            return Ok(log);
        }
        let defs = if fields.map.is_empty() {
            Vec::new()
        } else {
            self.client.lead_custom_fields().await.map_err(to_crm)?
        };
        for d in &defs {
            let Some(id) = d.id else { continue };
            log.names
                .insert(id, (d.code.clone(), Some(d.name.clone())));
            for (neutral, target) in &fields.map {
                if names_field(target.trim(), id, d.code.as_deref(), Some(&d.name)) {
                    log.lead_fields.entry(neutral.clone()).or_insert(id);
                }
            }
        }
        let mut contact_field_ids = BTreeSet::new();
        for f in contacts.iter().flat_map(|c| &c.custom_fields_values) {
            log.names
                .entry(f.field_id)
                .or_insert_with(|| (f.field_code.clone(), f.field_name.clone()));
            let (code, name) = (f.field_code.as_deref(), f.field_name.as_deref());
            if code.is_some_and(|c| CONTACT_CODES.iter().any(|k| c.eq_ignore_ascii_case(k))) {
                contact_field_ids.insert(f.field_id);
            }
            for (neutral, target) in &fields.map {
                if !log.lead_fields.contains_key(neutral)
                    && names_field(target.trim(), f.field_id, code, name)
                {
                    log.contact_fields.insert(neutral.clone());
                    contact_field_ids.insert(f.field_id);
                }
            }
        }
        let lead_field_ids: BTreeSet<u64> = log.lead_fields.values().copied().collect();
        let mut lead_types: Vec<String> = lead_field_ids.iter().map(|id| field_changed(*id)).collect();
        lead_types.push(SALE_CHANGED.into());
        let contact_types: Vec<String> = contact_field_ids.iter().map(|id| field_changed(*id)).collect();
        let lead_ids: Vec<u64> = leads.iter().map(|l| l.id).collect();
        let contact_ids: Vec<u64> = leads.iter().filter_map(AmoLead::main_contact_id).collect();
        let wanted = Wanted {
            lead_types: &lead_types,
            lead_ids: &lead_ids,
            contact_types: &contact_types,
            contact_ids: &contact_ids,
            from: leads.iter().filter_map(|l| l.created_at).min().unwrap_or(0),
        };
        let (lead_events, contact_events) = self.change_events(&wanted).await?;
        let keep = |ids: &BTreeSet<u64>, e: &Event| change_of(e).filter(|c| ids.contains(&c.field_id));
        log.by_lead = by_entity(&lead_events, |e| keep(&lead_field_ids, e), |c| c.at);
        log.prices = by_entity(&lead_events, price_change_of, |c| c.0);
        log.prices_read = true;
        log.by_contact = by_entity(&contact_events, |e| keep(&contact_field_ids, e), |c| c.at);
        log.contacts_read = !contact_ids.is_empty() && !contact_types.is_empty();
        Ok(log)
    }

    /// `raw`'s lead as it stood before each instant its mapped fields or its main
    /// contact's fields changed at, dropping an instant where nothing the lead is
    /// made of differed from the next state.
    pub(super) fn fit_history(
        &self,
        fields: &FieldsSection,
        raw: &AmoLead,
        (contact, company): (Option<&Contact>, Option<&Company>),
        log: &FieldLog,
    ) -> FitHistory {
        let none = Vec::new();
        let lead_changes = log.by_lead.get(&raw.id).unwrap_or(&none);
        let contact_changes = contact
            .and_then(|c| log.by_contact.get(&c.id))
            .unwrap_or(&none);
        let prices = log.prices.get(&raw.id).map_or(&[][..], Vec::as_slice);
        let instants: BTreeSet<i64> = lead_changes
            .iter()
            .chain(contact_changes)
            .map(|c| c.at)
            .chain(prices.iter().map(|p| p.0))
            .collect();
        let mut later = self.lead_from(fields, raw, contact, company).0;
        let mut earlier = Vec::new();
        for t in instants.into_iter().rev() {
            let Some(until) = unix(t) else { continue };
            let mut r = raw.clone();
            r.custom_fields_values = log.rewound(&raw.custom_fields_values, lead_changes, t);
            r.price = log.price_at(raw, t);
            let c = contact.map(|c| {
                let mut c = c.clone();
                c.custom_fields_values = log.rewound(&c.custom_fields_values, contact_changes, t);
                c
            });
            let (lead, _) = self.lead_from(fields, &r, c.as_ref(), company);
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
            replayed: log.replayed(),
            today: log.today(fields),
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
    fn replayed_and_todays_fields_of_a_pull() {
        let fields = FieldsSection {
            map: [("employees", "77"), ("industry", "Отрасль"), ("custom.inn", "INN")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..FieldsSection::default()
        };
        assert!(names_field("77", 77, None, None));
        assert!(names_field("Отрасль", 5, None, Some("Отрасль")));
        assert!(names_field("inn", 6, Some("INN"), Some("ИНН")));
        assert!(!names_field("77", 78, Some("77"), None));
        let mut log = FieldLog::default();
        log.lead_fields.insert("employees".into(), 77);
        assert_eq!(log.replayed(), vec!["employees"]);
        assert_eq!(
            log.today(&fields),
            vec!["company", "custom.inn", "email", "industry", "phone", "position"]
        );
        log.contacts_read = true;
        log.contact_fields.insert("custom.inn".into());
        assert_eq!(
            log.replayed(),
            vec!["custom.inn", "email", "employees", "phone", "position"]
        );
        assert_eq!(log.today(&fields), vec!["company", "industry"]);
    }

    #[test]
    fn price_changes_rewind_the_price() {
        let sale = |at: i64, before: serde_json::Value| -> Event {
            serde_json::from_value(serde_json::json!({
                "id": format!("e{at}"), "type": "sale_field_changed", "entity_id": 5,
                "entity_type": "lead", "created_at": at,
                "value_after": [{"sale_field_value": {"sale": 9000}}],
                "value_before": [{"sale_field_value": {"sale": before}}],
            }))
            .unwrap()
        };
        // Newest first, as the log comes: no price until 100, then 1,000, and 9,000
        // (today's) from 200 on.
        let events = vec![sale(200, 1000.into()), sale(100, 0.into())];
        assert_eq!(price_change_of(&events[0]), Some((200, Some(1000.0))));
        assert_eq!(price_change_of(&events[1]), Some((100, None)), "0 is no price");
        let mut call = events[0].clone();
        call.kind = "incoming_call".into();
        assert_eq!(price_change_of(&call), None);
        let log = FieldLog {
            prices: by_entity(&events, price_change_of, |c| c.0),
            ..FieldLog::default()
        };
        let raw = AmoLead {
            id: 5,
            price: Some(9000.0),
            ..AmoLead::default()
        };
        assert_eq!(log.price_at(&raw, 50), None);
        assert_eq!(log.price_at(&raw, 100), None, "a change at the instant is not known");
        assert_eq!(log.price_at(&raw, 150), Some(1000.0));
        assert_eq!(log.price_at(&raw, 201), Some(9000.0), "today's after the last");
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
