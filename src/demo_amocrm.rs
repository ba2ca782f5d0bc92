//! `leadscore demo --crm amocrm`: the same day in fast-forward on a sandbox amoCRM
//! account (API v4, 7 requests/s, v2-shaped form webhooks, single-use refresh tokens).
//!
//! Lead fit data lives in custom fields (industry, revenue, headcount, region) and on
//! the main contact (job title, e-mail); behaviour arrives as notes tagged `[demo]`,
//! `[download]`, `[page] URL`, `[email_open]` (what a site tracker or form handler would
//! post) and as call events.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use leadscore_amocrm_sandbox::{
    FieldSpec, FieldType, FieldValue, NewContact, NewLead, Sandbox, SandboxHandle, SandboxOptions,
};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config::{self, Config};
use crate::crm::FieldSetup;
use crate::pipeline::Pipeline;
use crate::store::{Crossing, Store};

/// The demo's portal id (webhook path `/webhooks/amocrm/demo?secret=…`).
pub const PORTAL: &str = "demo";

/// Custom field ids of the fit data the demo creates in the account.
#[derive(Debug, Clone, Copy)]
pub struct FitFields {
    pub industry: u64,
    pub revenue: u64,
    pub employees: u64,
    pub region: u64,
}

/// Create the account's fit-data fields (an admin would already have them).
pub fn create_fit_fields(sandbox: &SandboxHandle) -> FitFields {
    let f = |name: &str, t: FieldType| sandbox.create_lead_field(FieldSpec::new(name, t)).id;
    FitFields {
        industry: f("Отрасль", FieldType::Text),
        revenue: f("Выручка, ₽", FieldType::Numeric),
        employees: f("Сотрудников", FieldType::Numeric),
        region: f("Регион", FieldType::Text),
    }
}

/// The demo config for an amoCRM sandbox: the example's `[scoring]` with an amoCRM
/// portal (long-lived token) whose field mapping points at `fit`.
pub fn config_text(
    data_dir: &Path,
    sandbox: &SandboxHandle,
    webhook_secret: &str,
    fit: FitFields,
) -> anyhow::Result<String> {
    let scoring = crate::demo::example_scoring_toml()?;
    let token = sandbox
        .long_lived_token()
        .context("the sandbox issued no long-lived token")?;
    let server = crate::demo::server_section(data_dir);
    Ok(format!(
        r#"# Written by `leadscore demo --crm amocrm`.
{server}
[[portal]]
id = "{PORTAL}"
crm = "amocrm"
base_url = {base:?}
access_token = {token:?}
webhook_secret = {webhook_secret:?}
account_id = "{account}"
subdomain = {subdomain:?}

[portal.fields]
score = "0"
tier = "0"
breakdown = "0"
comment = true
tier_values = {{ cold = "0", warm = "0", hot = "0" }}

[portal.fields.map]
industry = "{industry}"
revenue = "{revenue}"
employees = "{employees}"
region = "{region}"

[portal.task]
deadline_minutes = 30

{scoring}"#,
        base = sandbox.base_url(),
        token = token.expose_secret(),
        account = sandbox.account_id(),
        subdomain = sandbox.subdomain(),
        industry = fit.industry,
        revenue = fit.revenue,
        employees = fit.employees,
        region = fit.region,
    ))
}

/// An amoCRM sandbox made ready for the daemon.
pub struct Prepared {
    pub config: Config,
    pub store: Arc<Store>,
    pub config_path: PathBuf,
    pub setup: FieldSetup,
    pub fit: FitFields,
}

