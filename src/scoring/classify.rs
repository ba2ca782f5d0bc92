//! Classifying each activity once against every activity rule's subject and URL
//! patterns, instead of once per rule.
//!
//! Several rules often test the same activity (each page view against the pricing,
//! blog and careers URLs). The model gathers the distinct patterns of its activity rules
//! into two [`PatternSet`]s; during one evaluation an activity's texts are matched
//! against all of them in one pass the first time any rule asks, and the answer (a bit
//! per pattern) is kept on the stack for the other rules.

use std::cell::Cell;

use super::compile::{ActRule, Body, Rule};
use super::eval::text_matches;
use super::text::{Pattern, PatternSet};
use crate::lead::Activity;

/// Patterns per field a set takes: subject bits are 0..31, URL bits 32..62.
const PER_FIELD: usize = 31;
/// Bit 63 of a mark: the activity has been classified.
const DONE: u64 = 1 << 63;
/// Activities whose marks are kept (by position in the caller's slice); later ones are
/// classified again for each rule that asks.
const CACHED: usize = 64;

/// A rule's patterns' bits in the [`Classifier`]; `None` when the rule has no such
/// pattern or the set was full (the rule then tests its own patterns).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TextIds {
    pub(crate) subject: Option<u8>,
    pub(crate) url: Option<u8>,
}

/// The distinct subject and URL patterns of a model's activity rules.
#[derive(Debug)]
pub(crate) struct Classifier {
    subjects: PatternSet,
    urls: PatternSet,
}

/// The index of `p` among `seen` (same regex source), adding it when there is room.
fn slot(seen: &mut Vec<Pattern>, p: &Option<Pattern>) -> Option<u8> {
    let p = p.as_ref()?;
    let i = match seen.iter().position(|q| q.as_str() == p.as_str()) {
        Some(i) => i,
        None if seen.len() < PER_FIELD => {
            seen.push(p.clone());
            seen.len() - 1
        }
        None => return None,
    };
    u8::try_from(i).ok()
}

impl Classifier {
    /// Gather the activity rules' patterns and give each rule its bits.
    pub(crate) fn new(rules: &mut [Rule]) -> Classifier {
        let (mut subjects, mut urls) = (Vec::new(), Vec::new());
        for rule in rules.iter_mut() {
            if let Body::Activity(a) = &mut rule.body {
                a.ids = TextIds {
                    subject: slot(&mut subjects, &a.subject),
                    url: slot(&mut urls, &a.url),
                };
            }
        }
        Classifier {
            subjects: PatternSet::new(subjects),
            urls: PatternSet::new(urls),
        }
    }

    /// Every pattern's answer for `a` (bits as in [`TextIds`]), with [`DONE`] set.
    fn classify(&self, a: &Activity) -> u64 {
        let mut m = DONE;
        if let Some(s) = a.subject.as_deref() {
            m |= self.subjects.matches(s);
        }
        if let Some(u) = a.url.as_deref() {
            m |= self.urls.matches(u) << 32;
        }
        m
    }
}

/// One evaluation's classified activities.
pub(crate) struct Marks<'a> {
    classifier: &'a Classifier,
    cells: [Cell<u64>; CACHED],
}

