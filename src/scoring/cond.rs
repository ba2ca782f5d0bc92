//! Field conditions: reading a lead's field values without allocating and the
//! three-valued evaluation (match, no match, missing data) that fit rules and the
//! qualification criteria share.

use chrono::{DateTime, Months, NaiveDate, NaiveTime, Utc};

use super::compile::{Cond, FieldKind, FieldRef, Test};
use super::text::{contains_bytes, with_lower};
use crate::lead::{FieldValue, Lead};
/// The values of one lead field, borrowed, blanks skipped.
enum Values<'a> {
    One(Option<FieldValue<'a>>),
    Many(std::slice::Iter<'a, String>),
}

impl<'a> Iterator for Values<'a> {
    type Item = FieldValue<'a>;
    fn next(&mut self) -> Option<FieldValue<'a>> {
        match self {
            Values::One(v) => v.take(),
            Values::Many(it) => it
                .map(|s| s.trim())
                .find(|s| !s.is_empty())
                .map(FieldValue::Text),
        }
    }
}

fn text(v: &Option<String>) -> Values<'_> {
    Values::One(
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(FieldValue::Text),
    )
}

fn num(v: Option<f64>) -> Values<'static> {
    Values::One(v.filter(|n| n.is_finite()).map(FieldValue::Number))
}

/// Same semantics as `Lead::values`, without allocating.
fn values<'a>(lead: &'a Lead, f: &FieldRef) -> Values<'a> {
    match f.kind {
        FieldKind::Name => text(&lead.name),
        FieldKind::Position => text(&lead.position),
        FieldKind::Email => Values::Many(lead.emails.iter()),
        FieldKind::Phone => Values::Many(lead.phones.iter()),
        FieldKind::Company => text(&lead.company),
        FieldKind::Industry => text(&lead.industry),
        FieldKind::Revenue => num(lead.revenue),
        FieldKind::Employees => num(lead.employees),
        FieldKind::Region => text(&lead.region),
        FieldKind::Source => text(&lead.source),
        FieldKind::Status => text(&lead.status),
        FieldKind::ResponsibleId => text(&lead.responsible_id),
        FieldKind::Custom => Values::One(
            lead.custom
                .get(&f.custom_key)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(FieldValue::Text),
        ),
    }
}

/// Run `f` on a field value as text (numbers formatted on the stack).
fn with_text<R>(v: FieldValue<'_>, f: impl FnOnce(&str) -> R) -> R {
    match v {
        FieldValue::Text(s) => f(s),
        FieldValue::Number(_) => {
            use std::fmt::Write;
            let mut buf = StackStr {
                buf: [0; 64],
                len: 0,
            };
            if write!(buf, "{v}").is_ok() {
                f(buf.as_str())
            } else {
                f(&v.to_string())
            }
        }
    }
}

struct StackStr {
    buf: [u8; 64],
    len: usize,
}

impl StackStr {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn as_number(v: FieldValue<'_>) -> Option<f64> {
    match v {
        FieldValue::Number(n) => Some(n),
        FieldValue::Text(s) => s.parse::<f64>().ok().filter(|n| n.is_finite()),
    }
}

/// The domain part of an e-mail address (after the last `@`).
fn domain(s: &str) -> Option<&str> {
    s.rsplit_once('@')
        .map(|(_, d)| d.trim())
        .filter(|d| !d.is_empty())
}

/// A field test against one value: `Some(evidence value)` on a match.
fn test_value<'a>(test: &Test, v: FieldValue<'a>, now: DateTime<Utc>) -> Option<FieldValue<'a>> {
    let hit = match test {
        Test::Equals { text, number } => match v {
            FieldValue::Number(n) => number.is_some_and(|m| m == n),
            FieldValue::Text(s) => with_lower(s, |l| l == text.as_bytes()),
        },
        Test::In { texts, numbers } => match v {
            FieldValue::Number(n) => numbers.contains(&n),
            FieldValue::Text(s) => with_lower(s, |l| texts.iter().any(|t| t.as_bytes() == l)),
        },
        Test::Range { min, max } => {
            as_number(v).is_some_and(|n| min.is_none_or(|m| n >= m) && max.is_none_or(|m| n < m))
        }
        Test::Regex(re) => with_text(v, |s| re.is_match(s)),
        Test::Contains(needle) => with_text(v, |s| {
            with_lower(s, |l| contains_bytes(l, needle.as_bytes()))
        }),
        Test::WithinMonths(months) => {
            let FieldValue::Text(s) = v else { return None };
            parse_date(s).is_some_and(|d| within(d, *months, now))
        }
        Test::EmailDomainIn(domains) => {
            let FieldValue::Text(s) = v else { return None };
            let d = domain(s)?;
            return with_lower(d, |l| domains.iter().any(|x| x.as_bytes() == l))
                .then_some(FieldValue::Text(d));
        }
    };
    hit.then_some(v)
}