/// Write the config, create the score/tier/breakdown fields the way `leadscore setup`
/// does, and return the config with their ids filled in.
pub async fn prepare(
    sandbox: &SandboxHandle,
    dir: &Path,
    webhook_secret: &str,
) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let fit = create_fit_fields(sandbox);
    let text = config_text(dir, sandbox, webhook_secret, fit)?;
    let config_path = dir.join("demo.toml");
    std::fs::write(&config_path, &text)?;
    let mut config =
        config::load(&config_path).map_err(|e| anyhow::anyhow!("demo config is invalid:\n{e}"))?;
    let store = app::open_store(&config)?;
    let tiers = app::tier_pairs(&config);
    let portal = &config.portals[0];
    let setup = app::build_admin(portal, &store)?
        .setup_fields(&portal.fields, &tiers)
        .await
        .context("setup failed")?;
    let fields = &mut config.portals[0].fields;
    fields.score = Some(setup.score_field.clone());
    fields.tier = Some(setup.tier_field.clone());
    fields.breakdown = Some(setup.breakdown_field.clone());
    fields.tier_values = setup.tier_values.clone();
    let values = setup
        .tier_values
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = text
        .replace(
            "score = \"0\"\ntier = \"0\"\nbreakdown = \"0\"",
            &format!(
                "score = \"{}\"\ntier = \"{}\"\nbreakdown = \"{}\"",
                setup.score_field, setup.tier_field, setup.breakdown_field
            ),
        )
        .replace(
            r#"tier_values = { cold = "0", warm = "0", hot = "0" }"#,
            &format!("tier_values = {{ {values} }}"),
        );
    std::fs::write(&config_path, text)?;
    // `setup` used its own client (in real life: its own process). amoCRM counts 7
    // requests per second per integration across both, so let setup's requests leave
    // the one-second window before the daemon's client starts with a full allowance.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    Ok(Prepared {
        config,
        store,
        config_path,
        setup,
        fit,
    })
}

/// Subscribe the daemon to lead changes and notes, as an admin does under
/// Settings → Integrations → Web hooks.
pub fn add_webhook(sandbox: &SandboxHandle, hook_url: &str, secret: &str) -> u64 {
    sandbox.add_webhook(
        &format!("{hook_url}?secret={secret}"),
        &["add_lead", "update_lead", "status_lead", "note_lead"],
    )
}

/// One seed lead.
struct Seed {
    name: &'static str,
    position: &'static str,
    email: &'static str,
    industry: &'static str,
    revenue: Option<f64>,
    employees: Option<f64>,
    region: &'static str,
    notes: &'static [&'static str],
}

const SEEDS: &[Seed] = &[
    Seed {
        name: "Анна Смирнова",
        position: "Генеральный директор",
        email: "a.smirnova@severlog.ru",
        industry: "Логистика",
        revenue: Some(8e8),
        employees: Some(240.0),
        region: "Москва",
        notes: &[
            "[page] https://example.ru/pricing",
            "[demo] Заявка на демо",
            "[download] Прайс-лист 2026",
        ],
    },
    Seed {
        name: "Игорь Петров",
        position: "Коммерческий директор",
        email: "petrov@uralsteel.ru",
        industry: "Производство",
        revenue: Some(2.5e9),
        employees: Some(450.0),
        region: "Екатеринбург",
        notes: &["[demo] Заявка на демо"],
    },
    Seed {
        name: "Мария Кузнецова",
        position: "Менеджер по закупкам",
        email: "m.kuznetsova@optmarket.ru",
        industry: "Оптовая торговля",
        revenue: Some(1.2e8),
        employees: Some(60.0),
        region: "Казань",
        notes: &["[download] Прайс-лист", "[email_open] Рассылка"],
    },
    Seed {
        name: "Дмитрий Волков",
        position: "Студент",
        email: "dima.volkov@gmail.com",
        industry: "",
        revenue: None,
        employees: None,
        region: "",
        notes: &["[page] https://example.ru/careers"],
    },
    Seed {
        name: "Елена Соколова",
        position: "Директор по развитию",
        email: "sokolova@stroyinvest.ru",
        industry: "Строительство",
        revenue: Some(6e8),
        employees: Some(180.0),
        region: "Санкт-Петербург",
        notes: &["[meeting] Презентация"],
    },
    Seed {
        name: "Ольга Новикова",
        position: "Head of IT",
        email: "o.novikova@retailgroup.ru",
        industry: "Ритейл",
        revenue: Some(4e9),
        employees: Some(1200.0),
        region: "Москва",
        notes: &[
            "[page] https://example.ru/blog/crm",
            "[page] https://example.ru/blog/tips",
        ],
    },
    Seed {
        name: "Сергей Лебедев",
        position: "Менеджер",
        email: "lebedev@mail.ru",
        industry: "Услуги",
        revenue: None,
        employees: Some(3.0),
        region: "Новосибирск",
        notes: &[],
    },
    Seed {
        name: "Павел Егоров",
        position: "CEO",
        email: "pavel@cloudify.io",
        industry: "IT",
        revenue: Some(9e7),
        employees: Some(45.0),
        region: "Москва",
        notes: &["[demo] Заявка на демо", "[page] https://example.ru/pricing"],
    },
    Seed {
        name: "Роман Алексеев",
        position: "Директор по закупкам",
        email: "alekseev@foodsnab.ru",
        industry: "Оптовая торговля",
        revenue: Some(7e8),
        employees: Some(130.0),
        region: "Ленинградская область",
        notes: &["[download] Прайс-лист"],
    },
    Seed {
        name: "Екатерина Степанова",
        position: "",
        email: "kate.stepanova@gmail.com",
        industry: "",
        revenue: None,
        employees: None,
        region: "",
        notes: &["[page] https://example.ru/blog/post"],
    },
];

