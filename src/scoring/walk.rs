//! One walk over a lead's activities for every activity rule, instead of one per rule.
//!
//! An activity rule counts the activities of its kind newest first until its window or
//! its `max_count` ends the count. Walking the activities once per rule visits every
//! activity for every rule (160 visits for the example config's 8 rules and a lead with
//! 20 activities). The model instead indexes its activity rules by kind once
//! ([`KindIndex`]); one walk per evaluation offers each activity only to the rules of
//! its kind, each keeping its own tally and leaving the walk where its own walk would
//! have stopped. The tallies are the per-rule walk's (`eval::tally`) exactly: the same
//! activities in the same order, the same arithmetic.

use chrono::{DateTime, Utc};

use super::compile::{ActRule, Body, Rule};
use super::eval::{occurrence_points, ActTally, Order};
use crate::lead::ActivityKind;

/// Activity rules one walk keeps tallies for (bit `i` of a `u32`); a model's later
/// activity rules each walk on their own.
pub(crate) const WALKED: usize = 32;

/// Kind slot of a built-in kind no walked rule counts.
const UNUSED: u8 = u8::MAX;

/// The position of a built-in kind in [`KindIndex::builtin`] (and its bit in
/// `SpikeRule::builtin_kinds`); `None` for custom kinds.
#[inline]
pub(crate) fn builtin(k: &ActivityKind) -> Option<usize> {
    Some(match k {
        ActivityKind::Call => 0,
        ActivityKind::Email => 1,
        ActivityKind::EmailOpen => 2,
        ActivityKind::Meeting => 3,
        ActivityKind::Form => 4,
        ActivityKind::PageView => 5,
        ActivityKind::Download => 6,
        ActivityKind::DemoRequest => 7,
        ActivityKind::Task => 8,
        ActivityKind::Comment => 9,
        ActivityKind::Custom(_) => return None,
    })
}

/// A model's walked activity rules grouped by the kind they count, made at compile time.
#[derive(Debug, Default)]
pub(crate) struct KindIndex {
    /// The rule index (in `Model::rules`) of each walk slot.
    rules: Vec<usize>,
    /// The kind slot of each built-in kind ([`UNUSED`]: no walked rule counts it).
    builtin: [u8; 10],
    /// The custom kinds walked rules count, with their kind slots.
    custom: Vec<(ActivityKind, u8)>,
    /// Per kind slot, the walk slots' bits of the rules counting that kind.
    by_kind: Vec<u32>,
    /// The distinct windows of the walked rules (the example's 8 rules have 3), so each
    /// evaluation works out one cut-off instant per window, not per rule.
    windows: Vec<chrono::TimeDelta>,
    /// Each walk slot's window, as an index into `windows` (`None`: no window).
    window_of: Vec<Option<u8>>,
}

impl KindIndex {
    /// Index the first [`WALKED`] activity rules and give each its walk slot.
    pub(crate) fn new(rules: &mut [Rule]) -> KindIndex {
        let mut index = KindIndex {
            builtin: [UNUSED; 10],
            ..KindIndex::default()
        };
        for (ri, rule) in rules.iter_mut().enumerate() {
            let Body::Activity(a) = &mut rule.body else {
                continue;
            };
            if index.rules.len() == WALKED {
                a.walk = None;
                continue;
            }
            let slot = index.rules.len();
            index.rules.push(ri);
            let window = a.window.map(|w| {
                let i = match index.windows.iter().position(|&x| x == w) {
                    Some(i) => i,
                    None => {
                        index.windows.push(w);
                        index.windows.len() - 1
                    }
                };
                u8::try_from(i).expect("at most 32 windows")
            });
            index.window_of.push(window);
            a.walk = u8::try_from(slot).ok();
            let kind = match builtin(&a.kind) {
                Some(b) => &mut index.builtin[b],
                None => match index.custom.iter().position(|(k, _)| *k == a.kind) {
                    Some(c) => &mut index.custom[c].1,
                    None => {
                        index.custom.push((a.kind.clone(), UNUSED));
                        &mut index.custom.last_mut().expect("just pushed").1
                    }
                },
            };
            if *kind == UNUSED {
                *kind = u8::try_from(index.by_kind.len()).expect("at most 32 kinds");
                index.by_kind.push(0);
            }
            index.by_kind[usize::from(*kind)] |= 1 << slot;
        }
        index
    }

