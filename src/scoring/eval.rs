//! Evaluation: rules → per-rule outcomes → group caps → total, tier and breakdown.
//!
//! The hot path does not allocate: field values are borrowed from the lead, case-folding
//! uses a stack buffer, and activities are walked newest-first without sorting when the
//! caller already passes them in time order (the common case). Only `score` allocates,
//! to build the owned `Score`.

use chrono::{DateTime, TimeDelta, Utc};

use super::classify::{Classifier, Marks};
use super::compile::{ActRule, Body, Rule, SpikeRule};
use super::cond::{eval_cond, Outcome};
use super::text::Pattern;
use super::walk::{builtin, Walked};
use super::{Company, DataGap, Entry, Evidence, GroupTotal, Model, Score};
use crate::lead::{Activity, FieldValue, Lead};

const MS_PER_DAY: f64 = 86_400_000.0;

/// Activities newest first, without sorting when the caller's order already allows it,
/// with the evaluation's classified activities (see [`Marks`]).
pub(crate) struct Order<'a> {
    seq: Seq<'a>,
    pub(crate) marks: Marks<'a>,
}

enum Seq<'a> {
    Desc(&'a [Activity]),
    Asc(&'a [Activity]),
    Indexed(&'a [Activity], Vec<u32>),
}

impl<'a> Order<'a> {
    pub(crate) fn new(acts: &'a [Activity], classifier: &'a Classifier) -> Order<'a> {
        let seq = if acts.windows(2).all(|w| w[0].at >= w[1].at) {
            Seq::Desc(acts)
        } else if acts.windows(2).all(|w| w[0].at <= w[1].at) {
            Seq::Asc(acts)
        } else {
            let mut idx: Vec<u32> = (0..acts.len() as u32).collect();
            // Stable: equal timestamps keep input order (ties score alike anyway).
            idx.sort_by(|&a, &b| acts[b as usize].at.cmp(&acts[a as usize].at));
            Seq::Indexed(acts, idx)
        };
        Order {
            seq,
            marks: Marks::new(classifier),
        }
    }

    /// Every activity, in no particular order (for counts that need none).
    pub(crate) fn all(&self) -> &'a [Activity] {
        match &self.seq {
            Seq::Desc(a) | Seq::Asc(a) | Seq::Indexed(a, _) => a,
        }
    }

    /// Each activity newest first with its position in [`Order::all`], until `f` says
    /// stop.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, &'a Activity) -> bool) {
        match &self.seq {
            Seq::Desc(a) => {
                for (i, x) in a.iter().enumerate() {
                    if !f(i, x) {
                        return;
                    }
                }
            }
            Seq::Asc(a) => {
                for (i, x) in a.iter().enumerate().rev() {
                    if !f(i, x) {
                        return;
                    }
                }
            }
            Seq::Indexed(a, idx) => {
                for &i in idx {
                    if !f(i as usize, &a[i as usize]) {
                        return;
                    }
                }
            }
        }
    }
}

/// The activity matcher's text tests, shared by every rule that filters activities:
/// the subject and the URL must match their regexes when the rule has them.
#[inline]
pub(crate) fn text_matches(subject: Option<&Pattern>, url: Option<&Pattern>, a: &Activity) -> bool {
    subject.is_none_or(|re| a.subject.as_deref().is_some_and(|s| re.is_match(s)))
        && url.is_none_or(|re| a.url.as_deref().is_some_and(|u| re.is_match(u)))
}

impl ActRule {
    /// The cheap part of matching: kind and direction.
    #[inline]
    fn matches_kind(&self, a: &Activity) -> bool {
        a.kind == self.kind && self.direction.is_none_or(|d| a.direction == Some(d))
    }

    /// The pattern part of matching: subject and URL regexes.
    #[inline]
    fn matches_text(&self, a: &Activity) -> bool {
        text_matches(self.subject.as_ref(), self.url.as_ref(), a)
    }

    /// Does this activity match the rule, regardless of its time?
    pub(crate) fn matches(&self, a: &Activity) -> bool {
        self.matches_kind(a) && self.matches_text(a)
    }
}

