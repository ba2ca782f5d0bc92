//! Purchase-month reminders: a task for the responsible rep `days_before` the purchase
//! a lead's field names (a month, or the date of the next purchase), once per cycle.
//!
//! The reminder rides on the decay timers: a lead's timer is the earlier of its next
//! score change and its next reminder, so a due reminder brings the lead into a worker
//! turn (scored from its stored inputs, no CRM read), where [`Pipeline::send_reminders`]
//! creates the task with the call-now guarantees: the intent and its marker are flushed
//! before the CRM call, and a crash in between is resolved by finding the task by its
//! marker. A failed call sets the timer a minute ahead: nothing is dropped.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};
use tracing::{info, warn};

use super::{Pipeline, PortalRuntime};
use crate::config::reminder::Reminder;
use crate::crm::TaskRequest;
use crate::lead::{FieldValue, Lead};
use crate::store::ReminderState;

/// When a customer buys, as its field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purchase {
    /// Every year in this month (1–12).
    Month(u32),
    /// On this date (every year when the reminder is yearly).
    Date(NaiveDate),
}

/// A reminder to send: at `at`, for the purchase on `purchase` (the cycle's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub at: DateTime<Utc>,
    pub purchase: NaiveDate,
    /// The lead's stored reminder state when this was worked out, so sending it needs
    /// no second read (`None`: never reminded).
    pub state: Option<ReminderState>,
}

impl Due {
    /// The cycle's key in the store: one task per purchase date.
    pub fn cycle(&self) -> String {
        self.purchase.format("%Y-%m-%d").to_string()
    }
}

/// Month names as portals write them, matched whole: English names, three-letter
/// forms and the Russian short forms (so "mar" never reads as a stem of May).
const MONTH_WORDS: [(&str, u32); 36] = [
    ("jan", 1),
    ("january", 1),
    ("янв", 1),
    ("feb", 2),
    ("february", 2),
    ("фев", 2),
    ("mar", 3),
    ("march", 3),
    ("мар", 3),
    ("apr", 4),
    ("april", 4),
    ("апр", 4),
    ("may", 5),
    ("май", 5),
    ("мая", 5),
    ("мае", 5),
    ("jun", 6),
    ("june", 6),
    ("jul", 7),
    ("july", 7),
    ("aug", 8),
    ("august", 8),
    ("авг", 8),
    ("sep", 9),
    ("september", 9),
    ("сен", 9),
    ("oct", 10),
    ("october", 10),
    ("окт", 10),
    ("nov", 11),
    ("november", 11),
    ("ноя", 11),
    ("dec", 12),
    ("december", 12),
    ("дек", 12),
    ("сент", 9),
];

/// Russian month stems, matched as prefixes ("июнь", "июня", "в июне"): every case of
/// the name starts with its stem. May has none safe to prefix-match ("ма").
const MONTH_STEMS: [(&str, u32); 11] = [
    ("январ", 1),
    ("феврал", 2),
    ("март", 3),
    ("апрел", 4),
    ("июн", 6),
    ("июл", 7),
    ("август", 8),
    ("сентябр", 9),
    ("октябр", 10),
    ("ноябр", 11),
    ("декабр", 12),
];

/// The month a word names, if any.
fn month_named(word: &str) -> Option<u32> {
    MONTH_WORDS
        .iter()
        .find(|(w, _)| *w == word)
        .or_else(|| MONTH_STEMS.iter().find(|(stem, _)| word.starts_with(stem)))
        .map(|(_, m)| *m)
}

/// Read a purchase month or date the way portals hold it: `6`, `06`, `июнь`, `June`,
/// `2027-06-15`, `2027-06-15T03:00:00+03:00` (Bitrix24), `15.06.2027`, or a Unix
/// timestamp in seconds (amoCRM date fields). `None`: not a month or a date.
pub fn parse_purchase(raw: &str) -> Option<Purchase> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = s.parse().ok()?;
        return match n {
            1..=12 => Some(Purchase::Month(n as u32)),
            // Seconds since the epoch: 2001 onwards.
            1_000_000_000.. => {
                DateTime::from_timestamp(n, 0).map(|d| Purchase::Date(d.date_naive()))
            }
            _ => None,
        };
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(Purchase::Date(d.date_naive()));
    }
    for fmt in [
        "%Y-%m-%d",
        "%d.%m.%Y",
        "%Y-%m-%d %H:%M:%S",
        "%d.%m.%Y %H:%M:%S",
    ] {
        if let Ok(d) = NaiveDate::parse_from_str(s, fmt) {
            return Some(Purchase::Date(d));
        }
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Purchase::Date(d.date()));
        }
    }
    month_named(&s.to_lowercase()).map(Purchase::Month)
}

