//! The demo's deal funnel: a second sandbox portal, in Bitrix24's simple CRM mode (no
//! leads, only deals), whose eight deals sit across the standard funnel. The daemon
//! scores them, writes each deal's weighted value (amount × its stage's coefficient) to
//! the card, and the sums per rep and per pipeline are what `leadscore status` prints:
//! a sales lead sees how much of the funnel is real money, not only its face value.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::demo::{shorten, PORTAL};
use crate::demo_portal::{Scene, ScenePortal};
use crate::status::{self, PortalSpec};
use crate::weighted::BITRIX24_FUNNEL;

/// The deals: title, stage, amount, rep, and whether the customer asked for a demo.
const DEALS: [(&str, &str, u32, &str, bool); 8] = [
    ("Станки для «Ромашки»", "NEW", 1_200_000, "1", false),
    (
        "Линия упаковки, ЗАО «Вектор»",
        "PREPARATION",
        800_000,
        "1",
        true,
    ),
    (
        "Сервисный контракт «Полюс»",
        "PREPARATION",
        300_000,
        "3",
        false,
    ),
    (
        "Склад для «Северстрой»",
        "PREPAYMENT_INVOICE",
        2_500_000,
        "3",
        true,
    ),
    (
        "Модернизация цеха, ООО «Мир»",
        "EXECUTING",
        1_000_000,
        "1",
        true,
    ),
    ("Запчасти «Техмаш»", "FINAL_INVOICE", 450_000, "3", false),
    (
        "Пилот для «Альфа-Логистики»",
        "EXECUTING",
        600_000,
        "3",
        false,
    ),
    ("Поставка «Кедр» (оплачено)", "WON", 700_000, "1", false),
];

/// The deals portal's config: the demo's, with `entities = ["deal"]`, the
/// weighted-value field and the funnel's coefficients.
fn deals_config(text: String) -> String {
    text.replacen(
        "crm = \"bitrix24\"\n",
        "crm = \"bitrix24\"\nentities = [\"deal\"]\n",
        1,
    )
    .replacen(
        "[portal.fields.map]\n",
        "[portal.fields.deal]\nexpected_value = \"UF_CRM_LEADSCORE_EV\"\n\n[portal.fields.map]\n",
        1,
    )
    .replacen(
        "[scoring]\n",
        &format!("[portal.stages.pipelines.\"0\"]\n{BITRIX24_FUNNEL}\n[scoring]\n"),
        1,
    )
}

/// Run the funnel: portal, setup, daemon, deals, then the table and the sums.
pub async fn run(dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let portal = ScenePortal::start(
        dir,
        Scene {
            name: "deals",
            simple_mode: true,
            edit: &deals_config,
            events: &["ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMACTIVITYADD"],
        },
    )
    .await?;
    anyhow::ensure!(
        !portal.config.portals[0].stages.is_empty(),
        "the demo config template changed: the deal funnel has no stages"
    );
    writeln!(
        out,
        "\nphase 4: a portal in the simple CRM mode (deals only); setup: {}",
        portal.setup.notes.join(" ")
    )?;
    let sandbox = &portal.sandbox;
    let mut ids = Vec::new();
    for (title, stage, amount, rep, _) in DEALS {
        ids.push(sandbox.add_deal(json!({
            "TITLE": title,
            "STAGE_ID": stage,
            "CATEGORY_ID": "0",
            "OPPORTUNITY": format!("{amount}.00"),
            "ASSIGNED_BY_ID": rep,
            "UF_CRM_INDUSTRY": "Производство",
            "UF_CRM_REVENUE": "800000000",
            "UF_CRM_EMPLOYEES": "240",
            "UF_CRM_REGION": "Москва",
        }))?);
    }
    for (id, (.., demo)) in ids.iter().zip(DEALS) {
        if demo {
            sandbox.add_activity(json!({
                "OWNER_TYPE_ID": 2, "OWNER_ID": id, "TYPE_ID": 6, "PROVIDER_ID": "REST_APP",
                "SUBJECT": "[demo] Заявка на демо", "COMPLETED": "Y",
            }))?;
        }
    }
    portal.settle().await?;

    writeln!(
        out,
        "{:>4}  {:<30} {:<18} {:>11} {:>11} {:>5}  task",
        "deal", "title", "stage", "amount", "weighted", "score"
    )?;
    let tasks = sandbox.tasks();
    for id in &ids {
        let d = sandbox.get_deal(*id).unwrap_or(Value::Null);
        let text = |k: &str| {
            d[k].as_str()
                .map(str::to_string)
                .or_else(|| d[k].as_f64().map(|n| n.to_string()))
                .unwrap_or_default()
        };
        let number = |k: &str| text(k).parse::<f64>().ok();
        let has_task = tasks
            .iter()
            .any(|t| t.crm_bindings.iter().any(|b| b == &format!("D_{id}")));
        writeln!(
            out,
            "{:>4}  {:<30} {:<18} {:>11.0} {:>11} {:>5}  {}",
            id,
            shorten(&text("TITLE"), 30),
            text("STAGE_ID"),
            number("OPPORTUNITY").unwrap_or(0.0),
            number("UF_CRM_LEADSCORE_EV").map_or("-".into(), |v| format!("{v:.0}")),
            text("UF_CRM_LEADSCORE"),
            if has_task { "yes" } else { "" }
        )?;
    }
    let spec = PortalSpec {
        id: PORTAL.into(),
        crm: "bitrix24".into(),
        capacity: None,
        stages: portal.config.portals[0].stages.clone(),
    };
    let now = portal.running.pipeline.now();
    let report = status::collect(&portal.store, &[spec], &[], None, now)?;
    if let Some(sums) = &report.portals[0].pipeline_value {
        writeln!(
            out,
            "open pipeline, as `leadscore status` shows it (won deals are done, not pipeline):\n{}",
            sums.render().trim_end()
        )?;
    }
    let c = sandbox.counters();
    writeln!(
        out,
        "deals portal: {} API requests for {} deals, {} deal updates, no crm.lead.* call ({})",
        c.requests,
        ids.len(),
        sandbox.count_method("crm.deal.update"),
        sandbox.count_method("crm.lead.update") + sandbox.count_method("crm.lead.list")
    )?;

    portal.stop().await
}
