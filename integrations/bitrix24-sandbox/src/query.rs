//! List-method machinery shared by leads, activities, tasks and user fields: filters with
//! Bitrix24's key prefixes (`>=ID`, `@ID`, `!STATUS`, `%TITLE`, `logic: OR` groups),
//! ordering and the fixed 50-item pages with `next`/`total` (or none with `start=-1`).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};

use super::php::{as_i64, as_list, scalar_string};
use super::store::{parse_date, ApiError, Kind};

/// A field's type and current values (several for multi-fields), or `None` when the
/// record has no such field.
pub(crate) type FieldValues = Option<(Kind, Vec<String>)>;

/// Page size of every list method; the portal does not let clients change it.
pub(crate) const PAGE: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Contains,
    NotContains,
    Like,
    StartsWith,
}

impl Op {
    fn negative(self) -> bool {
        matches!(self, Op::Ne | Op::NotIn | Op::NotContains)
    }
}

/// What a filter says about ids: an explicit set and/or an inclusive range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdHint {
    /// Only these ids can match.
    pub set: Option<BTreeSet<u64>>,
    /// Smallest id that can match.
    pub lo: u64,
    /// Largest id that can match; `None` = unbounded.
    pub hi: Option<u64>,
    /// Nothing can match.
    pub empty: bool,
}

impl IdHint {
    fn raise(&mut self, lo: u64) {
        self.lo = self.lo.max(lo);
    }

    fn lower(&mut self, hi: Option<u64>) {
        match hi {
            None => self.empty = true,
            Some(h) => self.hi = Some(self.hi.map_or(h, |cur| cur.min(h))),
        }
    }

    /// Whether `id` is inside the hint.
    pub(crate) fn admits(&self, id: u64) -> bool {
        !self.empty
            && id >= self.lo
            && self.hi.is_none_or(|h| id <= h)
            && self.set.as_ref().is_none_or(|s| s.contains(&id))
    }
}

/// One parsed condition or a nested group.
#[derive(Clone, Debug)]
enum Node {
    Cond {
        op: Op,
        field: String,
        values: Vec<Wanted>,
        /// The values as a set when they are all integers, for fast `IN` on ids.
        ints: Option<HashSet<i64>>,
    },
    Group {
        or: bool,
        children: Vec<Node>,
    },
}

/// A parsed filter, checked against a record through a field accessor.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    root: Node,
}

const PREFIXES: &[(&str, Op)] = &[
    ("!%=", Op::NotContains),
    ("!@", Op::NotIn),
    ("!=", Op::Ne),
    ("!%", Op::NotContains),
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("=%", Op::Like),
    ("%=", Op::StartsWith),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("@", Op::In),
    ("=", Op::Eq),
    ("!", Op::Ne),
    ("%", Op::Contains),
];

fn split_prefix(key: &str) -> (Op, &str, bool) {
    for (p, op) in PREFIXES {
        if let Some(rest) = key.strip_prefix(p) {
            return (*op, rest, true);
        }
    }
    (Op::Eq, key, false)
}

impl Filter {
    /// Parses a `filter` parameter. `map_field` turns a client field name into the
    /// record's canonical name, or `None` when the portal does not know it (an error).
    pub(crate) fn parse(
        raw: Option<&Value>,
        map_field: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ApiError> {
        let root = match raw {
            None | Some(Value::Null) => Node::Group {
                or: false,
                children: Vec::new(),
            },
            Some(Value::Array(items)) if items.is_empty() => Node::Group {
                or: false,
                children: Vec::new(),
            },
            Some(Value::Object(map)) => parse_group(map, map_field)?,
            Some(_) => {
                return Err(ApiError::new(400, "", "Parameter 'filter' must be array."));
            }
        };
        Ok(Self { root })
    }

    /// Inclusive bounds on the record id implied by top-level AND conditions on
    /// `id_field`, so that lists over many records only look at those that can match.
    /// The full filter is still applied to every candidate.
    pub(crate) fn id_hint(&self, id_field: &str) -> IdHint {
        let mut hint = IdHint::default();
        let Node::Group {
            or: false,
            children,
        } = &self.root
        else {
            return hint;
        };
        for child in children {
            let Node::Cond {
                op, field, values, ..
            } = child
            else {
                continue;
            };
            if field != id_field {
                continue;
            }
            let first = values.first().and_then(|w| w.num);
            match op {
                Op::Eq | Op::In => {
                    let ids: BTreeSet<u64> = values
                        .iter()
                        .filter_map(|w| w.num)
                        .filter(|n| n.fract() == 0.0 && *n >= 0.0)
                        .map(|n| n as u64)
                        .collect();
                    hint.set = Some(match hint.set.take() {
                        Some(prev) => prev.intersection(&ids).copied().collect(),
                        None => ids,
                    });
                }
                Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                    let Some(v) = first else { continue };
                    match op {
                        Op::Gt => hint.raise((v.floor() + 1.0).max(0.0) as u64),
                        Op::Ge => hint.raise(v.ceil().max(0.0) as u64),
                        Op::Lt => hint.lower(if v <= 0.0 {
                            None
                        } else {
                            Some(v.ceil() as u64 - 1)
                        }),
                        _ => hint.lower(if v < 0.0 {
                            None
                        } else {
                            Some(v.floor() as u64)
                        }),
                    }
                }
                _ => {}
            }
        }
        hint
    }

