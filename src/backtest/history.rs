//! Reading closed leads from an export: JSON Lines (one [`ClosedLead`] per line) or
//! CSV (one row per lead, plus an optional activities CSV keyed by `lead_id`).
//!
//! Every bad row is an error that names the file, the line and the column, so an admin
//! can fix an export without guessing. The columns are documented in `docs/backtest.md`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::{ClosedLead, Outcome};
use crate::lead::{Activity, ActivityKind, Direction, Lead, FIELD_NAMES};

/// Read a history file: `.csv` by its columns, anything else as JSON Lines. `activities`
/// is the CSV activities export (JSON Lines carries activities inline).
pub fn read(path: &Path, activities: Option<&Path>) -> anyhow::Result<Vec<ClosedLead>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let label = path.display().to_string();
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut leads = if is_csv {
        read_csv(&text, &label)?
    } else {
        if activities.is_some() {
            bail!("--activities is for CSV input; JSON Lines carries activities inline");
        }
        read_jsonl(&text, &label)?
    };
    if let Some(apath) = activities {
        let atext = std::fs::read_to_string(apath)
            .with_context(|| format!("cannot read {}", apath.display()))?;
        attach_activities(&mut leads, &atext, &apath.display().to_string())?;
    }
    Ok(leads)
}

/// JSON Lines: each non-blank line is one `ClosedLead` object (the lead's own
/// `created_at` defaults to the record's).
pub fn read_jsonl(text: &str, label: &str) -> anyhow::Result<Vec<ClosedLead>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut c: ClosedLead = serde_json::from_str(line)
            .map_err(|e| anyhow!("{label}:{}:{}: {e}", i + 1, e.column()))?;
        check(&c).map_err(|m| anyhow!("{label}:{}:1: {m}", i + 1))?;
        c.lead.created_at.get_or_insert(c.created_at);
        c.activities.sort_by_key(|a| a.at);
        out.push(c);
    }
    Ok(out)
}

fn check(c: &ClosedLead) -> Result<(), String> {
    if c.closed_at < c.created_at {
        return Err(format!(
            "closed_at {} is before created_at {}",
            c.closed_at, c.created_at
        ));
    }
    if c.lead.id.trim().is_empty() {
        return Err("lead.id is empty".into());
    }
    Ok(())
}

/// The lead CSV's own columns; the lead's fields (`lead::FIELD_NAMES`, e.g. `position`,
/// `email`) and `custom.<name>` are columns too.
pub const OUTCOME_COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "closed_at",
    "outcome",
    "amount",
    "rep_id",
    "loss_reason",
    "stage",
];

/// The activities CSV's columns.
pub const ACTIVITY_COLUMNS: &[&str] = &[
    "lead_id",
    "kind",
    "at",
    "direction",
    "subject",
    "url",
    "id",
    "contact_id",
];

/// A cell's place, for messages: `file:line:column (name)`.
struct Cell<'a> {
    label: &'a str,
    line: u64,
    col: usize,
    name: &'a str,
}

impl Cell<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "{}:{}:{} ({}): {msg}",
            self.label,
            self.line,
            self.col + 1,
            self.name
        )
    }
}

/// A CSV file read whole: its header and its rows with their line numbers.
struct Table<'a> {
    label: &'a str,
    headers: Vec<String>,
    rows: Vec<(u64, csv::StringRecord)>,
}

impl<'a> Table<'a> {
    /// Read `text`, checking every column is in `known` (or `custom.<name>`) and every
    /// `required` one is present.
    fn read(
        text: &str,
        label: &'a str,
        known: &[&[&str]],
        required: &[&str],
    ) -> anyhow::Result<Table<'a>> {
        let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let headers: Vec<String> = rdr
            .headers()
            .map_err(|e| anyhow!("{label}:1:1: cannot read the header row: {e}"))?
            .iter()
            .map(|s| s.trim().to_string())
            .collect();
        let all: Vec<&str> = known.iter().flat_map(|k| k.iter().copied()).collect();
        for (i, name) in headers.iter().enumerate() {
            if !all.contains(&name.as_str()) && !name.starts_with("custom.") {
                bail!(
                    "{label}:1:{}: unknown column {name:?} (known: {}, custom.<name>)",
                    i + 1,
                    all.join(", ")
                );
            }
        }
        for r in required {
            if !headers.iter().any(|n| n == r) {
                bail!("{label}:1:1: the required column {r:?} is missing");
            }
        }
        let mut rows = Vec::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                anyhow!("{label}:{line}:1: {e}")
            })?;
            rows.push((rec.position().map_or(0, |p| p.line()), rec));
        }
        Ok(Table {
            label,
            headers,
            rows,
        })
    }

    /// The cells of one row: where each is (for messages) and its trimmed text.
    fn cells<'r>(
        &'r self,
        line: u64,
        rec: &'r csv::StringRecord,
    ) -> impl Iterator<Item = (Cell<'r>, &'r str)> {
        rec.iter().enumerate().map(move |(col, v)| {
            (
                Cell {
                    label: self.label,
                    line,
                    col,
                    name: &self.headers[col],
                },
                v.trim(),
            )
        })
    }
}