/// What an activity rule counted at some `now`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ActTally {
    pub(crate) count: u32,
    /// Sum of per-occurrence points after decay, before rounding.
    pub(crate) exact: f64,
    pub(crate) newest: Option<DateTime<Utc>>,
    pub(crate) oldest: Option<DateTime<Utc>>,
}

impl ActTally {
    /// Nothing counted.
    pub(crate) const EMPTY: ActTally = ActTally {
        count: 0,
        exact: 0.0,
        newest: None,
        oldest: None,
    };

    /// Count one more occurrence worth `points` (after decay); the newest comes first.
    #[inline]
    pub(crate) fn count_one(&mut self, points: f64, a: &Activity) {
        self.exact += points;
        self.count += 1;
        self.newest = self.newest.or(Some(a.at));
        self.oldest = Some(a.at);
    }
}

/// What one occurrence `a` of `rule` is worth at `now`: `p`, halved every half-life.
/// Date arithmetic is not cheap, so it is done only when points decay.
#[inline]
pub(crate) fn occurrence_points(rule: &ActRule, p: f64, a: &Activity, now: DateTime<Utc>) -> f64 {
    match rule.half_life_days {
        Some(h) => {
            let age_days = (now - a.at).num_milliseconds() as f64 / MS_PER_DAY;
            p * (-age_days / h).exp2()
        }
        None => p,
    }
}

/// One rule's tally by its own walk over the activities (see `walk` for all at once).
pub(crate) fn tally(
    rule: &ActRule,
    points: i32,
    order: &Order<'_>,
    now: DateTime<Utc>,
) -> ActTally {
    let mut t = ActTally::EMPTY;
    let limit = rule.max_count.unwrap_or(u32::MAX);
    let p = f64::from(points);
    // Comparing instants is cheap; date arithmetic is not, so it is done once per rule
    // (the window's cutoff).
    let cutoff = rule.window.and_then(|w| now.checked_sub_signed(w));
    order.for_each(|i, a| {
        if a.at > now || !rule.matches_kind(a) {
            return true; // future-dated (not yet real) or another kind
        }
        if cutoff.is_some_and(|c| a.at <= c) {
            return false; // newest first: everything after is older still
        }
        if !order.marks.text_matches(rule, i, a) {
            return true;
        }
        t.count_one(occurrence_points(rule, p, a, now), a);
        t.count < limit
    });
    t
}

/// Round half away from zero and saturate into `i32`.
fn round_points(x: f64) -> i32 {
    let r = x.round();
    if r >= f64::from(i32::MAX) {
        i32::MAX
    } else if r <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        r as i32
    }
}

/// One rule's result before caps.
enum RuleOut<'a> {
    Nothing,
    Gap(&'a str),
    Field {
        points: i32,
        ev: Option<(&'a str, FieldValue<'a>)>,
    },
    Acts {
        points: i32,
        raw: i32,
        tally: ActTally,
    },
    Spike {
        points: i32,
        seen: SpikeSeen,
    },
    /// A high-intent rule's newest counted event.
    Intent {
        points: i32,
        at: DateTime<Utc>,
    },
    /// A buying-group rule's count of active people.
    Group {
        points: i32,
        people: u32,
    },
}

/// One rule's visible result, for [`Model::signature`]: what the score and the card
/// text are made of (points, counts and the dates named).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sig {
    Nothing,
    Gap,
    Points(i32),
    /// Points, count, newest and oldest counted activity.
    Acts(i32, u32, Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    /// Points, recent count, baseline count (the card shows its daily rate), newest.
    Spike(i32, u32, u32, Option<DateTime<Utc>>),
    /// Points and the time of the event named.
    Intent(i32, DateTime<Utc>),
    /// Points and the number of active people.
    Group(i32, u32),
}

/// What a spike rule counted at some `now`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SpikeSeen {
    pub(crate) recent: u32,
    pub(crate) baseline: u32,
    pub(crate) newest: Option<DateTime<Utc>>,
}

impl SpikeRule {
    /// Whether the rule counts activities of `a`'s kind: built-in kinds by a bit (no
    /// comparison with each listed kind), custom ones by the list.
    pub(crate) fn counts(&self, a: &Activity) -> bool {
        if self.kinds.is_empty() {
            return true;
        }
        match builtin(&a.kind) {
            Some(b) => self.builtin_kinds & 1 << b != 0,
            None => self.kinds.contains(&a.kind),
        }
    }