    /// The walk bits of the rules counting activities of kind `k`.
    #[inline]
    fn rules_of(&self, k: &ActivityKind) -> u32 {
        let slot = match builtin(k) {
            Some(b) => self.builtin[b],
            None => match self.custom.iter().find(|(c, _)| c == k) {
                Some(&(_, s)) => s,
                None => UNUSED,
            },
        };
        self.by_kind.get(usize::from(slot)).copied().unwrap_or(0)
    }

    /// The activity rule in walk slot `s`.
    #[inline]
    fn rule<'r>(&self, rules: &'r [Rule], s: usize) -> (&'r Rule, &'r ActRule) {
        let rule = &rules[self.rules[s]];
        let Body::Activity(a) = &rule.body else {
            unreachable!("walk slots hold activity rules")
        };
        (rule, a)
    }

    /// Every walked rule's tally at `now`, from one walk newest first over `order`,
    /// into `out` (filled in place: it is large to move).
    pub(crate) fn walk(
        &self,
        rules: &[Rule],
        order: &Order<'_>,
        now: DateTime<Utc>,
        out: &mut Walked,
    ) {
        let n = self.rules.len();
        out.tallies[..n].fill(ActTally::EMPTY);
        if n == 0 {
            return;
        }
        // The rules still counting; a rule leaves where its own walk would stop.
        let mut live: u32 = u32::MAX >> (WALKED - n);
        // Each window's cut-off instant (`None`: too far back to represent, no cut-off).
        let mut cuts: [Option<DateTime<Utc>>; WALKED] = [None; WALKED];
        for (c, &w) in cuts.iter_mut().zip(&self.windows) {
            *c = now.checked_sub_signed(w);
        }
        let mut cutoff: [Option<DateTime<Utc>>; WALKED] = [None; WALKED];
        for (c, w) in cutoff.iter_mut().zip(&self.window_of) {
            *c = w.and_then(|w| cuts[usize::from(w)]);
        }
        order.for_each(|i, a| {
            if a.at > now {
                return true; // future-dated: not yet real for any rule
            }
            let mut bits = self.rules_of(&a.kind) & live;
            while bits != 0 {
                let s = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let (rule, ar) = self.rule(rules, s);
                if ar.direction.is_some_and(|d| a.direction != Some(d)) {
                    continue;
                }
                if cutoff[s].is_some_and(|c| a.at <= c) {
                    live &= !(1 << s); // newest first: the rest is older still
                    continue;
                }
                if !order.marks.text_matches(ar, i, a) {
                    continue;
                }
                let t = &mut out.tallies[s];
                t.count_one(occurrence_points(ar, f64::from(rule.points), a, now), a);
                if t.count >= ar.max_count.unwrap_or(u32::MAX) {
                    live &= !(1 << s);
                }
            }
            live != 0
        });
    }
}

/// One evaluation's tallies of the walked activity rules, by walk slot.
pub(crate) struct Walked {
    tallies: [ActTally; WALKED],
}

impl Walked {
    /// Nothing walked yet.
    pub(crate) fn new() -> Walked {
        Walked {
            tallies: [ActTally::EMPTY; WALKED],
        }
    }

