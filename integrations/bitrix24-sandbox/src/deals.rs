//! Deals, as far as outcome reads need them: `crm.deal.add` / `crm.deal.list` with the
//! stage, its semantics (S won, F lost, P in progress), `LEAD_ID`, `OPPORTUNITY` and
//! `CLOSEDATE`, so a seeded history of converted leads can end in won or lost deals.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::php::scalar_string;
use super::query::{page, parse_order, sort_records, Filter, PAGE};
use super::store::{fmt_date, normalize, now, ApiError, Kind};

/// Deal fields the sandbox keeps: name and type.
const DEAL_FIELDS: &[(&str, Kind)] = &[
    ("ID", Kind::Int),
    ("TITLE", Kind::Str),
    ("LEAD_ID", Kind::Int),
    ("STAGE_ID", Kind::Str),
    ("STAGE_SEMANTIC_ID", Kind::Str),
    ("CATEGORY_ID", Kind::Int),
    ("OPPORTUNITY", Kind::Float),
    ("CURRENCY_ID", Kind::Str),
    ("ASSIGNED_BY_ID", Kind::Int),
    ("CLOSED", Kind::Flag),
    ("CLOSEDATE", Kind::Date),
    ("DATE_CREATE", Kind::Date),
    ("DATE_MODIFY", Kind::Date),
];

fn kind_of(upper: &str) -> Option<Kind> {
    DEAL_FIELDS
        .iter()
        .find(|(n, _)| *n == upper)
        .map(|(_, k)| *k)
}

/// The semantics of a stage id, as the portal derives it for the default pipeline
/// (`WON` / `C1:WON` success, `LOSE` / `APOLOGY` failure, anything else in progress).
fn stage_semantic(stage: &str) -> &'static str {
    let tail = stage.rsplit(':').next().unwrap_or(stage);
    match tail {
        "WON" => "S",
        "LOSE" | "APOLOGY" => "F",
        _ => "P",
    }
}

/// The deals of a portal.
#[derive(Debug, Default)]
pub(crate) struct Deals {
    pub rows: BTreeMap<u64, BTreeMap<String, String>>,
}

impl Deals {
    /// `crm.deal.add`: stores the known fields, derives the stage semantics.
    pub(crate) fn add(&mut self, fields: &Map<String, Value>) -> Result<u64, ApiError> {
        let id = self.rows.keys().next_back().map_or(1, |l| l + 1);
        let stamp = fmt_date(now());
        let mut row: BTreeMap<String, String> = BTreeMap::from([
            ("ID".into(), id.to_string()),
            ("STAGE_ID".into(), "NEW".into()),
            ("CATEGORY_ID".into(), "0".into()),
            ("OPPORTUNITY".into(), "0.00".into()),
            ("CURRENCY_ID".into(), "RUB".into()),
            ("DATE_CREATE".into(), stamp.clone()),
            ("DATE_MODIFY".into(), stamp),
        ]);
        for (k, v) in fields {
            let upper = k.to_ascii_uppercase();
            let Some(kind) = kind_of(&upper) else {
                continue;
            };
            if matches!(upper.as_str(), "ID" | "STAGE_SEMANTIC_ID" | "CLOSED") {
                continue;
            }
            match normalize(kind, v) {
                Some(n) => row.insert(upper, n),
                None => row.remove(&upper),
            };
        }
        let sem = stage_semantic(row.get("STAGE_ID").map_or("", String::as_str));
        row.insert("STAGE_SEMANTIC_ID".into(), sem.into());
        row.insert("CLOSED".into(), if sem == "P" { "N" } else { "Y" }.into());
        self.rows.insert(id, row);
        Ok(id)
    }

    /// `crm.deal.list`: filter, order, select and 50-row pages like `crm.lead.list`.
    pub(crate) fn list(
        &self,
        p: &Map<String, Value>,
    ) -> Result<(Value, Option<u64>, Option<u64>), ApiError> {
        let map = |name: &str| {
            let u = name.to_ascii_uppercase();
            kind_of(&u).map(|_| u)
        };
        let filter = Filter::parse(super::php::param(p, &["filter", "FILTER"]), &map)?;
        let order = parse_order(super::php::param(p, &["order", "ORDER"]), &map)?;
        let select: Vec<String> = super::php::param(p, &["select", "SELECT"])
            .map(super::php::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(scalar_string)
            .map(|s| s.to_ascii_uppercase())
            .collect();
        let start = super::php::param(p, &["start", "START"]);
        let values = |row: &BTreeMap<String, String>, f: &str| {
            kind_of(f).map(|k| (k, row.get(f).cloned().into_iter().collect::<Vec<_>>()))
        };
        let hint = filter.id_hint("ID");
        let id_order = order.is_empty() || order == [("ID".to_owned(), false)];
        let no_count = start.and_then(super::php::as_i64).is_some_and(|s| s < 0);
        let limit = if id_order && no_count {
            PAGE
        } else {
            usize::MAX
        };
        let mut rows: Vec<(u64, &BTreeMap<String, String>)> = self
            .rows
            .range(hint.lo..)
            .take_while(|(id, _)| hint.hi.is_none_or(|h| **id <= h))
            .filter(|(id, r)| hint.admits(**id) && filter.matches(&|f| values(r, f)))
            .take(limit)
            .map(|(id, r)| (*id, r))
            .collect();
        sort_records(&mut rows, &order, &|r, f| values(r.1, f), &|r| r.0);
        let pg = page(rows, start);
        let all = select.is_empty() || select.iter().any(|s| s == "*");
        let items: Vec<Value> = pg
            .items
            .iter()
            .map(|(_, r)| {
                let mut m = Map::new();
                for (name, _) in DEAL_FIELDS {
                    if all || select.iter().any(|s| s == name) || *name == "ID" {
                        m.insert(
                            (*name).into(),
                            r.get(*name).map_or(Value::Null, |v| json!(v)),
                        );
                    }
                }
                Value::Object(m)
            })
            .collect();
        Ok((Value::Array(items), pg.total, pg.next))
    }
}