    /// Recent and baseline counts at `now` (future-dated activities do not count).
    pub(crate) fn seen(&self, acts: &[Activity], now: DateTime<Utc>) -> SpikeSeen {
        let mut seen = SpikeSeen {
            recent: 0,
            baseline: 0,
            newest: None,
        };
        // `now - at < d` is `at > now - d`: the cut-offs are worked out once, and an
        // instant the calendar cannot reach (`None`) lets every activity in.
        let recent_cut = now.checked_sub_signed(self.recent);
        let baseline_cut = self
            .recent
            .checked_add(&self.baseline)
            .and_then(|d| now.checked_sub_signed(d));
        for a in acts.iter().filter(|a| a.at <= now && self.counts(a)) {
            if recent_cut.is_none_or(|c| a.at > c) {
                seen.recent += 1;
                seen.newest = Some(seen.newest.map_or(a.at, |n| n.max(a.at)));
            } else if baseline_cut.is_none_or(|c| a.at > c) {
                seen.baseline += 1;
            }
        }
        seen
    }

    /// Is `seen` a spike: enough recent activity, at `factor` times the baseline rate?
    pub(crate) fn fires(&self, seen: &SpikeSeen) -> bool {
        let recent_rate = f64::from(seen.recent) / self.recent_days;
        let baseline_rate = f64::from(seen.baseline) / self.baseline_days;
        seen.recent >= self.min_count && recent_rate >= self.factor * baseline_rate
    }
}

impl RuleOut<'_> {
    fn points(&self) -> i32 {
        match self {
            RuleOut::Field { points, .. }
            | RuleOut::Acts { points, .. }
            | RuleOut::Spike { points, .. }
            | RuleOut::Intent { points, .. }
            | RuleOut::Group { points, .. } => *points,
            RuleOut::Nothing | RuleOut::Gap(_) => 0,
        }
    }
}

fn eval_rule<'a>(
    rule: &'a Rule,
    lead: &'a Lead,
    order: &Order<'_>,
    walked: &Walked,
    company: Option<&Company>,
    now: DateTime<Utc>,
) -> RuleOut<'a> {
    match &rule.body {
        Body::Fit(c) => match eval_cond(c, lead, now) {
            Outcome::Match(ev) => RuleOut::Field {
                points: rule.points,
                ev,
            },
            Outcome::NoMatch(_) => RuleOut::Nothing,
            Outcome::Missing(f) => RuleOut::Gap(f),
        },
        Body::Activity(a) => {
            let tally = match a.walk {
                Some(s) => walked.get(s),
                None => tally(a, rule.points, order, now),
            };
            if tally.count == 0 {
                RuleOut::Nothing
            } else {
                let raw = i64::from(rule.points) * i64::from(tally.count);
                RuleOut::Acts {
                    points: round_points(tally.exact),
                    raw: raw.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                    tally,
                }
            }
        }
        Body::Spike(sp) => {
            let seen = sp.seen(order.all(), now);
            if sp.fires(&seen) {
                RuleOut::Spike {
                    points: rule.points,
                    seen,
                }
            } else {
                RuleOut::Nothing
            }
        }
        Body::Intent(ir) => match ir.newest(order.all(), now) {
            Some(a) => RuleOut::Intent {
                points: rule.points,
                at: a.at,
            },
            None => RuleOut::Nothing,
        },
        Body::Group(g) => match g.fires(company, now) {
            Some(people) => RuleOut::Group {
                points: rule.points,
                people,
            },
            None => RuleOut::Nothing,
        },
    }
}

fn cap(sum: i64, min: Option<i32>, max: Option<i32>) -> i64 {
    let mut s = sum;
    if let Some(m) = max {
        s = s.min(i64::from(m));
    }
    if let Some(m) = min {
        s = s.max(i64::from(m));
    }
    s
}