/// The outcome of a condition: evidence is `(field name, value)`.
pub(crate) enum Outcome<'a> {
    Match(Option<(&'a str, FieldValue<'a>)>),
    NoMatch(Option<(&'a str, FieldValue<'a>)>),
    /// The condition depends on this field and the lead has no value for it.
    Missing(&'a str),
}

/// Three-valued evaluation: a missing field makes a test unknown; `all` is false if
/// any part is false, `any` is true if any part is true, otherwise unknown wins.
pub(crate) fn eval_cond<'a>(c: &'a Cond, lead: &'a Lead, now: DateTime<Utc>) -> Outcome<'a> {
    match c {
        Cond::Exists { field, want } => {
            let first = values(lead, field).next();
            let ev = Some((field.name.as_str(), first.unwrap_or(FieldValue::Text(""))));
            if first.is_some() == *want {
                Outcome::Match(ev)
            } else {
                Outcome::NoMatch(ev)
            }
        }
        Cond::Test { field, test } => {
            let mut vals = values(lead, field);
            let Some(first) = vals.next() else {
                return Outcome::Missing(&field.name);
            };
            if let Some(ev) = test_value(test, first, now) {
                return Outcome::Match(Some((&field.name, ev)));
            }
            for v in vals {
                if let Some(ev) = test_value(test, v, now) {
                    return Outcome::Match(Some((&field.name, ev)));
                }
            }
            Outcome::NoMatch(Some((&field.name, first)))
        }
        Cond::All(parts) => {
            let mut missing = None;
            let mut ev = None;
            for p in parts {
                match eval_cond(p, lead, now) {
                    Outcome::NoMatch(e) => return Outcome::NoMatch(e),
                    Outcome::Missing(f) => missing = missing.or(Some(f)),
                    Outcome::Match(e) => ev = ev.or(e),
                }
            }
            match missing {
                Some(f) => Outcome::Missing(f),
                None => Outcome::Match(ev),
            }
        }
        Cond::Any(parts) => {
            let mut missing = None;
            let mut ev = None;
            for p in parts {
                match eval_cond(p, lead, now) {
                    Outcome::Match(e) => return Outcome::Match(e),
                    Outcome::Missing(f) => missing = missing.or(Some(f)),
                    Outcome::NoMatch(e) => ev = ev.or(e),
                }
            }
            match missing {
                Some(f) => Outcome::Missing(f),
                None => Outcome::NoMatch(ev),
            }
        }
        Cond::Not(inner) => match eval_cond(inner, lead, now) {
            Outcome::Match(e) => Outcome::NoMatch(e),
            Outcome::NoMatch(e) => Outcome::Match(e),
            Outcome::Missing(f) => Outcome::Missing(f),
        },
    }
}

/// A date as CRMs write it: `2026-05-31`, `2026-05-31T00:00:00+03:00` (the date part as
/// written) or `31.05.2026`.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    let head = s.get(..10).unwrap_or(s);
    NaiveDate::parse_from_str(head, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(head, "%d.%m.%Y"))
        .ok()
}

/// `today <= date < today + months` (UTC days): a deadline that is still ahead and near.
fn within(date: NaiveDate, months: u32, now: DateTime<Utc>) -> bool {
    let today = now.date_naive();
    date >= today
        && today
            .checked_add_months(Months::new(months))
            .is_some_and(|end| date < end)
}

impl Cond {
    /// Whether the condition reads the clock (a `within_months` test inside).
    pub(crate) fn timed(&self) -> bool {
        match self {
            Cond::Test { test, .. } => matches!(test, Test::WithinMonths(_)),
            Cond::Exists { .. } => false,
            Cond::All(parts) | Cond::Any(parts) => parts.iter().any(Cond::timed),
            Cond::Not(inner) => inner.timed(),
        }
    }

    /// Offer every instant at which a `within_months` test on this lead flips: the
    /// midnight (UTC) a date comes into the window and the one after it passes.
    pub(crate) fn boundaries(&self, lead: &Lead, offer: &mut dyn FnMut(DateTime<Utc>)) {
        match self {
            Cond::Test {
                field,
                test: Test::WithinMonths(months),
            } => {
                for v in values(lead, field) {
                    let FieldValue::Text(s) = v else { continue };
                    let Some(d) = parse_date(s) else { continue };
                    let enter = d
                        .checked_sub_months(Months::new(*months))
                        .and_then(|x| x.succ_opt());
                    for day in [enter, d.succ_opt()].into_iter().flatten() {
                        offer(day.and_time(NaiveTime::MIN).and_utc());
                    }
                }
            }
            Cond::Test { .. } | Cond::Exists { .. } => {}
            Cond::All(parts) | Cond::Any(parts) => {
                for p in parts {
                    p.boundaries(lead, offer);
                }
            }
            Cond::Not(inner) => inner.boundaries(lead, offer),
        }
    }
}
