//! The high-intent rule: one event of a configured set in a window scores once.
//!
//! An `activity` rule pays per occurrence; a demo request asked twice is not twice the
//! intent, so this rule pays its points once and names the newest event on the card.

use chrono::{DateTime, TimeDelta, Utc};

use super::compile::{compile_regex, window_days, Errors};
use super::eval::text_matches;
use super::spec::HighIntentSpec;
use super::text::Pattern;
use crate::lead::{Activity, ActivityKind, Direction};

/// A compiled high-intent rule (see [`HighIntentSpec`]).
#[derive(Debug)]
pub(crate) struct IntentRule {
    pub(crate) kinds: Vec<ActivityKind>,
    pub(crate) direction: Option<Direction>,
    pub(crate) subject: Option<Pattern>,
    pub(crate) url: Option<Pattern>,
    /// An event counts while `now - at < window`.
    pub(crate) window: TimeDelta,
}

impl IntentRule {
    /// Does this activity count, regardless of its time?
    pub(crate) fn matches(&self, a: &Activity) -> bool {
        self.kinds.contains(&a.kind)
            && self.direction.is_none_or(|d| a.direction == Some(d))
            && text_matches(self.subject.as_ref(), self.url.as_ref(), a)
    }

    /// The newest counted event at `now` (future-dated ones do not count yet).
    pub(crate) fn newest<'a>(
        &self,
        acts: &'a [Activity],
        now: DateTime<Utc>,
    ) -> Option<&'a Activity> {
        acts.iter()
            .filter(|a| a.at <= now && now - a.at < self.window && self.matches(a))
            .max_by_key(|a| a.at)
    }

    /// Every instant at which an event starts or stops counting.
    pub(crate) fn boundaries(&self, acts: &[Activity], offer: &mut impl FnMut(DateTime<Utc>)) {
        for a in acts.iter().filter(|a| self.matches(a)) {
            offer(a.at);
            if let Some(exit) = a.at.checked_add_signed(self.window) {
                offer(exit);
            }
        }
    }
}

/// Check and compile a `high_intent` table at key path `p`.
pub(crate) fn compile_intent(s: &HighIntentSpec, p: &str, errs: &mut Errors) -> Option<IntentRule> {
    let mut ok = true;
    if s.kinds.is_empty() {
        errs.push(
            format!("{p}.kinds"),
            "high_intent needs at least one activity kind",
        );
        ok = false;
    }
    if let Some(i) = s.kinds.iter().position(|k| k.trim().is_empty()) {
        errs.push(format!("{p}.kinds[{i}]"), "activity kind must not be empty");
        ok = false;
    }
    let mut regex = |src: &Option<String>, key: &str| match src {
        Some(src) => {
            let re = compile_regex(src, &format!("{p}.{key}"), errs);
            ok &= re.is_some();
            re
        }
        None => None,
    };
    let subject = regex(&s.subject, "subject");
    let url = regex(&s.url, "url");
    let (window, _) = window_days(s.window_days, p, errs)?;
    ok.then(|| IntentRule {
        kinds: s
            .kinds
            .iter()
            .map(|k| ActivityKind::from_name(k.trim()))
            .collect(),
        direction: s.direction,
        subject,
        url,
        window,
    })
}
