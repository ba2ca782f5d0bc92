//! Deals: `crm.deal.add` / `get` / `list` / `update` with the stage, its semantics
//! (S won, F lost, P in progress), the pipeline (`CATEGORY_ID`), `LEAD_ID`,
//! `OPPORTUNITY`, `CLOSEDATE` and the deal's user fields (`crm.deal.userfield.*`), so
//! a seeded history of converted leads can end in won or lost deals and a simple-mode
//! portal can be scored on its deals. Adding and really changing a deal fire
//! ONCRMDEALADD / ONCRMDEALUPDATE; an update that changes nothing is not saved and fires
//! nothing (as for leads). `MODIFY_BY_ID` is the REST caller, as on the portal.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::php::scalar_string;
use super::query::{page, parse_order, sort_records, Filter, PAGE};
use super::store::{
    fmt_date, normalize, normalize_uf, now, uf_upper_value, Actor, ApiError, Fired, Kind,
    UserField, ENTITY_DEAL,
};

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
    ("CREATED_BY_ID", Kind::Int),
    ("MODIFY_BY_ID", Kind::Int),
    ("SOURCE_ID", Kind::Str),
    ("COMPANY_ID", Kind::Int),
    ("CONTACT_ID", Kind::Int),
    ("PROBABILITY", Kind::Int),
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
    /// User-field values by deal id (`UF_CRM_*` of `CRM_DEAL` fields).
    pub uf: BTreeMap<u64, BTreeMap<String, Value>>,
}

/// Fields a REST caller may not set (the harness may, to age records).
const READ_ONLY: &[&str] = &[
    "ID",
    "STAGE_SEMANTIC_ID",
    "CLOSED",
    "DATE_CREATE",
    "DATE_MODIFY",
    "MODIFY_BY_ID",
    "CREATED_BY_ID",
];

impl Deals {
    /// `crm.deal.add`: stores the known fields, derives the stage semantics, fires
    /// ONCRMDEALADD.
    pub(crate) fn add(
        &mut self,
        fields: &Map<String, Value>,
        actor: Actor,
        ufs: &[UserField],
        fired: &mut Vec<Fired>,
    ) -> Result<u64, ApiError> {
        let id = self.rows.keys().next_back().map_or(1, |l| l + 1);
        let stamp = fmt_date(now());
        let user = actor.user_id().to_string();
        let mut row: BTreeMap<String, String> = BTreeMap::from([
            ("ID".into(), id.to_string()),
            ("STAGE_ID".into(), "NEW".into()),
            ("CATEGORY_ID".into(), "0".into()),
            ("OPPORTUNITY".into(), "0.00".into()),
            ("CURRENCY_ID".into(), "RUB".into()),
            ("ASSIGNED_BY_ID".into(), user.clone()),
            ("CREATED_BY_ID".into(), user.clone()),
            ("MODIFY_BY_ID".into(), user),
            ("DATE_CREATE".into(), stamp.clone()),
            ("DATE_MODIFY".into(), stamp),
        ]);
        let mut uf = BTreeMap::new();
        for def in ufs.iter().filter(|u| u.entity == ENTITY_DEAL) {
            uf.insert(def.field_name.clone(), Value::Null);
        }
        apply(&mut row, &mut uf, fields, actor, ufs);
        if !row.contains_key("TITLE") {
            row.insert("TITLE".into(), format!("Сделка #{id}"));
        }
        self.rows.insert(id, row);
        self.uf.insert(id, uf);
        fired.push(Fired {
            event: "ONCRMDEALADD",
            id,
        });
        Ok(id)
    }

