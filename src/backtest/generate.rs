//! A seeded generator of realistic closed-lead histories for the example config, so a
//! backtest and `tune` can be tried (and tested) before any CRM is connected.
//!
//! The process (documented in `docs/backtest.md`): each lead gets a fit profile (title,
//! headcount, revenue, industry, region, e-mail) and a hidden buying intent `u ~ N(0,1)`.
//! Intent drives behaviour (demo requests, price-list downloads, pricing-page views,
//! incoming calls, meetings); blog reads and e-mail opens are drawn independently of it.
//! The outcome is a Bernoulli draw with log-odds = −3.0 + planted fit effects + planted
//! behaviour effects + 0.4·u: **strong** drivers are a demo request (+1.4), a meeting
//! (+1.2), an executive title (+0.9) and 100–499 employees (+0.9); **weak** ones are a
//! served region (+0.1), e-mail opens (+0.05 each) and blog reads (0). Job seekers
//! (who read the careers page) almost never buy. Won deals also get onboarding
//! meetings *after* their close: bait for leakage that an honest backtest never counts.

use chrono::{DateTime, TimeDelta, Utc};

use super::{ClosedLead, Outcome};
use crate::lead::{Activity, ActivityKind, Direction, Lead};

/// A small, stable PRNG (SplitMix64): the same seed gives the same file on every
/// platform and every version of the `rand` crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits (SplitMix64's step and mix).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.f() * n as f64) as usize % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn normal(&mut self) -> f64 {
        let (a, b) = (self.f().max(1e-12), self.f());
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    }

    fn poisson(&mut self, lambda: f64) -> u32 {
        let l = (-lambda).exp();
        let (mut k, mut p) = (0, 1.0);
        loop {
            p *= self.f();
            if p <= l || k > 50 {
                return k;
            }
            k += 1;
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f() < p
    }

    /// Shuffle in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

const EXEC: &[&str] = &[
    "Генеральный директор",
    "CEO",
    "Коммерческий директор",
    "Founder",
    "Head of Sales",
    "Владелец",
];
const MANAGER: &[&str] = &["Менеджер по закупкам", "Project manager", "Менеджер"];
const OTHER_TITLE: &[&str] = &["Инженер", "Бухгалтер", "Специалист", "Аналитик"];
const TARGET: &[&str] = &[
    "Производство",
    "Логистика",
    "Оптовая торговля",
    "Ритейл",
    "Строительство",
    "IT",
];
const OTHER_INDUSTRY: &[&str] = &["Образование", "Медицина", "Финансы", "Госсектор", "HoReCa"];
const SERVED: &[&str] = &[
    "Москва",
    "Санкт-Петербург",
    "Екатеринбург",
    "Новосибирск",
    "Казань",
];
const OTHER_REGION: &[&str] = &["Самара", "Краснодар", "Владивосток", "Омск"];
const FREE: &[&str] = &["gmail.com", "mail.ru", "yandex.ru"];
const FIRST_F: &[&str] = &["Ирина", "Мария", "Ольга", "Анна"];
const FIRST_M: &[&str] = &["Алексей", "Дмитрий", "Сергей", "Павел"];
const LAST_M: &[&str] = &[
    "Соколов",
    "Иванов",
    "Петров",
    "Смирнов",
    "Кузнецов",
    "Волков",
    "Зайцев",
    "Орлов",
];
const FIRMS: &[&str] = &[
    "Строй",
    "Техно",
    "Логист",
    "Агро",
    "Мега",
    "Нова",
    "Север",
    "Урал",
];
const FIRMS2: &[&str] = &["Монтаж", "Снаб", "Пром", "Трейд", "Сервис", "Групп"];
const LOSS: &[&str] = &[
    "цена",
    "выбрали конкурента",
    "нет бюджета",
    "не отвечает",
    "не целевой",
];
const STAGES: &[&str] = &["NEW", "IN_PROCESS", "PROPOSAL", "NEGOTIATION"];
const REPS: &[&str] = &["11", "12", "13", "14", "15", "16"];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub leads: usize,
    pub seed: u64,
    /// Leads are created during the 365 days before this instant.
    pub end: DateTime<Utc>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            leads: 2500,
            seed: 16,
            end: "2026-06-30T18:00:00Z".parse().expect("valid time"),
        }
    }
}