fn to_i32(x: i64) -> i32 {
    x.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

fn evidence_text(v: FieldValue<'_>) -> String {
    v.to_string()
}

impl Model {
    fn order<'a>(&'a self, acts: &'a [Activity]) -> Order<'a> {
        if self.has_activity_rules {
            Order::new(acts, &self.classifier)
        } else {
            Order::new(&[], &self.classifier)
        }
    }

    pub(crate) fn total_impl(
        &self,
        lead: &Lead,
        acts: &[Activity],
        company: Option<&Company>,
        now: DateTime<Utc>,
    ) -> i32 {
        let order = self.order(acts);
        let mut walked = Walked::new();
        self.kinds.walk(&self.rules, &order, now, &mut walked);
        let mut total: i64 = 0;
        for g in &self.groups {
            let sum: i64 = g
                .rules
                .iter()
                .map(|&r| {
                    i64::from(
                        eval_rule(&self.rules[r], lead, &order, &walked, company, now).points(),
                    )
                })
                .sum();
            total += cap(sum, g.min, g.max);
        }
        let total = to_i32(total.clamp(i64::from(self.min), i64::from(self.max)));
        match self.gate.as_ref().and_then(|g| g.cap_for(lead, now)) {
            Some(c) => total.min(c),
            None => total,
        }
    }

    pub(crate) fn rule_units_impl(
        &self,
        lead: &Lead,
        acts: &[Activity],
        now: DateTime<Utc>,
        out: &mut Vec<f64>,
    ) {
        out.clear();
        let order = self.order(acts);
        // Analyses replay one lead at a time: no company aggregate, no buying group.
        let company: Option<&Company> = None;
        for rule in &self.rules {
            out.push(match &rule.body {
                Body::Fit(c) => match eval_cond(c, lead, now) {
                    Outcome::Match(_) => 1.0,
                    Outcome::NoMatch(_) | Outcome::Missing(_) => 0.0,
                },
                // One point per occurrence: the tally is then the decayed count.
                Body::Activity(a) => tally(a, 1, &order, now).exact,
                Body::Spike(sp) => {
                    if sp.fires(&sp.seen(order.all(), now)) {
                        1.0
                    } else {
                        0.0
                    }
                }
                Body::Intent(ir) => {
                    if ir.newest(order.all(), now).is_some() {
                        1.0
                    } else {
                        0.0
                    }
                }
                Body::Group(g) => {
                    if g.fires(company, now).is_some() {
                        1.0
                    } else {
                        0.0
                    }
                }
            });
        }
    }

    pub(crate) fn score_impl(
        &self,
        lead: &Lead,
        acts: &[Activity],
        company: Option<&Company>,
        now: DateTime<Utc>,
    ) -> Score {
        let order = self.order(acts);
        let mut walked = Walked::new();
        self.kinds.walk(&self.rules, &order, now, &mut walked);
        let mut breakdown: Vec<Entry> = Vec::new();
        let mut gaps = Vec::new();
        // Index of each entry's group, parallel to `breakdown`.
        let mut entry_group: Vec<usize> = Vec::new();
        for rule in &self.rules {
            let out = eval_rule(rule, lead, &order, &walked, company, now);
            let (points, raw, decayed, evidence) = match out {
                RuleOut::Nothing => continue,
                RuleOut::Gap(field) => {
                    gaps.push(DataGap {
                        rule_id: rule.id.clone(),
                        field: field.to_string(),
                    });
                    continue;
                }
                RuleOut::Field { points, ev } => {
                    let (field, value) = match ev {
                        Some((f, v)) => (f.to_string(), evidence_text(v)),
                        None => (String::new(), String::new()),
                    };
                    (points, points, false, Evidence::Field { field, value })
                }
                RuleOut::Spike { points, seen } => {
                    let Body::Spike(sp) = &rule.body else {
                        unreachable!("spike outcomes come from spike rules")
                    };
                    (
                        points,
                        points,
                        false,
                        Evidence::Spike {
                            recent: seen.recent,
                            recent_days: sp.recent_days,
                            baseline_per_day: f64::from(seen.baseline) / sp.baseline_days,
                            newest: seen.newest.unwrap_or(now),
                        },
                    )
                }
                RuleOut::Intent { points, at } => {
                    let Body::Intent(ir) = &rule.body else {
                        unreachable!("intent outcomes come from high-intent rules")
                    };
                    let a = ir.newest(order.all(), now);
                    let subject = a.and_then(|a| a.subject.clone().or_else(|| a.url.clone()));
                    (
                        points,
                        points,
                        false,
                        Evidence::Intent {
                            kind: a.map(|a| a.kind.as_str().to_string()).unwrap_or_default(),
                            subject,
                            at,
                        },
                    )
                }
                RuleOut::Group { points, people } => {
                    let Body::Group(g) = &rule.body else {
                        unreachable!("group outcomes come from buying-group rules")
                    };
                    (
                        points,
                        points,
                        false,
                        Evidence::Group {
                            people,
                            company: company.map(|c| c.name.clone()).unwrap_or_default(),
                            window_days: g.window_days,
                        },
                    )
                }
                RuleOut::Acts { points, raw, tally } => (
                    points,
                    raw,
                    points != raw,
                    Evidence::Activities {
                        count: tally.count,
                        newest: tally.newest.unwrap_or(now),
                        oldest: tally.oldest.unwrap_or(now),
                    },
                ),
            };
            entry_group.push(rule.group);
            breakdown.push(Entry {
                rule_id: rule.id.clone(),
                label: rule.label.clone(),
                group: self.groups[rule.group].id.clone(),
                points,
                raw_points: raw,
                capped: false,
                decayed,
                evidence,
            });
        }

        let mut groups = Vec::with_capacity(self.groups.len());
        let mut unclamped: i64 = 0;
        for (gi, g) in self.groups.iter().enumerate() {
            let raw: i64 = breakdown
                .iter()
                .zip(&entry_group)
                .filter(|(_, &eg)| eg == gi)
                .map(|(e, _)| i64::from(e.points))
                .sum();
            let capped = cap(raw, g.min, g.max);
            // Trim entries toward 0 from the last rule backwards until the group meets its
            // cap, so the breakdown still sums to the subtotal. Caps include 0 (checked at
            // compile time), so trimming always suffices.
            let mut excess = raw - capped;
            for (e, _) in breakdown
                .iter_mut()
                .zip(&entry_group)
                .rev()
                .filter(|(_, &eg)| eg == gi)
            {
                if excess == 0 {
                    break;
                }
                let p = i64::from(e.points);
                let cut = if excess > 0 {
                    p.clamp(0, excess)
                } else {
                    p.clamp(excess, 0)
                };
                if cut != 0 {
                    e.points = to_i32(p - cut);
                    e.capped = true;
                    excess -= cut;
                }
            }
            unclamped += capped;
            groups.push(GroupTotal {
                id: g.id.clone(),
                label: g.label.clone(),
                points: to_i32(capped),
                raw_points: to_i32(raw),
                capped: capped != raw,
            });
        }

        let mut total = to_i32(unclamped.clamp(i64::from(self.min), i64::from(self.max)));
        let qualification = self.gate.as_ref().map(|g| g.qualify(lead, now, total));
        if let Some(c) = qualification.as_ref().and_then(|q| q.cap) {
            total = total.min(c);
        }
        let tier = self.tier_for(total);
        Score {
            total,
            tier: tier.id.clone(),
            tier_label: tier.label.clone(),
            groups,
            breakdown,
            gaps,
            unclamped: to_i32(unclamped),
            qualification,
        }
    }

    /// The earliest instant strictly after `t` at which some activity rule's input
    /// changes: a matching activity starts counting (future-dated) or leaves its window,
    /// or a decaying sum crosses a rounding boundary.
    fn next_event(
        &self,
        lead: &Lead,
        acts: &[Activity],
        order: &Order<'_>,
        company: Option<&Company>,
        t: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut best: Option<DateTime<Utc>> = None;
        let mut offer = |c: DateTime<Utc>| {
            if c > t && best.is_none_or(|b| c < b) {
                best = Some(c);
            }
        };
        if let Some(g) = self.gate.as_ref().filter(|g| g.timed) {
            g.boundaries(lead, &mut offer);
        }
        for rule in &self.rules {
            if let Body::Fit(c) = &rule.body {
                if rule.timed() {
                    c.boundaries(lead, &mut offer);
                }
                continue;
            }
            if let Body::Spike(sp) = &rule.body {
                // A spike changes only when an activity enters or leaves a window.
                for act in acts.iter().filter(|x| sp.counts(x)) {
                    offer(act.at);
                    offer(act.at + sp.recent);
                    offer(act.at + sp.recent + sp.baseline);
                }
                continue;
            }
            if let Body::Intent(ir) = &rule.body {
                ir.boundaries(acts, &mut offer);
                continue;
            }
            if let Body::Group(g) = &rule.body {
                g.boundaries(company, &mut offer);
                continue;
            }
            let Body::Activity(a) = &rule.body else {
                continue;
            };
            for act in acts.iter().filter(|x| a.matches(x)) {
                offer(act.at);
                if let Some(w) = a.window {
                    if let Some(exit) = act.at.checked_add_signed(w) {
                        offer(exit);
                    }
                }
            }
            if let Some(h) = a.half_life_days {
                let tl = tally(a, rule.points, order, t);
                let r = round_points(tl.exact);
                if r != 0 {
                    // |S| decays as 0.5^(dt/h); the rounded value changes once |S| falls
                    // below |r| - 0.5 (rounding is half away from zero).
                    let target = f64::from(r).abs() - 0.5;
                    let dt_days = h * (tl.exact.abs() / target).log2().max(0.0);
                    let exact_secs = t.timestamp() as f64
                        + f64::from(t.timestamp_subsec_nanos()) / 1e9
                        + dt_days * 86_400.0;
                    if exact_secs.is_finite() && exact_secs < 1e15 {
                        if let Some(c) = DateTime::from_timestamp(exact_secs.floor() as i64 + 1, 0)
                        {
                            offer(c);
                        }
                    }
                }
            }
        }
        best
    }

    /// Everything about each rule's result that the score and its text show (points,
    /// counts, the dates named), without building a [`Score`]: two instants with equal
    /// signatures score and read the same, so `next_change` compares these (no
    /// allocation per candidate instant). Fit rules never read the clock: left out.
    fn signature(
        &self,
        lead: &Lead,
        order: &Order<'_>,
        company: Option<&Company>,
        now: DateTime<Utc>,
        out: &mut Vec<Sig>,
    ) {
        out.clear();
        let mut walked = Walked::new();
        self.kinds.walk(&self.rules, order, now, &mut walked);
        for rule in self.rules.iter().filter(|r| r.timed()) {
            out.push(match eval_rule(rule, lead, order, &walked, company, now) {
                RuleOut::Nothing => Sig::Nothing,
                RuleOut::Gap(_) => Sig::Gap,
                RuleOut::Field { points, .. } => Sig::Points(points),
                RuleOut::Acts { points, tally, .. } => {
                    Sig::Acts(points, tally.count, tally.newest, tally.oldest)
                }
                RuleOut::Spike { points, seen } => {
                    Sig::Spike(points, seen.recent, seen.baseline, seen.newest)
                }
                RuleOut::Intent { points, at } => Sig::Intent(points, at),
                RuleOut::Group { points, people } => Sig::Group(points, people),
            });
        }
        if let Some(g) = self.gate.as_ref().filter(|g| g.timed) {
            out.push(Sig::Points(g.signature(lead, now)));
        }
    }

    pub(crate) fn next_change_impl(
        &self,
        lead: &Lead,
        acts: &[Activity],
        company: Option<&Company>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if !self.timed {
            return None;
        }
        let order = Order::new(acts, &self.classifier);
        let mut base = Vec::with_capacity(self.rules.len());
        let mut at_c = Vec::with_capacity(self.rules.len());
        self.signature(lead, &order, company, now, &mut base);
        let mut t = now;
        // Some events change nothing visible (an uncounted activity leaving its window);
        // skip those. The bound keeps a pathological input from looping long: returning
        // an earlier instant is safe, the caller just re-scores and finds no change.
        for _ in 0..512 {
            let c = self.next_event(lead, acts, &order, company, t)?;
            self.signature(lead, &order, company, c, &mut at_c);
            if at_c != base {
                return Some(c);
            }
            t = c;
        }
        Some(t)
    }
}

/// Age of `at` at `now` in whole days (floor), never negative.
pub(crate) fn age_days(at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let d: TimeDelta = now - at;
    d.num_days().max(0)
}
