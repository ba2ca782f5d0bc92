//! Throughput of the scoring engine on the example config: one well-filled lead with
//! 20 activities of mixed kinds, the realistic worst case for a webhook-driven re-score.
//!
//! Run: `cargo bench --bench scoring -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use leadscore::config::schema::FileConfig;
use leadscore::lead::{Activity, ActivityKind, Direction, Lead};
use leadscore::scoring::{Language, Model};

const EXAMPLE: &str = include_str!("../config/leadscore.example.toml");

fn now() -> DateTime<Utc> {
    "2026-11-20T12:00:00Z".parse().unwrap()
}

fn lead() -> Lead {
    Lead {
        id: "4711".into(),
        name: Some("Ирина Соколова".into()),
        position: Some("Генеральный директор".into()),
        emails: vec!["i.sokolova@stroymontazh.ru".into()],
        phones: vec!["+7 495 123-45-67".into()],
        company: Some("ООО «СтройМонтаж»".into()),
        industry: Some("Строительство".into()),
        revenue: Some(850_000_000.0),
        employees: Some(240.0),
        region: Some("Москва".into()),
        source: Some("WEB".into()),
        status: Some("NEW".into()),
        responsible_id: Some("17".into()),
        ..Lead::default()
    }
}

/// kind, subject, url, direction, age in days.
type ActivityRow = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<Direction>,
    f64,
);

/// 20 activities over the last five weeks, newest first (as the CRM lists them).
fn activities() -> Vec<Activity> {
    let spec: [ActivityRow; 20] = [
        (
            "page_view",
            None,
            Some("https://stroy.example.ru/pricing"),
            None,
            0.1,
        ),
        ("demo_request", Some("Заявка на демо"), None, None, 0.2),
        ("email_open", Some("Ваше КП"), None, None, 0.5),
        (
            "page_view",
            None,
            Some("https://stroy.example.ru/blog/crm-for-builders"),
            None,
            1.0,
        ),
        ("download", Some("Прайс-лист 2026.pdf"), None, None, 1.5),
        (
            "call",
            Some("Вопрос по внедрению"),
            None,
            Some(Direction::Incoming),
            2.0,
        ),
        (
            "page_view",
            None,
            Some("https://stroy.example.ru/blog/lead-scoring"),
            None,
            3.0,
        ),
        ("email_open", Some("Дайджест"), None, None, 4.0),
        (
            "page_view",
            None,
            Some("https://stroy.example.ru/%D1%86%D0%B5%D0%BD%D1%8B"),
            None,
            5.0,
        ),
        (
            "email",
            Some("Re: КП"),
            None,
            Some(Direction::Outgoing),
            6.0,
        ),
        (
            "page_view",
            None,
            Some("https://stroy.example.ru/"),
            None,
            7.0,
        ),
        ("meeting", Some("Знакомство"), None, None, 9.0),
        (
            "page_view",
            None,
            Some("https://stroy.example.ru/blog/pipeline"),
            None,
            11.0,
        ),
        ("email_open", Some("Вебинар"), None, None, 13.0),
        (
            "call",
            Some("Холодный звонок"),
            None,
            Some(Direction::Outgoing),
            15.0,
        ),
        (
            "page_view",
            None,
            Some("https://stroy.example.ru/cases"),
            None,
            18.0,
        ),
        ("form", Some("Подписка"), None, None, 21.0),
        (
            "page_view",
            None,
            Some("https://stroy.example.ru/blog/kpi"),
            None,
            25.0,
        ),
        ("email_open", Some("Welcome"), None, None, 30.0),
        (
            "page_view",
            None,
            Some("https://stroy.example.ru/careers"),
            None,
            35.0,
        ),
    ];
    spec.iter()
        .enumerate()
        .map(|(i, (kind, subject, url, direction, days))| Activity {
            id: format!("a{i}"),
            kind: ActivityKind::from_name(kind),
            direction: *direction,
            subject: subject.map(str::to_string),
            url: url.map(str::to_string),
            at: now() - TimeDelta::milliseconds((days * 86_400_000.0) as i64),
            contact_id: Some("c1".into()),
            mapped_by: None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cfg: FileConfig = toml::from_str(EXAMPLE).expect("example config parses");
    let model = Model::compile(&cfg.scoring).expect("example model compiles");
    let lead = lead();
    let acts = activities();
    let now = now();
    let s = model.score(&lead, &acts, now);
    assert_eq!(model.total_only(&lead, &acts, now), s.total);
    eprintln!("bench lead: {}", s.explain(Language::Ru, now));

    let mut g = c.benchmark_group("scoring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("total_only/example/20_activities", |b| {
        b.iter(|| model.total_only(black_box(&lead), black_box(&acts), black_box(now)))
    });
    g.bench_function("score/example/20_activities", |b| {
        b.iter(|| model.score(black_box(&lead), black_box(&acts), black_box(now)))
    });
    let mut shuffled = acts.clone();
    shuffled.swap(0, 7);
    shuffled.swap(3, 15);
    g.bench_function("total_only/example/20_activities_unsorted", |b| {
        b.iter(|| model.total_only(black_box(&lead), black_box(&shuffled), black_box(now)))
    });
    g.bench_function("explain/example/20_activities", |b| {
        b.iter(|| black_box(&s).explain(Language::Ru, black_box(now)))
    });
    g.bench_function("next_change/example/20_activities", |b| {
        b.iter(|| model.next_change(black_box(&lead), black_box(&acts), black_box(now)))
    });

    // The same lead under the example model with its commented BANT block switched on
    // (issue 18): the gate's cost on top of the model.
    let bant = bant_model();
    let mut qlead = lead.clone();
    qlead.custom.insert("need".into(), "склад".into());
    qlead
        .custom
        .insert("purchase_date".into(), "2027-01-15".into());
    let q = bant.score(&qlead, &acts, now);
    assert_eq!(bant.total_only(&qlead, &acts, now), q.total);
    eprintln!("bench lead (BANT): {}", q.explain(Language::Ru, now));
    g.bench_function("total_only/bant/20_activities", |b| {
        b.iter(|| bant.total_only(black_box(&qlead), black_box(&acts), black_box(now)))
    });
    g.bench_function("score/bant/20_activities", |b| {
        b.iter(|| bant.score(black_box(&qlead), black_box(&acts), black_box(now)))
    });
    g.bench_function("next_change/bant/20_activities", |b| {
        b.iter(|| bant.next_change(black_box(&qlead), black_box(&acts), black_box(now)))
    });
    g.finish();
}

/// The example model with the example's commented `[scoring.qualification]` block.
fn bant_model() -> Model {
    let start = EXAMPLE
        .find("# [scoring.qualification]")
        .expect("the example has a BANT block");
    let block: String = EXAMPLE[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| {
            l.strip_prefix("# ")
                .unwrap_or(l.trim_start_matches('#'))
                .to_string()
                + "\n"
        })
        .collect();
    let text = format!("{EXAMPLE}\n{block}");
    let cfg: FileConfig = toml::from_str(&text).expect("example config with BANT parses");
    Model::compile(&cfg.scoring).expect("BANT model compiles")
}

criterion_group!(benches, bench);
criterion_main!(benches);