    /// Whether a record passes. `values` returns the type and current values of a field.
    pub(crate) fn matches(&self, values: &dyn Fn(&str) -> FieldValues) -> bool {
        eval(&self.root, values)
    }
}

fn parse_group(
    map: &Map<String, Value>,
    map_field: &dyn Fn(&str) -> Option<String>,
) -> Result<Node, ApiError> {
    let or = map
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("logic"))
        .and_then(|(_, v)| scalar_string(v))
        .is_some_and(|l| l.eq_ignore_ascii_case("or"));
    let mut children = Vec::new();
    for (key, value) in map {
        if key.eq_ignore_ascii_case("logic") {
            continue;
        }
        let (mut op, name, had_prefix) = split_prefix(key);
        if let Value::Object(inner) = value {
            if !had_prefix && map_field(name).is_none() {
                children.push(parse_group(inner, map_field)?);
                continue;
            }
        }
        let field = map_field(name)
            .ok_or_else(|| ApiError::new(400, "", format!("Unknown field in filter: {name}")))?;
        let values = match value {
            Value::Array(_) | Value::Object(_) => {
                if op == Op::Eq {
                    op = Op::In;
                } else if op == Op::Ne {
                    op = Op::NotIn;
                }
                as_list(value)
            }
            other => vec![other.clone()],
        };
        let values: Vec<Wanted> = values.iter().map(Wanted::new).collect();
        let ints = values
            .iter()
            .map(|w| w.num.filter(|n| n.fract() == 0.0).map(|n| n as i64))
            .collect::<Option<HashSet<i64>>>();
        children.push(Node::Cond {
            op,
            field,
            values,
            ints,
        });
    }
    Ok(Node::Group { or, children })
}

fn eval(node: &Node, values: &dyn Fn(&str) -> FieldValues) -> bool {
    match node {
        Node::Group { or, children } => {
            if children.is_empty() {
                return true;
            }
            if *or {
                children.iter().any(|c| eval(c, values))
            } else {
                children.iter().all(|c| eval(c, values))
            }
        }
        Node::Cond {
            op,
            field,
            values: wanted,
            ints,
        } => {
            let Some((kind, have)) = values(field) else {
                return false;
            };
            let positive = match op {
                Op::Ne => Op::Eq,
                Op::NotIn => Op::In,
                Op::NotContains => Op::Contains,
                other => *other,
            };
            let int_set = ints
                .as_ref()
                .filter(|_| matches!(positive, Op::Eq | Op::In))
                .filter(|_| matches!(kind, Kind::Int | Kind::Float));
            let hit = if let (Some(set), false) = (int_set, have.is_empty()) {
                have.iter().any(|h| {
                    let t = h.trim();
                    t.parse::<i64>()
                        .ok()
                        .or_else(|| {
                            t.parse::<f64>()
                                .ok()
                                .filter(|n| n.fract() == 0.0)
                                .map(|n| n as i64)
                        })
                        .is_some_and(|n| set.contains(&n))
                })
            } else if have.is_empty() {
                // An empty field equals "" / null filters only.
                matches!(positive, Op::Eq | Op::In)
                    && wanted
                        .iter()
                        .any(|w| w.text.as_deref().is_none_or(str::is_empty))
            } else {
                have.iter().any(|h| {
                    let probe = Probe::new(kind, h);
                    wanted.iter().any(|w| probe.matches(positive, w))
                })
            };
            if op.negative() {
                !hit
            } else {
                hit
            }
        }
    }
}