    /// `crm.deal.update`: a partial update; saved (new `DATE_MODIFY`, `MODIFY_BY_ID`)
    /// and ONCRMDEALUPDATE fired only when something really changed.
    pub(crate) fn update(
        &mut self,
        id: u64,
        fields: &Map<String, Value>,
        actor: Actor,
        ufs: &[UserField],
        fired: &mut Vec<Fired>,
    ) -> Result<bool, ApiError> {
        let (Some(row), Some(uf)) = (self.rows.get(&id), self.uf.get(&id)) else {
            return Err(ApiError::new(400, "", "Not found"));
        };
        let (mut row, mut uf) = (row.clone(), uf.clone());
        let before = (self.rows[&id].clone(), self.uf[&id].clone());
        apply(&mut row, &mut uf, fields, actor, ufs);
        let explicit_modify = actor == Actor::Seed && fields.contains_key("DATE_MODIFY");
        if (&row, &uf) == (&before.0, &before.1) && !explicit_modify {
            return Ok(false);
        }
        if !explicit_modify {
            row.insert("DATE_MODIFY".into(), fmt_date(now()));
        }
        row.insert("MODIFY_BY_ID".into(), actor.user_id().to_string());
        self.rows.insert(id, row);
        self.uf.insert(id, uf);
        fired.push(Fired {
            event: "ONCRMDEALUPDATE",
            id,
        });
        Ok(true)
    }

    /// `crm.deal.get`: every standard and user field of one deal.
    pub(crate) fn get(&self, id: u64) -> Result<Value, ApiError> {
        let row = self
            .rows
            .get(&id)
            .ok_or_else(|| ApiError::new(400, "", "Not found"))?;
        Ok(Value::Object(self.row_json(id, row, &[], true)))
    }

    /// One deal, crm.deal.list-shaped: standard fields as strings (all, or `select`),
    /// user fields when `with_uf` or named in `select`.
    fn row_json(
        &self,
        id: u64,
        row: &BTreeMap<String, String>,
        select: &[String],
        with_uf: bool,
    ) -> Map<String, Value> {
        let all = select.is_empty() || select.iter().any(|s| s == "*");
        let mut m = Map::new();
        for (name, _) in DEAL_FIELDS {
            if all || select.iter().any(|s| s == name) || *name == "ID" {
                m.insert(
                    (*name).into(),
                    row.get(*name).map_or(Value::Null, |v| json!(v)),
                );
            }
        }
        for (name, v) in self.uf.get(&id).into_iter().flatten() {
            if with_uf || select.iter().any(|s| s == name) {
                m.insert(name.clone(), uf_upper_value(v));
            }
        }
        m
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
        let with_uf = select.iter().any(|s| s == "UF_*");
        let items: Vec<Value> = pg
            .items
            .iter()
            .map(|(id, r)| Value::Object(self.row_json(*id, r, &select, with_uf)))
            .collect();
        Ok((Value::Array(items), pg.total, pg.next))
    }
}

/// Apply crm.deal fields to a deal: known standard fields (read-only ones only for the
/// harness), deal user fields normalised by their type (unknown ones ignored, as on the
/// portal), and the stage semantics derived from `STAGE_ID`.
fn apply(
    row: &mut BTreeMap<String, String>,
    uf: &mut BTreeMap<String, Value>,
    fields: &Map<String, Value>,
    actor: Actor,
    ufs: &[UserField],
) {
    for (k, v) in fields {
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("UF_") {
            let def = ufs
                .iter()
                .find(|u| u.entity == ENTITY_DEAL && u.field_name == upper);
            if let Some(def) = def {
                let value = if v.is_null() || v == &Value::String(String::new()) {
                    Some(Value::Null)
                } else {
                    normalize_uf(def, v)
                };
                if let Some(value) = value {
                    uf.insert(upper, value);
                }
            } else if actor == Actor::Seed {
                // Like leads: the harness may seed values of fields it never defined.
                uf.insert(upper, v.clone());
            }
            continue;
        }
        let Some(kind) = kind_of(&upper) else {
            continue;
        };
        if READ_ONLY.contains(&upper.as_str())
            && !(actor == Actor::Seed && matches!(upper.as_str(), "DATE_CREATE" | "DATE_MODIFY"))
        {
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
}
