//! The qualification gate end to end over HTTP against the Bitrix24 sandbox: a strong
//! lead whose budget nobody knows stays out of hot (no task) with the questions on its
//! card; once the rep fills the budget field it becomes hot, and its one call-now task
//! lists the questions still open.

use crate::common;

use std::sync::Arc;

use common::{Daemon, Options};
use leadscore::config::Config;
use leadscore::scoring::spec::ScoringSpec;
use leadscore::scoring::Model;
use serde_json::json;

/// BANT on the seed model: authority and budget required, need and timeframe asked.
const BANT: &str = r#"
formula = "BANT"
require = ["authority", "budget"]
[[criteria]]
id = "budget"
when = { field = "custom.budget", range = { min = 1 } }
no = { field = "custom.budget", in = ["0", "нет"] }
[[criteria]]
id = "authority"
when = { field = "position", regex = "(?i)директор|лпр" }
[[criteria]]
id = "need"
when = { field = "custom.need", exists = true }
[[criteria]]
id = "timeframe"
when = { field = "custom.deadline", within_months = 3 }
"#;

/// The example model with the BANT block above (shared with the amoCRM test).
pub(crate) fn bant_model() -> Arc<Model> {
    let text = leadscore::demo::example_scoring_toml().unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let mut spec: ScoringSpec = doc.remove("scoring").unwrap().try_into().unwrap();
    spec.qualification = Some(toml::from_str(BANT).unwrap());
    Arc::new(Model::compile(&spec).unwrap())
}

fn with_bant(config: &mut Config) {
    config.model = bant_model();
    let p = &mut config.portals[0];
    for (neutral, uf) in [
        ("custom.budget", "UF_CRM_BUDGET"),
        ("custom.need", "UF_CRM_NEED"),
        ("custom.deadline", "UF_CRM_DEADLINE"),
    ] {
        p.fields.map.insert(neutral.into(), uf.into());
    }
    p.task.text = "Лид {lead}: {score}.\nУточнить: {questions}\n{why}".into();
    p.fields.qualification = Some("UF_CRM_LEADSCORE_QUAL".into());
}

/// The qualification state's own field ("B? A✓ N? T?"), for CRM filters and reports.
fn state(d: &Daemon, id: u64) -> Option<String> {
    let lead = d.sandbox.get_lead(id).expect("lead exists");
    lead["UF_CRM_LEADSCORE_QUAL"].as_str().map(str::to_string)
}

fn card(d: &Daemon, id: u64) -> String {
    d.crm_card(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unqualified_strong_lead_stays_out_of_hot_until_the_budget_is_known() {
    let d = Daemon::start(Options {
        configure: Some(with_bant),
        ..Options::default()
    })
    .await;
    assert!(d.config.model.has_qualification());
    d.sandbox
        .add_userfield(json!({"FIELD_NAME": "UF_CRM_LEADSCORE_QUAL", "USER_TYPE_ID": "string"}))
        .unwrap();
    let id = d.add_strong_lead(1);
    d.add_demo_request(id);
    d.settle().await;

    // 60 fit + 20 demo = 80, capped at the threshold: warm, no task.
    assert_eq!(d.crm_score(id), Some(70));
    assert_eq!(
        d.tasks_for(id),
        0,
        "an unqualified lead gets no call-now task"
    );
    let why = card(&d, id);
    assert!(
        why.starts_with("70 — тёплый: ограничено 70: не квалифицирован (B? A✓ N? T?) — уточнить: бюджет, задача/потребность, сроки;"),
        "{why}"
    );
    assert_eq!(state(&d, id).as_deref(), Some("B? A✓ N? T?"));

    // The rep learns the budget: the lead is qualified and crosses into hot.
    d.sandbox
        .update_lead(id, json!({ "UF_CRM_BUDGET": "1500000" }))
        .unwrap();
    d.settle().await;
    assert_eq!(d.crm_score(id), Some(80));
    assert_eq!(d.tasks_for(id), 1);
    let why = card(&d, id);
    assert!(
        why.starts_with(
            "80 — горячий: квалифицирован (B✓ A✓ N? T?) — уточнить: задача/потребность, сроки;"
        ),
        "{why}"
    );
    let task = d.sandbox.tasks().into_iter().next().unwrap();
    assert!(
        task.description
            .contains("Уточнить: задача/потребность, сроки\n80 — горячий: квалифицирован"),
        "{}",
        task.description
    );

    // Need and timeframe filled too: the card has no question left, and no second task.
    let deadline = (chrono::Utc::now() + chrono::Duration::days(40))
        .format("%Y-%m-%d")
        .to_string();
    d.sandbox
        .update_lead(
            id,
            json!({ "UF_CRM_NEED": "склад", "UF_CRM_DEADLINE": deadline }),
        )
        .unwrap();
    d.settle().await;
    let why = card(&d, id);
    assert!(
        why.starts_with("80 — горячий: квалифицирован (B✓ A✓ N✓ T✓); +15"),
        "{why}"
    );
    assert_eq!(d.tasks_for(id), 1, "still exactly one task");
    assert_eq!(state(&d, id).as_deref(), Some("B✓ A✓ N✓ T✓"));
}
