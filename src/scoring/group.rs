//! The buying-group rule: several distinct people of one company active at once.
//!
//! The engine stays pure: the pipeline passes the company's aggregate (its people and
//! each one's latest activity time per kind) as an input, and this module only counts.
//! It also says what a lead's company is ([`Model::company_key`]) and what a lead adds
//! to it ([`Member::from_activities`]), so the pipeline and the engine agree.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::compile::{compile_field, window_days, Body, Errors, FieldRef};
use super::spec::BuyingGroupSpec;
use super::Model;
use crate::lead::{Activity, ActivityKind, Lead};

/// Free mailbox domains that never make a company, unless the rule lists its own.
const FREE_DOMAINS: &[&str] = &[
    "gmail.com",
    "mail.ru",
    "yandex.ru",
    "ya.ru",
    "bk.ru",
    "list.ru",
    "inbox.ru",
    "internet.ru",
    "rambler.ru",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "yahoo.com",
    "proton.me",
    "protonmail.com",
];

/// Which company a lead belongs to, for the aggregate's key and the card's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyKey {
    /// `id:<crm id>` or `domain:<domain>`: stable across the company's leads.
    pub key: String,
    /// What reps read: the lead's company name, else the id or domain.
    pub name: String,
}

/// One person of a company: a lead, or an amoCRM contact when activities name one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `lead:<id>` or `contact:<id>`.
    pub id: String,
    /// The person's latest activity time per kind name.
    pub latest: BTreeMap<String, DateTime<Utc>>,
}

impl Member {
    /// The people a lead's activities show: each activity's contact when it names one,
    /// else the lead itself; with their latest time per kind.
    pub fn from_activities(lead_id: &str, acts: &[Activity]) -> Vec<Member> {
        let mut by: BTreeMap<String, BTreeMap<String, DateTime<Utc>>> = BTreeMap::new();
        for a in acts {
            let id = match a.contact_id.as_deref().filter(|c| !c.is_empty()) {
                Some(c) => format!("contact:{c}"),
                None => format!("lead:{lead_id}"),
            };
            let slot = by
                .entry(id)
                .or_default()
                .entry(a.kind.as_str().to_string())
                .or_insert(a.at);
            *slot = (*slot).max(a.at);
        }
        by.into_iter()
            .map(|(id, latest)| Member { id, latest })
            .collect()
    }
}

/// A company's aggregate as the engine reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Company {
    /// Shown on the card ("«Ромашка»").
    pub name: String,
    /// Every known person of the company (one entry per id).
    pub people: Vec<Member>,
}

/// A compiled buying-group rule.
#[derive(Debug)]
pub(crate) struct GroupRule {
    /// Empty: every kind counts.
    pub(crate) kinds: Vec<String>,
    pub(crate) window: TimeDelta,
    pub(crate) window_days: f64,
    pub(crate) min_people: u32,
    pub(crate) company_field: Option<FieldRef>,
    /// Lowercased.
    pub(crate) free_domains: Vec<String>,
}

impl GroupRule {
    fn counts(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)
    }

    /// Distinct people active in the window at `now` (future times do not count yet).
    pub(crate) fn active(&self, company: &Company, now: DateTime<Utc>) -> u32 {
        company
            .people
            .iter()
            .filter(|m| {
                m.latest
                    .iter()
                    .any(|(k, &at)| self.counts(k) && at <= now && now - at < self.window)
            })
            .count() as u32
    }

    /// Does the rule hold for this company at `now`?
    pub(crate) fn fires(&self, company: Option<&Company>, now: DateTime<Utc>) -> Option<u32> {
        let n = self.active(company?, now);
        (n >= self.min_people).then_some(n)
    }

    /// Every instant a person starts or stops counting.
    pub(crate) fn boundaries(
        &self,
        company: Option<&Company>,
        offer: &mut impl FnMut(DateTime<Utc>),
    ) {
        for m in company.map_or(&[][..], |c| &c.people) {
            for (_, &at) in m.latest.iter().filter(|(k, _)| self.counts(k)) {
                offer(at);
                if let Some(exit) = at.checked_add_signed(self.window) {
                    offer(exit);
                }
            }
        }
    }

    fn key(&self, lead: &Lead) -> Option<String> {
        if let Some(f) = &self.company_field {
            if let Some(v) = lead.values(&f.name).first() {
                return Some(format!("id:{v}"));
            }
        }
        lead.emails.iter().find_map(|e| {
            let domain = e.trim().rsplit_once('@')?.1.trim().to_lowercase();
            let corporate = domain.contains('.') && !self.free_domains.contains(&domain);
            corporate.then(|| format!("domain:{domain}"))
        })
    }
}