    /// The tally of the rule in walk slot `s`.
    #[inline]
    pub(crate) fn get(&self, s: u8) -> ActTally {
        self.tallies[usize::from(s)]
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::lead::{Activity, Direction};
    use crate::scoring::classify::{Classifier, TextIds};
    use crate::scoring::eval::tally;
    use crate::scoring::text::Pattern;

    /// A small deterministic generator (no test depends on a seed it cannot show).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    const KINDS: [&str; 5] = ["page_view", "call", "email_open", "webinar", "fair"];

    fn rules(rng: &mut Lcg, n: usize) -> Vec<Rule> {
        let urls = [
            None,
            Some("/blog"),
            Some("(?i)/pricing|/prices"),
            Some("^https"),
        ];
        let subjects = [None, Some("(?i)прайс|price"), Some("demo")];
        let windows = [
            None,
            Some(TimeDelta::hours(20)),
            Some(TimeDelta::days(3)),
            Some(TimeDelta::days(14)),
            Some(TimeDelta::MAX),
        ];
        (0..n)
            .map(|i| {
                let pick = |rng: &mut Lcg, len: usize| rng.next(len as u64) as usize;
                let pattern = |p: Option<&str>| p.map(|s| Pattern::new(s).unwrap());
                let body = ActRule {
                    kind: ActivityKind::from_name(KINDS[pick(rng, KINDS.len())]),
                    direction: [None, Some(Direction::Incoming), Some(Direction::Outgoing)]
                        [pick(rng, 3)],
                    subject: pattern(subjects[pick(rng, subjects.len())]),
                    url: pattern(urls[pick(rng, urls.len())]),
                    window: windows[pick(rng, windows.len())],
                    max_count: [None, Some(1), Some(2), Some(3)][pick(rng, 4)],
                    half_life_days: [None, Some(7.0), Some(0.5)][pick(rng, 3)],
                    ids: TextIds::default(),
                    walk: None,
                };
                Rule {
                    id: format!("r{i}"),
                    label: String::new(),
                    group: 0,
                    points: [1, 5, -3][pick(rng, 3)],
                    body: Body::Activity(body),
                    timed: true,
                    task: None,
                }
            })
            .collect()
    }

    fn activities(rng: &mut Lcg, now: DateTime<Utc>, n: usize) -> Vec<Activity> {
        let texts = [
            None,
            Some("https://x.ru/blog/1"),
            Some("https://x.ru/PRICING"),
            Some("Прайс.pdf"),
            Some("demo"),
        ];
        let mut at = now + TimeDelta::days(2); // the newest are future-dated
        (0..n)
            .map(|i| {
                // Some activities share a timestamp with the one before.
                if rng.next(4) != 0 {
                    at -= TimeDelta::minutes(rng.next(3 * 24 * 60) as i64 + 1);
                }
                Activity {
                    id: i.to_string(),
                    kind: ActivityKind::from_name(KINDS[rng.next(KINDS.len() as u64) as usize]),
                    direction: [None, Some(Direction::Incoming), Some(Direction::Outgoing)]
                        [rng.next(3) as usize],
                    subject: texts[rng.next(texts.len() as u64) as usize].map(str::to_string),
                    url: texts[rng.next(texts.len() as u64) as usize].map(str::to_string),
                    at,
                    contact_id: None,
                    mapped_by: None,
                }
            })
            .collect()
    }

    /// The one walk's tally of every walked rule equals the rule's own walk, for rules of
    /// built-in and custom kinds, with and without direction, text patterns, windows
    /// (one too long to subtract from `now`), caps and decay, over activities newest
    /// first, oldest first and unsorted, some future-dated, some at the same instant, at
    /// instants on an activity's time and on a window's edge; rules past the walk's
    /// capacity get no slot.
    #[test]
    fn one_walk_equals_each_rules_own_walk() {
        let now: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
        let mut rng = Lcg(19);
        let mut checked = 0;
        for round in 0..40 {
            let mut rules = rules(&mut rng, if round % 10 == 0 { WALKED + 5 } else { 9 });
            let classifier = Classifier::new(&mut rules);
            let index = KindIndex::new(&mut rules);
            let mut acts = activities(&mut rng, now, 25);
            match round % 3 {
                0 => {}
                1 => acts.reverse(),
                _ => {
                    for i in 0..acts.len() {
                        let j = rng.next(acts.len() as u64) as usize;
                        acts.swap(i, j);
                    }
                }
            }
            // Fixed instants, instants at and just around an activity (which starts to
            // count there), and one where an activity is exactly a window's length old.
            let some = acts[round % acts.len()].at;
            let instants = [
                now,
                now - TimeDelta::days(1),
                now + TimeDelta::days(3),
                some,
                some - TimeDelta::nanoseconds(1),
                some + TimeDelta::hours(1),
                some + TimeDelta::days(3),
            ];
            for at in instants {
                let order = Order::new(&acts, &classifier);
                let mut walked = Walked::new();
                index.walk(&rules, &order, at, &mut walked);
                for (i, rule) in rules.iter().enumerate() {
                    let Body::Activity(a) = &rule.body else {
                        unreachable!()
                    };
                    let Some(s) = a.walk else {
                        assert!(i >= WALKED, "rule {i} has a walk slot");
                        continue;
                    };
                    let want = tally(a, rule.points, &order, at);
                    assert_eq!(walked.get(s), want, "round {round}, rule {i} {a:?} at {at}");
                    checked += usize::from(want.count > 0);
                }
            }
        }
        assert!(checked > 200, "the rules counted something ({checked})");
    }
}