/// The same month and day in `year` (29 February becomes the 28th in other years).
fn in_year(d: NaiveDate, year: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, d.month(), d.day())
        .or_else(|| NaiveDate::from_ymd_opt(year, d.month(), 28))
        .unwrap_or(d)
}

/// The next reminder for a lead, given the cycle already reminded of (`done`). A
/// purchase counts until its day (a month: its last day) is over; its reminder is due
/// `days_before` earlier at the start of the portal's day, and if that moment has
/// passed while the purchase is still ahead, at once.
pub fn next_due(
    cfg: &Reminder,
    lead: &Lead,
    done: Option<&str>,
    now: DateTime<Utc>,
    offset: FixedOffset,
) -> Option<Due> {
    let raw = lead.values(&cfg.field).into_iter().find_map(|v| match v {
        FieldValue::Text(t) => Some(t.to_string()),
        FieldValue::Number(n) if n.fract() == 0.0 => Some(format!("{n:.0}")),
        FieldValue::Number(_) => None,
    })?;
    let purchase = parse_purchase(&raw)?;
    let today = now.with_timezone(&offset).date_naive();
    let candidates: Vec<(NaiveDate, NaiveDate)> = match purchase {
        // (first day, last day) of the purchase in each year around today.
        Purchase::Month(m) => (today.year() - 1..=today.year() + 2)
            .filter_map(|y| {
                let first = NaiveDate::from_ymd_opt(y, m, 1)?;
                let next = if m == 12 {
                    NaiveDate::from_ymd_opt(y + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(y, m + 1, 1)?
                };
                Some((first, next.pred_opt()?))
            })
            .collect(),
        Purchase::Date(d) if cfg.yearly => (today.year() - 1..=today.year() + 2)
            .map(|y| (in_year(d, y), in_year(d, y)))
            .collect(),
        Purchase::Date(d) => vec![(d, d)],
    };
    let (first, _) = candidates
        .into_iter()
        .filter(|(first, last)| {
            *last >= today && done != Some(&first.format("%Y-%m-%d").to_string())
        })
        .min_by_key(|(first, _)| *first)?;
    let remind_on = first - chrono::Duration::days(i64::from(cfg.days_before));
    let at = offset
        .from_local_datetime(&remind_on.and_hms_opt(0, 0, 0)?)
        .single()?
        .with_timezone(&Utc);
    Some(Due {
        at,
        purchase: first,
        state: None,
    })
}

fn fill(template: &str, lead: &Lead, due: &Due) -> String {
    template
        .replace("{lead}", &lead.id)
        .replace("{name}", lead.name.as_deref().unwrap_or(&lead.id))
        .replace("{date}", &due.purchase.format("%d.%m.%Y").to_string())
}

impl Pipeline {
    /// The lead's next reminder under the portal's `[portal.reminder]` (`None`: none set
    /// up, no usable field value, or every cycle in reach already reminded of).
    pub(super) fn reminder_due(
        &self,
        rt: &PortalRuntime,
        lead: &Lead,
        offset: FixedOffset,
        now: DateTime<Utc>,
    ) -> Option<Due> {
        let cfg = rt.portal.reminder.as_ref()?;
        // Most leads have no usable purchase field: they cost no store read.
        let first = next_due(cfg, lead, None, now, offset)?;
        let state = match self.store.reminder(&rt.portal.id, &lead.id) {
            Ok(s) => s,
            Err(e) => {
                warn!(portal = %rt.portal.id, lead = %lead.id, error = %e, "cannot read a reminder state");
                None
            }
        };
        let done = state
            .as_ref()
            .filter(|s| s.task.is_some())
            .map(|s| s.cycle.as_str());
        let due = if done.is_some_and(|d| d == first.cycle()) {
            next_due(cfg, lead, done, now, offset)?
        } else {
            first
        };
        Some(Due { state, ..due })
    }

    /// Create the due reminders' tasks (one per lead and cycle, ever), then set each
    /// lead's timer to what comes next: `change` (its next score change), the next
    /// cycle's reminder, or a retry in a minute when the CRM call failed.
    pub(super) async fn send_reminders(
        &self,
        rt: &PortalRuntime,
        due: Vec<(Lead, Due, Option<DateTime<Utc>>)>,
        offset: FixedOffset,
    ) {
        if due.is_empty() {
            return;
        }
        let Some(cfg) = rt.portal.reminder.clone() else {
            return;
        };
        let portal = &rt.portal;
        let now = self.now();
        let mut requests = Vec::new();
        let mut sent = Vec::new();
        let mut settled = Vec::new();
        for (lead, d, change) in due {
            let cycle = d.cycle();
            let marker = match d.state.clone().filter(|p| p.cycle == cycle) {
                Some(p) if p.task.is_some() => {
                    settled.push((lead, change, true));
                    continue;
                }
                // Intended before a crash: the task may exist; look before making one.
                Some(p) => match rt.crm.find_task(&portal.task, &lead.id, &p.marker).await {
                    Ok(Some(task)) => {
                        let ok =
                            self.record_reminder(&portal.id, &lead.id, &cycle, &p.marker, task);
                        settled.push((lead, change, ok));
                        continue;
                    }
                    Ok(None) => p.marker,
                    Err(e) => {
                        warn!(portal = %portal.id, lead = %lead.id, error = %e, "cannot look up a reminder task; retrying");
                        settled.push((lead, change, false));
                        continue;
                    }
                },
                None => format!("leadscore-reminder:{}:{}:{cycle}", portal.id, lead.id),
            };
            let intent = ReminderState {
                cycle: cycle.clone(),
                marker: marker.clone(),
                task: None,
            };
            if let Err(e) = self.store.set_reminder(&portal.id, &lead.id, &intent) {
                warn!(portal = %portal.id, lead = %lead.id, error = %e, "cannot record a reminder intent");
                settled.push((lead, change, false));
                continue;
            }
            requests.push(TaskRequest {
                lead_id: lead.id.clone(),
                responsible_id: lead
                    .responsible_id
                    .clone()
                    .or_else(|| portal.task.fallback_responsible_id.clone()),
                title: fill(&cfg.title, &lead, &d),
                text: fill(&cfg.text, &lead, &d),
                // Due on the purchase's first day: the call is before it.
                deadline: offset
                    .from_local_datetime(&d.purchase.and_hms_opt(9, 0, 0).unwrap_or_default())
                    .single()
                    .map_or(now, |t| t.with_timezone(&Utc))
                    .max(now + chrono::Duration::hours(1)),
                marker: marker.clone(),
            });
            sent.push((lead, cycle, marker, change));
        }
        if !requests.is_empty() {
            if let Err(e) = self.store.flush().await {
                warn!(portal = %portal.id, error = %e, "cannot flush reminder intents; retrying");
                settled.extend(
                    sent.drain(..)
                        .map(|(lead, _, _, change)| (lead, change, false)),
                );
                requests.clear();
            }
        }
        let created = if requests.is_empty() {
            Vec::new()
        } else {
            rt.crm.create_tasks(&portal.task, &requests).await
        };
        for ((lead, cycle, marker, change), res) in sent.into_iter().zip(created) {
            match res {
                Ok(task) => {
                    info!(portal = %portal.id, lead = %lead.id, task = %task.id, purchase = %cycle, "purchase reminder task created");
                    let ok = self.record_reminder(&portal.id, &lead.id, &cycle, &marker, task);
                    settled.push((lead, change, ok));
                }
                Err(e) => {
                    warn!(portal = %portal.id, lead = %lead.id, error = %e, "reminder task failed; retrying in a minute");
                    settled.push((lead, change, false));
                }
            }
        }
        let mut timers = Vec::with_capacity(settled.len());
        for (lead, change, ok) in &settled {
            let next = if *ok {
                self.reminder_due(rt, lead, offset, now)
                    .map(|d| d.at.max(now))
            } else {
                Some(now + chrono::Duration::seconds(60))
            };
            let at = match (change, next) {
                (Some(c), Some(n)) => Some((*c).min(n)),
                (c, n) => c.or(n),
            };
            timers.push((lead.id.as_str(), at));
        }
        if let Err(e) = self.store.set_timers(&portal.id, timers) {
            warn!(portal = %portal.id, error = %e, "cannot set reminder timers");
        }
        if let Err(e) = self.store.flush().await {
            warn!(portal = %portal.id, error = %e, "cannot flush reminder records");
        }
    }

    /// Record a reminder's task (flushed with the turn's records); `false` on failure.
    fn record_reminder(
        &self,
        portal: &str,
        lead: &str,
        cycle: &str,
        marker: &str,
        task: crate::crm::TaskRef,
    ) -> bool {
        let state = ReminderState {
            cycle: cycle.to_string(),
            marker: marker.to_string(),
            task: Some(task),
        };
        match self.store.set_reminder(portal, lead, &state) {
            Ok(()) => true,
            Err(e) => {
                warn!(portal, lead, error = %e, "cannot record a reminder task");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(days: u32, yearly: bool) -> Reminder {
        Reminder {
            field: "custom.purchase".into(),
            days_before: days,
            yearly,
            title: "t".into(),
            text: "x".into(),
        }
    }

    fn lead(v: &str) -> Lead {
        let mut l = Lead {
            id: "7".into(),
            ..Lead::default()
        };
        l.custom.insert("purchase".into(), v.into());
        l
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    #[test]
    fn months_and_dates_are_read_in_the_shapes_portals_use() {
        assert_eq!(parse_purchase("6"), Some(Purchase::Month(6)));
        assert_eq!(parse_purchase("06"), Some(Purchase::Month(6)));
        assert_eq!(parse_purchase("Июнь"), Some(Purchase::Month(6)));
        assert_eq!(parse_purchase("мая"), Some(Purchase::Month(5)));
        assert_eq!(parse_purchase("март"), Some(Purchase::Month(3)));
        assert_eq!(parse_purchase("Mar"), Some(Purchase::Month(3)));
        assert_eq!(parse_purchase("December"), Some(Purchase::Month(12)));
        let d = |y, m, day| Some(Purchase::Date(NaiveDate::from_ymd_opt(y, m, day).unwrap()));
        assert_eq!(parse_purchase("2027-06-15"), d(2027, 6, 15));
        assert_eq!(parse_purchase("2027-06-15T03:00:00+03:00"), d(2027, 6, 15));
        assert_eq!(parse_purchase("15.06.2027"), d(2027, 6, 15));
        assert_eq!(parse_purchase("1812844800"), d(2027, 6, 13));
        assert_eq!(parse_purchase("13"), None);
        assert_eq!(parse_purchase("скоро"), None);
        assert_eq!(parse_purchase(""), None);
    }

    #[test]
    fn a_june_buyer_is_called_thirty_days_before_june() {
        let now = at("2026-12-02T10:00:00Z");
        let due = next_due(&cfg(30, true), &lead("июнь"), None, now, utc()).unwrap();
        assert_eq!(due.cycle(), "2027-06-01");
        assert_eq!(due.at, at("2027-05-02T00:00:00Z"));
        // Once that cycle is reminded of, the next is a year later.
        let next = next_due(&cfg(30, true), &lead("6"), Some("2027-06-01"), now, utc()).unwrap();
        assert_eq!(next.cycle(), "2028-06-01");
    }

    #[test]
    fn a_purchase_month_under_way_is_still_ahead_and_due_at_once() {
        // Mid-December, a December buyer: this year's cycle, its reminder already past.
        let now = at("2026-12-15T10:00:00Z");
        let due = next_due(&cfg(30, true), &lead("декабрь"), None, now, utc()).unwrap();
        assert_eq!(due.cycle(), "2026-12-01");
        assert!(due.at <= now);
    }

    #[test]
    fn dates_repeat_yearly_only_when_asked() {
        let now = at("2026-12-02T10:00:00Z");
        let yearly = next_due(&cfg(10, true), &lead("2026-03-20"), None, now, utc()).unwrap();
        assert_eq!(yearly.cycle(), "2027-03-20");
        assert_eq!(yearly.at, at("2027-03-10T00:00:00Z"));
        assert_eq!(
            next_due(&cfg(10, false), &lead("2026-03-20"), None, now, utc()),
            None
        );
        let once = next_due(&cfg(10, false), &lead("20.03.2027"), None, now, utc()).unwrap();
        assert_eq!(once.cycle(), "2027-03-20");
        assert_eq!(
            next_due(
                &cfg(10, false),
                &lead("20.03.2027"),
                Some("2027-03-20"),
                now,
                utc()
            ),
            None
        );
    }

    #[test]
    fn the_portal_day_starts_in_its_time_zone() {
        let msk = FixedOffset::east_opt(3 * 3600).unwrap();
        let now = at("2026-12-02T10:00:00Z");
        let due = next_due(&cfg(30, true), &lead("6"), None, now, msk).unwrap();
        assert_eq!(due.at, at("2027-05-01T21:00:00Z"));
    }

    #[test]
    fn a_leap_day_falls_on_the_28th_in_other_years() {
        let now = at("2026-12-02T10:00:00Z");
        let due = next_due(&cfg(1, true), &lead("2024-02-29"), None, now, utc()).unwrap();
        assert_eq!(due.cycle(), "2027-02-28");
    }

    #[test]
    fn no_field_value_means_no_reminder() {
        let now = at("2026-12-02T10:00:00Z");
        let l = Lead {
            id: "1".into(),
            ..Lead::default()
        };
        assert_eq!(next_due(&cfg(30, true), &l, None, now, utc()), None);
    }
}