impl<'a> Marks<'a> {
    /// Nothing classified yet.
    pub(crate) fn new(classifier: &'a Classifier) -> Marks<'a> {
        Marks {
            classifier,
            cells: [const { Cell::new(0) }; CACHED],
        }
    }

    fn get(&self, i: usize, a: &Activity) -> u64 {
        let Some(cell) = self.cells.get(i) else {
            return self.classifier.classify(a);
        };
        let m = cell.get();
        if m & DONE != 0 {
            return m;
        }
        let m = self.classifier.classify(a);
        cell.set(m);
        m
    }

    /// Whether activity `a`, at position `i` of the evaluated slice, passes `rule`'s
    /// subject and URL patterns (the same answer as `ActRule::matches_text`).
    pub(crate) fn text_matches(&self, rule: &ActRule, i: usize, a: &Activity) -> bool {
        if rule.subject.is_none() && rule.url.is_none() {
            return true;
        }
        let unset = |p: &Option<Pattern>, id: Option<u8>| p.is_some() && id.is_none();
        if unset(&rule.subject, rule.ids.subject) || unset(&rule.url, rule.ids.url) {
            return text_matches(rule.subject.as_ref(), rule.url.as_ref(), a);
        }
        let m = self.get(i, a);
        rule.ids.subject.is_none_or(|b| m & (1 << b) != 0)
            && rule.ids.url.is_none_or(|b| m & (1 << (32 + b)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::ActivityKind;
    use chrono::{DateTime, Utc};

    fn rule(subject: Option<&str>, url: Option<&str>) -> Rule {
        let pattern = |s: Option<&str>| s.map(|s| Pattern::new(s).unwrap());
        Rule {
            id: String::new(),
            label: String::new(),
            group: 0,
            points: 1,
            body: Body::Activity(ActRule {
                kind: ActivityKind::PageView,
                direction: None,
                subject: pattern(subject),
                url: pattern(url),
                window: None,
                max_count: None,
                half_life_days: None,
                ids: TextIds::default(),
                walk: None,
            }),
            timed: true,
            task: None,
        }
    }

    /// Every rule's answer through the marks equals its own patterns' answer, for
    /// literal and regex patterns, more patterns than a set takes and more activities
    /// than are cached, whichever rule asks first.
    #[test]
    fn marks_agree_with_each_rules_patterns() {
        let pats = [
            "(?i)/pricing|/prices|/цены|/%d1%86",
            "/blog",
            "(?i)/careers|/jobs",
            "^https://x\\.ru/$",
            "(?i)прайс|price",
            "Прайс",
            "(?i)k",
        ];
        let mut rules: Vec<Rule> = Vec::new();
        for (i, p) in pats.iter().enumerate() {
            rules.push(rule(None, Some(p)));
            rules.push(rule(Some(p), None));
            rules.push(rule(Some(p), Some(pats[(i + 1) % pats.len()])));
        }
        for n in 0..40 {
            rules.push(rule(None, Some(&format!("(?i)/p{n}"))));
        }
        rules.push(rule(None, None));
        let classifier = Classifier::new(&mut rules);
        let texts = [
            "https://x.ru/PRICING",
            "https://x.ru/Цены",
            "https://x.ru/%D1%86",
            "https://x.ru/blog/1",
            "https://x.ru/BLOG",
            "https://x.ru/",
            "https://x.ru/p7",
            "https://x.ru/P39/jobs",
            "Прайс-лист.pdf",
            "ПРАЙС",
            "\u{212A}elvin",
            "",
        ];
        let at: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
        let acts: Vec<Activity> = (0..70)
            .map(|i| Activity {
                id: i.to_string(),
                kind: ActivityKind::PageView,
                direction: None,
                subject: (i % 3 != 0).then(|| texts[i % texts.len()].to_string()),
                url: (i % 4 != 1).then(|| texts[(i * 7) % texts.len()].to_string()),
                at,
                contact_id: None,
                mapped_by: None,
            })
            .collect();
        for reversed in [false, true] {
            let marks = Marks::new(&classifier);
            let mut order: Vec<&Rule> = rules.iter().collect();
            if reversed {
                order.reverse();
            }
            for r in order {
                let Body::Activity(ar) = &r.body else {
                    unreachable!()
                };
                for (i, a) in acts.iter().enumerate() {
                    let want = text_matches(ar.subject.as_ref(), ar.url.as_ref(), a);
                    assert_eq!(marks.text_matches(ar, i, a), want, "{ar:?} on {a:?}");
                }
            }
        }
        let set_full = rules.iter().any(
            |r| matches!(&r.body, Body::Activity(a) if a.url.is_some() && a.ids.url.is_none()),
        );
        assert!(set_full, "the test covers rules beyond a full set");
    }
}