/// A rule that creates a task once per episode (see [`Model::rule_tasks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTask {
    pub rule_id: String,
    pub label: String,
    /// The task text, with `{company}`, `{label}`, `{name}`, `{lead}`, `{score}`.
    pub template: String,
    /// A buying-group rule: the episode is the company's, not the lead's.
    pub company: bool,
}

impl Model {
    /// The rules that carry `task`, in config order.
    pub fn rule_tasks(&self) -> Vec<RuleTask> {
        self.rules
            .iter()
            .filter_map(|r| {
                Some(RuleTask {
                    rule_id: r.id.clone(),
                    label: r.label.clone(),
                    template: r.task.clone()?,
                    company: matches!(r.body, Body::Group(_)),
                })
            })
            .collect()
    }

    /// Whether some rule counts a company aggregate (else the pipeline keeps none).
    pub fn has_buying_group(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.body, Body::Group(_)))
    }

    /// Do two versions of a company read alike to every buying-group rule at `now`
    /// (the same people counted, so the same points and card text)? Decides whether a
    /// lead's update must re-score the company's other leads.
    pub fn same_group_view(
        &self,
        a: Option<&Company>,
        b: Option<&Company>,
        now: DateTime<Utc>,
    ) -> bool {
        a.map(|c| &c.name) == b.map(|c| &c.name)
            && self.rules.iter().all(|r| match &r.body {
                Body::Group(g) => g.fires(a, now) == g.fires(b, now),
                _ => true,
            })
    }

    /// The lead's company for buying-group rules: `None` when the model has none, or
    /// when the lead has neither a company id nor a corporate e-mail (a free mailbox
    /// is a person, never a company).
    pub fn company_key(&self, lead: &Lead) -> Option<CompanyKey> {
        let rule = self.rules.iter().find_map(|r| match &r.body {
            Body::Group(g) => Some(g),
            _ => None,
        })?;
        let key = rule.key(lead)?;
        let name = lead
            .company
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| key.split_once(':').map_or(&key[..], |(_, v)| v).to_string());
        Some(CompanyKey { key, name })
    }
}

/// Check and compile a `buying_group` table at key path `p`.
pub(crate) fn compile_group(s: &BuyingGroupSpec, p: &str, errs: &mut Errors) -> Option<GroupRule> {
    let mut ok = true;
    if let Some(i) = s.kinds.iter().position(|k| k.trim().is_empty()) {
        errs.push(format!("{p}.kinds[{i}]"), "activity kind must not be empty");
        ok = false;
    }
    if s.min_people < 2 {
        errs.push(
            format!("{p}.min_people"),
            "min_people must be at least 2 (one person is not a group)",
        );
        ok = false;
    }
    let company_field = match &s.company_field {
        Some(f) => {
            let r = compile_field(f, &format!("{p}.company_field"), errs);
            ok &= r.is_some();
            r
        }
        None => None,
    };
    let free_domains: Vec<String> = match &s.free_domains {
        Some(list) => {
            if let Some(i) = list.iter().position(|d| d.trim().is_empty()) {
                errs.push(format!("{p}.free_domains[{i}]"), "empty domain");
                ok = false;
            }
            list.iter()
                .map(|d| d.trim().trim_start_matches('@').to_lowercase())
                .collect()
        }
        None => FREE_DOMAINS.iter().map(|d| d.to_string()).collect(),
    };
    let (window, days) = window_days(s.window_days, p, errs)?;
    ok.then(|| GroupRule {
        kinds: s
            .kinds
            .iter()
            .map(|k| ActivityKind::from_name(k.trim()).as_str().to_string())
            .collect(),
        window,
        window_days: days,
        min_people: s.min_people,
        company_field,
        free_domains,
    })
}
