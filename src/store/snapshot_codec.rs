//! The compact binary record of an [`InputSnapshot`].
//!
//! A decay pass decodes one snapshot per due lead and a dry-run rescore one per stored
//! lead, so the record is read far more often than written: JSON cost a quarter of a
//! decay pass (parsing RFC 3339 times and escaped text) and about three times the bytes
//! (sled keeps what it reads in memory). Records start with [`VERSION`]; a record that
//! starts with `{` is the JSON of earlier versions and is still read, so a store
//! written before stays readable and is rewritten in this format as leads are scored.
//!
//! Layout: strings are a varint length and UTF-8 bytes; an `Option` is a 0/1 byte and
//! the value; a list is a varint count and its items; times are zigzag varint seconds
//! and varint nanoseconds. Fields follow the struct order (destructured below, so a new
//! field does not compile until it is encoded).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{InputSnapshot, StoreError};
use crate::lead::{Activity, ActivityKind, Direction, Lead};

/// First byte of a binary snapshot record. Version 2 added the lead's deal fields
/// (`amount`, `pipeline`, `stage`) after `custom`; version 1 records are still read.
const VERSION: u8 = 2;

/// The first binary version (no deal fields): written before issue 18.
const VERSION_1: u8 = 1;

/// The record of a snapshot.
pub(super) fn encode(snap: &InputSnapshot) -> Vec<u8> {
    let InputSnapshot {
        lead,
        activities,
        activity_cursor,
        activities_read_at,
        full_read_at,
    } = snap;
    let mut w = Writer(Vec::with_capacity(256 + activities.len() * 96));
    w.0.push(VERSION);
    w.lead(lead);
    w.len(activities.len());
    for a in activities {
        w.activity(a);
    }
    w.opt_str(activity_cursor.as_deref());
    w.time(activities_read_at);
    w.time(full_read_at);
    w.0
}

/// A snapshot from its record, binary or the JSON of earlier versions.
pub(super) fn decode(bytes: &[u8]) -> Result<InputSnapshot, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        tree: "snapshot",
        source: <serde_json::Error as serde::de::Error>::custom(what),
    };
    match bytes.first() {
        Some(&v) if v == VERSION || v == VERSION_1 => {
            let mut r = Reader {
                b: bytes,
                at: 1,
                version: v,
            };
            let snap = r
                .snapshot()
                .ok_or_else(|| corrupt("truncated binary record"))?;
            if r.at != bytes.len() {
                return Err(corrupt("trailing bytes after the binary record"));
            }
            Ok(snap)
        }
        Some(b'{') => super::dec("snapshot", bytes),
        _ => Err(corrupt("unknown snapshot record version")),
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.0.push(1);
                self.str(s);
            }
            None => self.0.push(0),
        }
    }

    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            Some(v) => {
                self.0.push(1);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            None => self.0.push(0),
        }
    }

    fn time(&mut self, t: &DateTime<Utc>) {
        let s = t.timestamp();
        self.varint(((s << 1) ^ (s >> 63)) as u64);
        self.varint(u64::from(t.timestamp_subsec_nanos()));
    }

    fn opt_time(&mut self, t: Option<&DateTime<Utc>>) {
        match t {
            Some(t) => {
                self.0.push(1);
                self.time(t);
            }
            None => self.0.push(0),
        }
    }

    fn strs(&mut self, v: &[String]) {
        self.len(v.len());
        for s in v {
            self.str(s);
        }
    }

    fn lead(&mut self, lead: &Lead) {
        let Lead {
            id,
            name,
            position,
            emails,
            phones,
            company,
            industry,
            revenue,
            employees,
            region,
            source,
            status,
            responsible_id,
            created_at,
            updated_at,
            custom,
            amount,
            pipeline,
            stage,
        } = lead;
        self.str(id);
        self.opt_str(name.as_deref());
        self.opt_str(position.as_deref());
        self.strs(emails);
        self.strs(phones);
        self.opt_str(company.as_deref());
        self.opt_str(industry.as_deref());
        self.opt_f64(*revenue);
        self.opt_f64(*employees);
        for s in [region, source, status, responsible_id] {
            self.opt_str(s.as_deref());
        }
        self.opt_time(created_at.as_ref());
        self.opt_time(updated_at.as_ref());
        self.len(custom.len());
        for (k, v) in custom {
            self.str(k);
            self.str(v);
        }
        self.opt_f64(*amount);
        self.opt_str(pipeline.as_deref());
        self.opt_str(stage.as_deref());
    }

    fn activity(&mut self, a: &Activity) {
        let Activity {
            id,
            kind,
            direction,
            subject,
            url,
            at,
            contact_id,
            mapped_by,
        } = a;
        self.str(id);
        self.str(kind.as_str());
        self.0.push(match direction {
            None => 0,
            Some(Direction::Incoming) => 1,
            Some(Direction::Outgoing) => 2,
        });
        self.opt_str(subject.as_deref());
        self.opt_str(url.as_deref());
        self.time(at);
        self.opt_str(contact_id.as_deref());
        match mapped_by {
            Some(n) => {
                self.0.push(1);
                self.len(*n);
            }
            None => self.0.push(0),
        }
    }
}