/// Wait until the account has delivered every webhook and the daemon is idle.
async fn settle(
    sandbox: &SandboxHandle,
    pipeline: &Pipeline,
    limit: Duration,
) -> anyhow::Result<()> {
    crate::demo::settle_with(
        || sandbox.settle(),
        || sandbox.pending_deliveries(),
        pipeline,
        limit,
    )
    .await
}

fn text_of(lead: &leadscore_amocrm_sandbox::Lead, field: &str) -> String {
    let Ok(id) = field.parse::<u64>() else {
        return String::new();
    };
    lead.fields
        .iter()
        .find(|f| f.field_id == id)
        .and_then(|f| f.values.first())
        .map(|v| match &v.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// Run the amoCRM demo, printing to `out`.
pub async fn run(data_dir: Option<PathBuf>, out: &mut dyn Write) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = match data_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "leadscore-demo-amocrm-{}",
            Utc::now().format("%Y%m%d-%H%M%S")
        )),
    };
    writeln!(
        out,
        "leadscore demo: a sandbox amoCRM account (7 req/s), {} leads, the seed model\n",
        SEEDS.len()
    )?;
    let sandbox = Sandbox::start(SandboxOptions::default())
        .await
        .context("cannot start the sandbox")?;
    let secret = crate::demo::random_token(32);
    let Prepared {
        config,
        store,
        config_path,
        setup,
        fit,
    } = prepare(&sandbox, &dir, &secret).await?;
    writeln!(
        out,
        "setup: created lead fields {} (tier values {:?})",
        setup.created.join(", "),
        setup.tier_values
    )?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let running =
        app::start_with_store(config.clone(), store.clone(), listener, shutdown.clone()).await?;
    let pipeline = running.pipeline.clone();
    let hook = format!("http://{}/webhooks/amocrm/{PORTAL}", running.addr);
    add_webhook(&sandbox, &hook, &secret);
    writeln!(
        out,
        "daemon: listening on {}, web hook added\n",
        running.addr
    )?;

    // Phase 1: leads arrive with their main contact.
    let mut ids = Vec::new();
    for s in SEEDS {
        let contact = sandbox.add_contact(NewContact {
            name: s.name.to_string(),
            position: (!s.position.is_empty()).then(|| s.position.to_string()),
            emails: vec![s.email.to_string()],
            phones: Vec::new(),
            responsible_user_id: None,
            company_id: None,
        })?;
        let mut fields = Vec::new();
        if !s.industry.is_empty() {
            fields.push((fit.industry, FieldValue::Text(s.industry.into())));
        }
        if let Some(r) = s.revenue {
            fields.push((fit.revenue, FieldValue::Number(r)));
        }
        if let Some(e) = s.employees {
            fields.push((fit.employees, FieldValue::Number(e)));
        }
        if !s.region.is_empty() {
            fields.push((fit.region, FieldValue::Text(s.region.into())));
        }
        let mut lead = NewLead::named(&format!("Заявка: {}", s.name));
        lead.fields = fields;
        let id = sandbox.add_lead(lead)?;
        sandbox.link_contact(id, contact, true)?;
        ids.push(id);
    }
    // Linking the contact is a change too: tell the daemon, as amoCRM's own hook would.
    settle(&sandbox, &pipeline, Duration::from_secs(60)).await?;
    writeln!(out, "phase 1: {} new leads scored", ids.len())?;

    // Phase 2: behaviour arrives as tagged notes (each fires note_lead).
    for (s, id) in SEEDS.iter().zip(&ids) {
        for n in s.notes {
            sandbox.add_note(*id, "common", json!({"text": n}))?;
        }
    }
    settle(&sandbox, &pipeline, Duration::from_secs(60)).await?;
    writeln!(
        out,
        "phase 2: notes arrived; {} call-now task(s) created\n",
        sandbox.tasks().len()
    )?;

    let tasks = sandbox.tasks();
    let score_field = &config.portals[0].fields.score;
    let why_field = &config.portals[0].fields.breakdown;
    let mut rows = Vec::new();
    for (s, id) in SEEDS.iter().zip(&ids) {
        let lead = sandbox.lead(*id).context("lead vanished")?;
        let score = score_field
            .as_deref()
            .map(|f| text_of(&lead, f))
            .unwrap_or_default();
        let why = why_field
            .as_deref()
            .map(|f| text_of(&lead, f))
            .unwrap_or_default();
        let tier = why
            .split(':')
            .next()
            .and_then(|h| h.split(" — ").nth(1))
            .unwrap_or("")
            .to_string();
        let has_task = tasks.iter().any(|t| t.entity_id == Some(*id));
        rows.push((
            score.parse::<i32>().unwrap_or(0),
            *id,
            s.name,
            score,
            tier,
            has_task,
            why,
        ));
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    writeln!(
        out,
        "{:>8}  {:<22} {:>5}  {:<9} {:<5} why",
        "lead", "name", "score", "tier", "task"
    )?;
    for (_, id, name, score, tier, has_task, why) in &rows {
        let rest = why.split_once(": ").map(|(_, r)| r).unwrap_or(why);
        writeln!(
            out,
            "{:>8}  {:<22} {:>5}  {:<9} {:<5} {}",
            id,
            name,
            score,
            tier,
            if *has_task { "yes" } else { "" },
            crate::demo::shorten(rest, 110)
        )?;
    }
    let requests = sandbox
        .calls()
        .iter()
        .filter(|c| c.path.starts_with("/api/"))
        .count();
    writeln!(out)?;
    writeln!(
        out,
        "API requests: {requests} ({:.2} per lead), 429s: {}, blocked: {}",
        requests as f64 / ids.len() as f64,
        sandbox.count_status(429),
        sandbox.blocked()
    )?;
    writeln!(
        out,
        "web hooks delivered: {}, call-now tasks: {}, notes written by leadscore: {}",
        sandbox.deliveries().len(),
        tasks.len(),
        ids.iter()
            .map(|id| sandbox
                .notes(*id)
                .iter()
                .filter(|n| n.params.to_string().contains("[leadscore]"))
                .count())
            .sum::<usize>()
    )?;
    let fired = store
        .crossings_all(PORTAL)?
        .iter()
        .filter(|(_, c)| matches!(c, Crossing::Fired { .. }))
        .count();
    writeln!(out, "crossings recorded in sled: {fired}")?;

    shutdown.cancel();
    running.handle.await.context("daemon task panicked")??;
    drop(pipeline);
    sandbox.shutdown().await;
    crate::demo::print_epilogue(out, started, &dir, &config_path, PORTAL, ids[0])?;
    Ok(())
}