/// Reads `2026-11-20T12:00:00Z` (any RFC 3339 offset), `2026-11-20 12:00:00` (UTC) or
/// `2026-11-20` (midnight UTC): the shapes CRM exports and spreadsheets write.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(format!(
        "{s:?} is not a time (2026-11-20T12:00:00Z, 2026-11-20 12:00:00 or 2026-11-20)"
    ))
}

fn parse_num(s: &str) -> Result<f64, String> {
    let t: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .collect();
    t.replace(',', ".")
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("{s:?} is not a number"))
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn list(s: &str) -> Vec<String> {
    s.split([';', ','])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// The lead CSV: one row per closed lead.
pub fn read_csv(text: &str, label: &str) -> anyhow::Result<Vec<ClosedLead>> {
    let table = Table::read(
        text,
        label,
        &[OUTCOME_COLUMNS, FIELD_NAMES],
        &["id", "created_at", "closed_at", "outcome"],
    )?;
    let mut out = Vec::new();
    for (line, rec) in &table.rows {
        let line = *line;
        let mut lead = Lead::default();
        let (mut created, mut closed, mut outcome) = (None, None, None);
        let mut c = ClosedLead {
            lead: Lead::default(),
            activities: Vec::new(),
            created_at: DateTime::<Utc>::MIN_UTC,
            closed_at: DateTime::<Utc>::MIN_UTC,
            outcome: Outcome::Lost,
            amount: None,
            rep_id: None,
            loss_reason: None,
            stage: None,
            fit_history: None,
        };
        for (cell, v) in table.cells(line, rec) {
            let num = |v: &str| -> anyhow::Result<Option<f64>> {
                if v.is_empty() {
                    Ok(None)
                } else {
                    parse_num(v).map(Some).map_err(|m| cell.err(m))
                }
            };
            match cell.name {
                "id" => lead.id = v.to_string(),
                "created_at" => created = Some(parse_time(v).map_err(|m| cell.err(m))?),
                "closed_at" => closed = Some(parse_time(v).map_err(|m| cell.err(m))?),
                "outcome" => {
                    outcome = Some(Outcome::parse(v).ok_or_else(|| {
                        cell.err(format!("{v:?} is not an outcome (won or lost)"))
                    })?)
                }
                // The deal's amount and stage are both the outcome's and the lead's
                // (rules may test `amount`, `pipeline` and `stage`).
                "amount" => {
                    c.amount = num(v)?;
                    lead.amount = c.amount;
                }
                "rep_id" => c.rep_id = opt(v),
                "loss_reason" => c.loss_reason = opt(v),
                "stage" => {
                    c.stage = opt(v);
                    lead.stage = c.stage.clone();
                }
                "pipeline" => lead.pipeline = opt(v),
                "name" => lead.name = opt(v),
                "position" => lead.position = opt(v),
                "email" => lead.emails = list(v),
                "phone" => lead.phones = list(v),
                "company" => lead.company = opt(v),
                "industry" => lead.industry = opt(v),
                "revenue" => lead.revenue = num(v)?,
                "employees" => lead.employees = num(v)?,
                "region" => lead.region = opt(v),
                "source" => lead.source = opt(v),
                "status" => lead.status = opt(v),
                "responsible_id" => lead.responsible_id = opt(v),
                custom => {
                    if let (Some(key), Some(v)) = (custom.strip_prefix("custom."), opt(v)) {
                        lead.custom.insert(key.to_string(), v);
                    }
                }
            }
        }
        let missing = |n: &str| anyhow!("{label}:{line}:1: {n} is empty");
        if lead.id.is_empty() {
            return Err(missing("id"));
        }
        c.created_at = created.ok_or_else(|| missing("created_at"))?;
        c.closed_at = closed.ok_or_else(|| missing("closed_at"))?;
        c.outcome = outcome.ok_or_else(|| missing("outcome"))?;
        lead.created_at = Some(c.created_at);
        c.lead = lead;
        check(&c).map_err(|m| anyhow!("{label}:{line}:1: {m}"))?;
        out.push(c);
    }
    Ok(out)
}

/// The activities CSV: one row per activity, attached to the lead named by `lead_id`.
pub fn attach_activities(leads: &mut [ClosedLead], text: &str, label: &str) -> anyhow::Result<()> {
    let index: HashMap<String, usize> = leads
        .iter()
        .enumerate()
        .map(|(i, c)| (c.lead.id.clone(), i))
        .collect();
    let table = Table::read(text, label, &[ACTIVITY_COLUMNS], &["lead_id", "kind", "at"])?;
    for (line, rec) in &table.rows {
        let line = *line;
        let mut lead_at = None;
        let mut a = Activity {
            id: String::new(),
            kind: ActivityKind::Comment,
            direction: None,
            subject: None,
            url: None,
            at: DateTime::<Utc>::MIN_UTC,
            contact_id: None,
            mapped_by: None,
        };
        let (mut kind, mut at) = (None, None);
        for (cell, v) in table.cells(line, rec) {
            match cell.name {
                "lead_id" => {
                    lead_at = Some(
                        *index
                            .get(v)
                            .ok_or_else(|| cell.err(format!("no lead {v:?} in the leads file")))?,
                    )
                }
                "kind" if v.is_empty() => return Err(cell.err("kind is empty")),
                "kind" => kind = Some(ActivityKind::from_name(v)),
                "at" => at = Some(parse_time(v).map_err(|m| cell.err(m))?),
                "direction" => {
                    a.direction = match v.to_ascii_lowercase().as_str() {
                        "" => None,
                        "incoming" | "in" => Some(Direction::Incoming),
                        "outgoing" | "out" => Some(Direction::Outgoing),
                        _ => return Err(cell.err(format!("{v:?} is not incoming or outgoing"))),
                    }
                }
                "subject" => a.subject = opt(v),
                "url" => a.url = opt(v),
                "id" => a.id = v.to_string(),
                _ => a.contact_id = opt(v),
            }
        }
        let missing = |n: &str| anyhow!("{label}:{line}:1: {n} is empty");
        let i = lead_at.ok_or_else(|| missing("lead_id"))?;
        a.kind = kind.ok_or_else(|| missing("kind"))?;
        a.at = at.ok_or_else(|| missing("at"))?;
        leads[i].activities.push(a);
    }
    for c in leads.iter_mut() {
        c.activities.sort_by_key(|a| a.at);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_and_activities_round_trip() {
        let leads =
            "id,created_at,closed_at,outcome,amount,position,employees,email,custom.budget\n\
                     7,2026-01-10,2026-02-01 10:00:00,won,\"120 000\",CEO,240,a@b.ru;c@d.ru,yes\n\
                     8,2026-01-11T09:00:00Z,2026-01-20,LOST,,,,,\n";
        let mut v = read_csv(leads, "l.csv").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].outcome, Outcome::Won);
        assert_eq!(v[0].amount, Some(120_000.0));
        assert_eq!(v[0].lead.emails, vec!["a@b.ru", "c@d.ru"]);
        assert_eq!(v[0].lead.custom["budget"], "yes");
        assert_eq!(v[1].outcome, Outcome::Lost);
        let acts = "lead_id,kind,at,direction,url\n\
                    7,call,2026-01-12 10:00:00,incoming,\n\
                    7,page_view,2026-01-11 10:00:00,,https://x/pricing\n";
        attach_activities(&mut v, acts, "a.csv").unwrap();
        assert_eq!(v[0].activities.len(), 2);
        assert!(
            v[0].activities[0].at < v[0].activities[1].at,
            "sorted by time"
        );
    }

    #[test]
    fn bad_cells_name_file_line_and_column() {
        let leads = "id,created_at,closed_at,outcome\n1,2026-01-10,2026-02-01,won\n2,2026-01-10,soon,lost\n";
        let e = read_csv(leads, "l.csv").unwrap_err().to_string();
        assert!(
            e.starts_with("l.csv:3:3 (closed_at): \"soon\" is not a time"),
            "{e}"
        );
        let e = read_csv("id,created,closed_at,outcome\n", "l.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("l.csv:1:2: unknown column \"created\""), "{e}");
        let e = read_csv(
            "id,created_at,closed_at,outcome\n1,2026-01-10,2026-02-01,maybe\n",
            "l.csv",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("l.csv:2:4 (outcome)"), "{e}");
        let mut v = read_csv(
            "id,created_at,closed_at,outcome\n1,2026-01-10,2026-02-01,won\n",
            "l.csv",
        )
        .unwrap();
        let e = attach_activities(&mut v, "lead_id,kind,at\n9,call,2026-01-11\n", "a.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.csv:2:1 (lead_id): no lead \"9\""), "{e}");
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let good = r#"{"lead":{"id":"1"},"created_at":"2026-01-01T00:00:00Z","closed_at":"2026-01-05T00:00:00Z","outcome":"won"}"#;
        let bad = r#"{"lead":{"id":"2"},"created_at":"2026-01-01T00:00:00Z","closed_at":"2026-01-05T00:00:00Z","outcome":"maybe"}"#;
        let text = format!("{good}\n\n{bad}\n");
        let e = read_jsonl(&text, "h.jsonl").unwrap_err().to_string();
        assert!(e.starts_with("h.jsonl:3:"), "{e}");
        assert_eq!(read_jsonl(good, "h.jsonl").unwrap().len(), 1);
        let backwards = good.replace("2026-01-05", "2025-12-01");
        let e = read_jsonl(&backwards, "h.jsonl").unwrap_err().to_string();
        assert!(e.contains("h.jsonl:1:1: closed_at"), "{e}");
    }
}