/// Reads a record; `None` on any truncation or malformed value.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    /// The record's version byte (what [`Reader::lead`] expects to find).
    version: u8,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.varint()?).ok()?;
        // Every item takes at least one byte: a corrupt count cannot allocate wildly.
        (n <= self.b.len() - self.at).then_some(n)
    }

    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<String> {
        let n = self.len()?;
        let s = std::str::from_utf8(self.b.get(self.at..self.at + n)?).ok()?;
        self.at += n;
        Some(s.to_string())
    }

    fn opt_str(&mut self) -> Option<Option<String>> {
        Some(if self.flag()? {
            Some(self.str()?)
        } else {
            None
        })
    }

    fn opt_f64(&mut self) -> Option<Option<f64>> {
        if !self.flag()? {
            return Some(None);
        }
        let bytes = self.b.get(self.at..self.at + 8)?;
        self.at += 8;
        Some(Some(f64::from_le_bytes(bytes.try_into().ok()?)))
    }

    fn time(&mut self) -> Option<DateTime<Utc>> {
        let z = self.varint()?;
        let secs = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let nanos = u32::try_from(self.varint()?).ok()?;
        DateTime::from_timestamp(secs, nanos)
    }

    fn opt_time(&mut self) -> Option<Option<DateTime<Utc>>> {
        Some(if self.flag()? {
            Some(self.time()?)
        } else {
            None
        })
    }

    fn strs(&mut self) -> Option<Vec<String>> {
        let n = self.len()?;
        (0..n).map(|_| self.str()).collect()
    }

    fn map(&mut self) -> Option<BTreeMap<String, String>> {
        let n = self.len()?;
        (0..n).map(|_| Some((self.str()?, self.str()?))).collect()
    }

    /// Fields in the order [`Writer::lead`] wrote them (a struct expression evaluates
    /// its fields in the order written).
    fn lead(&mut self) -> Option<Lead> {
        let mut lead = Lead {
            id: self.str()?,
            name: self.opt_str()?,
            position: self.opt_str()?,
            emails: self.strs()?,
            phones: self.strs()?,
            company: self.opt_str()?,
            industry: self.opt_str()?,
            revenue: self.opt_f64()?,
            employees: self.opt_f64()?,
            region: self.opt_str()?,
            source: self.opt_str()?,
            status: self.opt_str()?,
            responsible_id: self.opt_str()?,
            created_at: self.opt_time()?,
            updated_at: self.opt_time()?,
            custom: self.map()?,
            ..Lead::default()
        };
        if self.version >= VERSION {
            lead.amount = self.opt_f64()?;
            lead.pipeline = self.opt_str()?;
            lead.stage = self.opt_str()?;
        }
        Some(lead)
    }

    fn activity(&mut self) -> Option<Activity> {
        let id = self.str()?;
        let kind = ActivityKind::from_name(&self.str()?);
        let direction = match self.byte()? {
            0 => None,
            1 => Some(Direction::Incoming),
            2 => Some(Direction::Outgoing),
            _ => return None,
        };
        Some(Activity {
            id,
            kind,
            direction,
            subject: self.opt_str()?,
            url: self.opt_str()?,
            at: self.time()?,
            contact_id: self.opt_str()?,
            mapped_by: if self.flag()? {
                Some(usize::try_from(self.varint()?).ok()?)
            } else {
                None
            },
        })
    }

    fn snapshot(&mut self) -> Option<InputSnapshot> {
        let lead = self.lead()?;
        let n = self.len()?;
        let activities = (0..n)
            .map(|_| self.activity())
            .collect::<Option<Vec<_>>>()?;
        Some(InputSnapshot {
            lead,
            activities,
            activity_cursor: self.opt_str()?,
            activities_read_at: self.time()?,
            full_read_at: self.time()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn full() -> InputSnapshot {
        InputSnapshot {
            lead: Lead {
                id: "42".into(),
                name: Some("Иван «Тест»".into()),
                position: Some("Генеральный директор".into()),
                emails: vec!["a@b.ru".into(), "c@d.ru".into()],
                phones: vec!["+7 900 000-00-00".into()],
                company: Some("ООО \"Ромашка\"".into()),
                industry: Some("Производство".into()),
                revenue: Some(8.5e8),
                employees: Some(120.0),
                region: Some("Москва".into()),
                source: Some("web".into()),
                status: Some("NEW".into()),
                responsible_id: Some("3".into()),
                created_at: Some(t("1969-12-31T23:59:58.5Z")),
                updated_at: Some(t("2026-11-28T10:00:00.123456789Z")),
                custom: [("utm".to_string(), "x".to_string())].into(),
                amount: Some(150_000.5),
                pipeline: Some("1".into()),
                stage: Some("C1:PREPARATION".into()),
            },
            activities: vec![
                Activity {
                    id: "1".into(),
                    kind: ActivityKind::DemoRequest,
                    direction: Some(Direction::Incoming),
                    subject: Some("[demo] Заявка".into()),
                    url: None,
                    at: t("2026-11-20T10:00:00Z"),
                    contact_id: Some("7".into()),
                    mapped_by: Some(2),
                },
                Activity {
                    id: String::new(),
                    kind: ActivityKind::Custom("webinar".into()),
                    direction: Some(Direction::Outgoing),
                    subject: None,
                    url: Some("https://x.ru/?a=1&b=2".into()),
                    at: t("2026-11-21T10:00:00Z"),
                    contact_id: None,
                    mapped_by: None,
                },
            ],
            activity_cursor: Some("cursor:99".into()),
            activities_read_at: t("2026-11-28T10:00:01Z"),
            full_read_at: t("2026-11-27T10:00:01Z"),
        }
    }

    #[test]
    fn every_field_survives_the_binary_record() {
        let snap = full();
        let bytes = encode(&snap);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode(&bytes).unwrap(), snap);
        let empty = InputSnapshot {
            lead: Lead::default(),
            activities: Vec::new(),
            activity_cursor: None,
            activities_read_at: t("2026-11-28T10:00:00Z"),
            full_read_at: t("2026-11-28T10:00:00Z"),
        };
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn json_records_of_earlier_versions_still_read() {
        let snap = full();
        let json = serde_json::to_vec(&snap).unwrap();
        assert_eq!(decode(&json).unwrap(), snap);
        assert!(encode(&snap).len() * 2 < json.len());
    }

    /// A version 1 record (written before the deal fields) reads with them unset.
    #[test]
    fn version_1_records_still_read() {
        let mut snap = full();
        snap.lead.amount = None;
        snap.lead.pipeline = None;
        snap.lead.stage = None;
        let mut bytes = encode(&snap);
        // A v1 record is the v2 one without the three trailing lead fields (three
        // absent-option bytes right after `custom`): rebuild it by hand.
        let mut w = Writer(vec![VERSION_1]);
        w.lead(&snap.lead);
        let lead_v2 = w.0.len();
        let lead_v1 = lead_v2 - 3;
        let mut v1 = bytes[..lead_v1].to_vec();
        v1[0] = VERSION_1;
        v1.extend_from_slice(&bytes[lead_v2..]);
        assert_eq!(decode(&v1).unwrap(), snap);
        bytes[0] = 9;
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let bytes = encode(&full());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        assert!(decode(&[9, 1, 2]).is_err());
    }
}