/// A filter value parsed once, in every form a comparison may need.
#[derive(Clone, Debug)]
struct Wanted {
    text: Option<String>,
    lower: Option<String>,
    num: Option<f64>,
    date: Option<chrono::DateTime<chrono::FixedOffset>>,
}

impl Wanted {
    fn new(v: &Value) -> Self {
        let text = scalar_string(v);
        Self {
            lower: text.as_ref().map(|t| t.to_lowercase()),
            num: text.as_deref().and_then(|t| t.trim().parse::<f64>().ok()),
            date: text.as_deref().and_then(parse_date),
            text,
        }
    }
}

/// A record's value parsed once for its field type.
struct Probe {
    kind: Kind,
    lower: String,
    num: Option<f64>,
    date: Option<chrono::DateTime<chrono::FixedOffset>>,
}

impl Probe {
    fn new(kind: Kind, have: &str) -> Self {
        Self {
            kind,
            lower: have.to_lowercase(),
            num: matches!(kind, Kind::Int | Kind::Float)
                .then(|| have.trim().parse::<f64>().ok())
                .flatten(),
            date: (kind == Kind::Date).then(|| parse_date(have)).flatten(),
        }
    }

    fn matches(&self, op: Op, w: &Wanted) -> bool {
        let Some(wl) = w.lower.as_deref() else {
            return false;
        };
        match op {
            Op::Contains => return self.lower.contains(wl),
            Op::StartsWith => return self.lower.starts_with(wl),
            Op::Like => return like(&self.lower, wl),
            _ => {}
        }
        let ord = match self.kind {
            Kind::Int | Kind::Float => self.num.zip(w.num).and_then(|(a, b)| a.partial_cmp(&b)),
            Kind::Date => self.date.zip(w.date).map(|(a, b)| a.cmp(&b)),
            Kind::Str | Kind::Flag => Some(self.lower.as_str().cmp(wl)),
        };
        match op {
            Op::Eq | Op::In => ord == Some(Ordering::Equal),
            Op::Gt => ord == Some(Ordering::Greater),
            Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
            Op::Lt => ord == Some(Ordering::Less),
            Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
            _ => false,
        }
    }
}

/// SQL LIKE with `%` wildcards.
fn like(have: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('%').collect();
    if parts.len() == 1 {
        return have == pattern;
    }
    let mut rest = have;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Compares two values as their field type: numbers numerically, dates as instants,
/// strings case-insensitively.
pub(crate) fn cmp_typed(kind: Kind, a: &str, b: &str) -> Option<Ordering> {
    match kind {
        Kind::Int | Kind::Float => {
            let x = a.trim().parse::<f64>().ok()?;
            let y = b.trim().parse::<f64>().ok()?;
            x.partial_cmp(&y)
        }
        Kind::Date => Some(parse_date(a)?.cmp(&parse_date(b)?)),
        Kind::Str | Kind::Flag => Some(a.to_lowercase().cmp(&b.to_lowercase())),
    }
}

/// Parses `order` into (field, descending) pairs through the same field mapping.
pub(crate) fn parse_order(
    raw: Option<&Value>,
    map_field: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, bool)>, ApiError> {
    let Some(Value::Object(map)) = raw else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let field = map_field(k)
            .ok_or_else(|| ApiError::new(400, "", format!("Unknown field in order: {k}")))?;
        let desc = scalar_string(v).is_some_and(|d| d.eq_ignore_ascii_case("desc"));
        out.push((field, desc));
    }
    Ok(out)
}

/// Sorts records by the order spec, ties broken by id ascending.
pub(crate) fn sort_records<T>(
    records: &mut [T],
    order: &[(String, bool)],
    values: &dyn Fn(&T, &str) -> FieldValues,
    id: &dyn Fn(&T) -> u64,
) {
    records.sort_by(|a, b| {
        for (field, desc) in order {
            let va = values(a, field);
            let vb = values(b, field);
            let ord = match (va, vb) {
                (Some((kind, xa)), Some((_, xb))) => match (xa.first(), xb.first()) {
                    (Some(x), Some(y)) => cmp_typed(kind, x, y).unwrap_or(Ordering::Equal),
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                },
                _ => Ordering::Equal,
            };
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        id(a).cmp(&id(b))
    });
}

/// One page of a list: the items, and `total`/`next` unless `start=-1` asked for none.
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    pub total: Option<u64>,
    pub next: Option<u64>,
}