fn act(kind: ActivityKind, at: DateTime<Utc>) -> Activity {
    Activity {
        id: String::new(),
        kind,
        direction: None,
        subject: None,
        url: None,
        at,
        contact_id: None,
        mapped_by: None,
    }
}

/// Generate `plan.leads` closed leads (deterministic for a seed).
pub fn generate(plan: &Plan) -> Vec<ClosedLead> {
    let mut r = Rng::new(plan.seed);
    let start = plan.end - TimeDelta::days(365);
    (0..plan.leads).map(|i| one(&mut r, i, start)).collect()
}

fn one(r: &mut Rng, i: usize, start: DateTime<Utc>) -> ClosedLead {
    let mut logit = -3.0;
    let name = if r.chance(0.5) {
        format!("{} {}а", r.pick(FIRST_F), r.pick(LAST_M))
    } else {
        format!("{} {}", r.pick(FIRST_M), r.pick(LAST_M))
    };
    let mut lead = Lead {
        id: (100_000 + i).to_string(),
        name: Some(name),
        source: Some(r.pick(&["WEB", "CALL", "EMAIL", "PARTNER"]).to_string()),
        ..Lead::default()
    };
    let company = format!("{}{}", r.pick(FIRMS), r.pick(FIRMS2));
    lead.company = Some(format!("ООО «{company}»"));
    let t = r.f();
    lead.position = if t < 0.25 {
        logit += 0.9;
        Some(r.pick(EXEC).into())
    } else if t < 0.6 {
        logit += 0.2;
        Some(r.pick(MANAGER).into())
    } else if t < 0.85 {
        Some(r.pick(OTHER_TITLE).into())
    } else {
        None
    };
    let e = r.f();
    let employees = if e < 0.2 {
        Some(2.0 + r.f() * 17.0)
    } else if e < 0.5 {
        logit += 0.2;
        Some(20.0 + r.f() * 79.0)
    } else if e < 0.8 {
        logit += 0.9;
        Some(100.0 + r.f() * 399.0)
    } else if e < 0.95 {
        logit += 0.4;
        Some(500.0 + r.f() * 4500.0)
    } else {
        None
    };
    lead.employees = employees.map(f64::round);
    if r.chance(0.8) {
        let per_head = 2.0e6 + r.f() * 6.0e6;
        lead.revenue = Some((employees.unwrap_or(50.0) * per_head / 1e6).round() * 1e6);
        if (300e6..3e9).contains(&lead.revenue.unwrap_or(0.0)) {
            logit += 0.3;
        }
    }
    let ind = r.f();
    lead.industry = if ind < 0.5 {
        logit += 0.5;
        Some(r.pick(TARGET).into())
    } else if ind < 0.85 {
        Some(r.pick(OTHER_INDUSTRY).into())
    } else {
        None
    };
    let reg = r.f();
    lead.region = if reg < 0.6 {
        logit += 0.1;
        Some(r.pick(SERVED).into())
    } else if reg < 0.9 {
        Some(r.pick(OTHER_REGION).into())
    } else {
        None
    };
    let m = r.f();
    let slug = format!("{}{}", i % 97, company.len());
    lead.emails = if m < 0.65 {
        vec![format!("info{slug}@corp{}.ru", i % 500)]
    } else if m < 0.95 {
        logit -= 0.4;
        vec![format!("client{slug}@{}", r.pick(FREE))]
    } else {
        Vec::new()
    };
    let rep = r.pick(REPS).to_string();
    lead.responsible_id = Some(rep.clone());

    // Hidden intent drives behaviour; job seekers read the careers page and do not buy.
    let u = r.normal();
    logit += 0.4 * u;
    let seeker = r.chance(0.07);
    let created = start + TimeDelta::minutes((r.f() * 365.0 * 1440.0) as i64);
    let life_days = 5.0 + r.f() * 70.0;
    let closed = created + TimeDelta::minutes((life_days * 1440.0) as i64);
    // Behaviour bunches toward the close, as a deal heats up.
    let when = |r: &mut Rng| {
        let frac = r.f().sqrt();
        created + TimeDelta::minutes((frac * life_days * 1440.0 * 0.98) as i64)
    };
    let mut acts = Vec::new();
    if !seeker && r.chance(sigmoid(-1.6 + 1.2 * u)) {
        logit += 1.4;
        acts.push(act(ActivityKind::DemoRequest, when(r)));
    }
    if r.chance(sigmoid(-1.2 + 0.8 * u)) {
        logit += 0.5;
        let mut a = act(ActivityKind::Download, when(r));
        a.subject = Some("Прайс-лист 2026.pdf".into());
        acts.push(a);
    }
    for _ in 0..r.poisson((-0.3 + 0.5 * u).exp()) {
        logit += 0.15;
        let mut a = act(ActivityKind::PageView, when(r));
        a.url = Some("/pricing".into());
        acts.push(a);
    }
    for _ in 0..r.poisson(1.5) {
        let mut a = act(ActivityKind::PageView, when(r));
        a.url = Some(format!("/blog/{}", r.below(40)));
        acts.push(a);
    }
    for _ in 0..r.poisson(2.0) {
        logit += 0.05;
        acts.push(act(ActivityKind::EmailOpen, when(r)));
    }
    for _ in 0..r.poisson((-1.2 + 0.6 * u).exp()) {
        logit += 0.4;
        let mut a = act(ActivityKind::Call, when(r));
        a.direction = Some(Direction::Incoming);
        acts.push(a);
    }
    if !seeker && r.chance(sigmoid(-1.5 + 1.0 * u)) {
        logit += 1.2;
        acts.push(act(ActivityKind::Meeting, when(r)));
    }
    if seeker {
        logit -= 2.5;
        let mut a = act(ActivityKind::PageView, when(r));
        a.url = Some("/careers".into());
        acts.push(a);
    }
    let won = r.chance(sigmoid(logit));
    if won {
        // Onboarding after the deal: must never count in a backtest.
        for k in 1..=1 + r.below(2) {
            acts.push(act(
                ActivityKind::Meeting,
                closed + TimeDelta::days(2 * k as i64),
            ));
        }
    }
    acts.sort_by_key(|a| a.at);
    let size = employees.unwrap_or(50.0).max(5.0).sqrt() * 30_000.0 * (0.5 + r.f());
    ClosedLead {
        lead,
        activities: acts,
        created_at: created,
        closed_at: closed,
        outcome: if won { Outcome::Won } else { Outcome::Lost },
        amount: Some((size / 1000.0).round() * 1000.0),
        rep_id: Some(rep),
        loss_reason: (!won).then(|| r.pick(LOSS).to_string()),
        stage: Some(if won {
            "WON".into()
        } else {
            r.pick(STAGES).to_string()
        }),
        fit_history: None,
    }
}

