//! Property tests of the scoring engine on the example model: bounds, the breakdown's
//! arithmetic, monotonicity in positive activity, determinism, and `next_change`.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use leadscore::config::schema::FileConfig;
use leadscore::lead::{Activity, ActivityKind, Direction, Lead};
use leadscore::scoring::{Model, Score};

const EXAMPLE: &str = include_str!("../../config/leadscore.example.toml");

fn model() -> &'static Model {
    static MODEL: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let cfg: FileConfig = toml::from_str(EXAMPLE).expect("example parses");
        Model::compile(&cfg.scoring).expect("example compiles")
    })
}

fn now() -> DateTime<Utc> {
    "2026-11-20T12:00:00Z".parse().unwrap()
}

fn opt_of(items: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::sample::select(items).prop_map(str::to_string))
}

fn lead_strategy() -> impl Strategy<Value = Lead> {
    (
        opt_of(&[
            "Генеральный директор",
            "CEO",
            "Менеджер",
            "Sales manager",
            "Бухгалтер",
            "  ",
        ]),
        proptest::collection::vec(
            proptest::sample::select(&["a@gmail.com", "b@corp.ru", "c@Mail.RU", "broken", ""][..]),
            0..3,
        ),
        opt_of(&["Производство", "IT", "Сельское хозяйство", "retail"]),
        opt_of(&["Москва", "Тверь", "казань"]),
        proptest::option::of(0.0f64..5_000.0),
        proptest::option::of(0.0f64..5e9),
    )
        .prop_map(
            |(position, emails, industry, region, employees, revenue)| Lead {
                id: "1".into(),
                position,
                emails: emails.into_iter().map(str::to_string).collect(),
                industry,
                region,
                employees,
                revenue,
                ..Lead::default()
            },
        )
}

/// Activities of every kind the example model looks at (and some it does not), from
/// two days in the future to 70 days ago.
fn activity_strategy() -> impl Strategy<Value = Activity> {
    (
        proptest::sample::select(
            &[
                "demo_request",
                "download",
                "page_view",
                "email_open",
                "call",
                "meeting",
                "email",
                "webinar",
            ][..],
        ),
        proptest::sample::select(
            &[
                "https://x.ru/pricing",
                "https://x.ru/blog/a",
                "https://x.ru/careers",
                "https://x.ru/",
                "https://x.ru/%D1%86%D0%B5%D0%BD%D1%8B",
            ][..],
        ),
        proptest::sample::select(&["Прайс.pdf", "КП", "Вопрос"][..]),
        proptest::option::of(prop_oneof![
            Just(Direction::Incoming),
            Just(Direction::Outgoing)
        ]),
        -2 * 86_400i64..70 * 86_400,
    )
        .prop_map(|(kind, url, subject, direction, age_secs)| Activity {
            id: String::new(),
            kind: ActivityKind::from_name(kind),
            direction,
            subject: Some(subject.to_string()),
            url: Some(url.to_string()),
            at: now() - TimeDelta::seconds(age_secs),
            contact_id: None,
            mapped_by: None,
        })
}

/// An activity that only positive rules of the example model match: a demo request,
/// a price-list download, a pricing or blog page view, an e-mail open, an incoming
/// call or a meeting.
fn positive_activity_strategy() -> impl Strategy<Value = Activity> {
    (
        0usize..7,
        proptest::sample::select(
            &[
                "https://x.ru/pricing",
                "https://x.ru/blog/z",
                "https://x.ru/цены",
            ][..],
        ),
        -2 * 86_400i64..70 * 86_400,
    )
        .prop_map(|(k, url, age_secs)| {
            let (kind, subject, url, direction) = match k {
                0 => ("demo_request", None, None, None),
                1 => ("download", Some("Прайс-лист"), None, None),
                2 => ("page_view", None, Some(url), None),
                3 => ("email_open", None, None, None),
                4 => ("call", None, None, Some(Direction::Incoming)),
                5 => ("meeting", None, None, None),
                _ => ("page_view", None, Some("https://x.ru/blog/y"), None),
            };
            Activity {
                id: String::new(),
                kind: ActivityKind::from_name(kind),
                direction,
                subject: subject.map(str::to_string),
                url: url.map(str::to_string),
                at: now() - TimeDelta::seconds(age_secs),
                contact_id: None,
                mapped_by: None,
            }
        })
}

fn sums_hold(s: &Score, m: &Model) -> Result<(), TestCaseError> {
    let entries: i64 = s.breakdown.iter().map(|e| i64::from(e.points)).sum();
    let groups: i64 = s.groups.iter().map(|g| i64::from(g.points)).sum();
    prop_assert_eq!(entries, i64::from(s.unclamped));
    prop_assert_eq!(groups, i64::from(s.unclamped));
    prop_assert_eq!(s.total, s.unclamped.clamp(m.min(), m.max()));
    prop_assert!(s.total >= m.min() && s.total <= m.max());
    prop_assert_eq!(&s.tier, &m.tier_for(s.total).id);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn score_is_bounded_and_the_breakdown_sums(
        lead in lead_strategy(),
        acts in proptest::collection::vec(activity_strategy(), 0..25),
    ) {
        let m = model();
        let s = m.score(&lead, &acts, now());
        sums_hold(&s, m)?;
        prop_assert_eq!(m.total_only(&lead, &acts, now()), s.total);
    }

    #[test]
    fn adding_a_positive_activity_never_lowers_the_score(
        lead in lead_strategy(),
        acts in proptest::collection::vec(activity_strategy(), 0..20),
        extra in positive_activity_strategy(),
        at in 0usize..20,
    ) {
        let m = model();
        let before = m.score(&lead, &acts, now());
        let mut more = acts.clone();
        more.insert(at.min(more.len()), extra);
        let after = m.score(&lead, &more, now());
        sums_hold(&after, m)?;
        prop_assert!(after.total >= before.total, "{} -> {}", before.total, after.total);
        prop_assert!(after.unclamped >= before.unclamped);
    }

    #[test]
    fn scoring_is_deterministic_and_order_independent(
        lead in lead_strategy(),
        acts in proptest::collection::vec(activity_strategy(), 0..20),
        seed in any::<u64>(),
    ) {
        let m = model();
        let a = m.score(&lead, &acts, now());
        let b = m.score(&lead, &acts, now());
        prop_assert_eq!(&a, &b);
        // A deterministic shuffle.
        let mut shuffled = acts.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(&m.score(&lead, &shuffled, now()), &a);
        prop_assert_eq!(a.explain(m.language(), now()), b.explain(m.language(), now()));
    }

    #[test]
    fn next_change_is_the_first_change(
        lead in lead_strategy(),
        acts in proptest::collection::vec(activity_strategy(), 0..12),
        frac in 0.0f64..1.0,
    ) {
        let m = model();
        let base = m.score(&lead, &acts, now());
        match m.next_change(&lead, &acts, now()) {
            None => {
                // Nothing will change: far in the future the score is the same.
                let later = now() + TimeDelta::days(3650);
                prop_assert_eq!(m.score(&lead, &acts, later), base);
            }
            Some(t) => {
                prop_assert!(t > now());
                prop_assert_ne!(&m.score(&lead, &acts, t), &base);
                let span = (t - now()).num_milliseconds();
                let probe = now() + TimeDelta::milliseconds((span as f64 * frac) as i64);
                // Decay steps are reported rounded up to the whole second.
                if probe < t - TimeDelta::seconds(1) {
                    prop_assert_eq!(m.score(&lead, &acts, probe), base);
                }
            }
        }
    }
}