/// Cuts a 50-item page at `start`. `start=-1` returns the first page without counting.
pub(crate) fn page<T>(all: Vec<T>, start: Option<&Value>) -> Page<T> {
    let start = start.and_then(as_i64).unwrap_or(0);
    if start < 0 {
        return Page {
            items: all.into_iter().take(PAGE).collect(),
            total: None,
            next: None,
        };
    }
    let offset = usize::try_from(start).unwrap_or(0);
    let total = all.len();
    let items: Vec<T> = all.into_iter().skip(offset).take(PAGE).collect();
    let next = (offset + PAGE < total).then_some((offset + PAGE) as u64);
    Page {
        items,
        total: Some(total as u64),
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ident(s: &str) -> Option<String> {
        matches!(s, "ID" | "TITLE" | "DATE_MODIFY").then(|| s.to_owned())
    }

    fn rec(id: &str, title: &str, date: &str) -> impl Fn(&str) -> Option<(Kind, Vec<String>)> {
        let (id, title, date) = (id.to_owned(), title.to_owned(), date.to_owned());
        move |f: &str| match f {
            "ID" => Some((Kind::Int, vec![id.clone()])),
            "TITLE" => Some((Kind::Str, vec![title.clone()])),
            "DATE_MODIFY" => Some((Kind::Date, vec![date.clone()])),
            _ => None,
        }
    }

    #[test]
    fn prefixes_and_in() {
        let r = rec("10", "Big Deal", "2026-11-20T12:00:00+03:00");
        let ok = |f: Value| Filter::parse(Some(&f), &ident).map(|p| p.matches(&r));
        assert_eq!(ok(json!({">ID": 9})), Ok(true));
        assert_eq!(ok(json!({">ID": "10"})), Ok(false));
        assert_eq!(ok(json!({">=ID": 10, "<=ID": 10})), Ok(true));
        assert_eq!(ok(json!({"@ID": [1, 10]})), Ok(true));
        assert_eq!(ok(json!({"ID": [1, 2]})), Ok(false));
        assert_eq!(ok(json!({"!ID": 10})), Ok(false));
        assert_eq!(ok(json!({"%TITLE": "deal"})), Ok(true));
        assert_eq!(
            ok(json!({">DATE_MODIFY": "2026-11-20T08:59:59Z"})),
            Ok(true)
        );
        assert_eq!(
            ok(json!({">DATE_MODIFY": "2026-11-20T09:00:00Z"})),
            Ok(false)
        );
        assert_eq!(
            ok(json!({"logic": "OR", "0": {"ID": 1}, "1": {"ID": 10}})),
            Ok(true)
        );
        assert!(Filter::parse(Some(&json!({"NOPE": 1})), &ident).is_err());
    }

    #[test]
    fn id_hints_narrow_the_scan() {
        let hint = |f: Value| Filter::parse(Some(&f), &ident).map(|p| p.id_hint("ID"));
        let h = hint(json!({">ID": 10, "<=ID": 20})).unwrap();
        assert_eq!((h.lo, h.hi, h.set.is_none()), (11, Some(20), true));
        let h = hint(json!({"@ID": [3, 5, 7], "ID": [5, 7, 9]})).unwrap();
        assert_eq!(
            h.set.map(|s| s.into_iter().collect::<Vec<_>>()),
            Some(vec![5, 7])
        );
        let h = hint(json!({"<ID": 0})).unwrap();
        assert!(h.empty);
        let h = hint(json!({"logic": "OR", "0": {"ID": 1}, "1": {"ID": 2}})).unwrap();
        assert_eq!(h, IdHint::default(), "OR groups give no hint");
        assert!(IdHint::default().admits(123));
    }

    #[test]
    fn paging_counts_and_skips() {
        let p = page((0..120).collect::<Vec<_>>(), Some(&json!(50)));
        assert_eq!((p.items.len(), p.total, p.next), (50, Some(120), Some(100)));
        let p = page((0..120).collect::<Vec<_>>(), Some(&json!("100")));
        assert_eq!((p.items.len(), p.total, p.next), (20, Some(120), None));
        let p = page((0..120).collect::<Vec<_>>(), Some(&json!(-1)));
        assert_eq!((p.items.len(), p.total, p.next), (50, None, None));
    }
}