/// Drop nulls, empty strings, arrays and objects, and write whole numbers without
/// `.0`, so the shipped file stays small.
fn prune(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => false,
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                *v = Value::from(f as i64);
            }
            true
        }
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => {
            a.retain_mut(prune);
            !a.is_empty()
        }
        Value::Object(o) => {
            o.retain(|_, x| prune(x));
            !o.is_empty()
        }
        _ => true,
    }
}

/// The leads as JSON Lines, without empty keys.
pub fn to_jsonl(leads: &[ClosedLead]) -> String {
    let mut out = String::new();
    for c in leads {
        let mut v = serde_json::to_value(c).expect("a closed lead serialises");
        prune(&mut v);
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_history_and_it_reads_back() {
        let plan = Plan {
            leads: 200,
            ..Plan::default()
        };
        let a = to_jsonl(&generate(&plan));
        assert_eq!(a, to_jsonl(&generate(&plan)));
        let other = to_jsonl(&generate(&Plan { seed: 17, ..plan }));
        assert_ne!(a, other);
        let back = super::super::history::read_jsonl(&a, "gen").unwrap();
        assert_eq!(back.len(), 200);
        // The reader fills the lead's created_at from the record's.
        let mut expected = generate(&plan);
        for c in &mut expected {
            c.lead.created_at = Some(c.created_at);
        }
        assert_eq!(back, expected);
        let wins = back.iter().filter(|c| c.outcome == Outcome::Won).count();
        assert!((20..120).contains(&wins), "{wins} wins of 200");
    }
}
