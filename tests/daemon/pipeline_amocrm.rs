//! amoCRM leads are deals: their weighted value (price × the stage's coefficient) and
//! their qualification state reach fields of their own, over HTTP against the amoCRM
//! sandbox, which checks that a number field gets a number. A stage move rewrites the
//! value; filling the budget rewrites the state; neither causes a write loop.

use leadscore_amocrm_sandbox::{FieldSpec, FieldType, FieldValue, LeadChange};

use crate::e2e_amocrm::Daemon;
use crate::qualification::bant_model;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weighted_value_and_the_qualification_state_reach_their_own_fields() {
    let mut d = Daemon::start(false).await;
    d.stop().await;
    let budget = d
        .sandbox
        .create_lead_field(FieldSpec::new("Бюджет", FieldType::Numeric));
    let ev = d
        .sandbox
        .create_lead_field(FieldSpec::new("Взвешенная сумма", FieldType::Numeric).api_only());
    let qual = d
        .sandbox
        .create_lead_field(FieldSpec::new("Квалификация", FieldType::Text).api_only());
    let main = d
        .sandbox
        .pipelines()
        .into_iter()
        .find(|p| p.is_main)
        .unwrap();
    let open: Vec<u64> = main
        .stages
        .iter()
        .filter(|s| s.kind == 0 && s.id != 142 && s.id != 143)
        .map(|s| s.id)
        .collect();
    assert!(open.len() >= 2, "{open:?}");
    let (first, second) = (open[0], open[1]);
    let stages: leadscore::weighted::StagesSection = toml::from_str(&format!(
        "[pipelines.\"{}\"]\n\"{first}\" = 0.1\n\"{second}\" = 0.5\n",
        main.id
    ))
    .unwrap();
    {
        let p = &mut d.config.portals[0];
        p.stages = leadscore::weighted::StageCoefficients::check(&stages).unwrap();
        p.fields
            .map
            .insert("custom.budget".into(), budget.id.to_string());
        p.fields.expected_value = Some(ev.id.to_string());
        p.fields.qualification = Some(qual.id.to_string());
    }
    d.config.model = bant_model();
    d.launch(true).await;

    let user = d.sandbox.current_user_id();
    let id = d.add_strong_lead(1);
    d.sandbox
        .update_lead(id, LeadChange::default().price(200_000).status(first), user)
        .unwrap();
    d.settle().await;
    assert!(
        d.score(id).is_some_and(|s| s <= 70),
        "not hot: budget unknown"
    );
    assert_eq!(d.field(id, ev.id).as_deref(), Some("20000"));
    assert_eq!(d.field(id, qual.id).as_deref(), Some("B? A✓ N? T?"));

    // The rep learns the budget: the state changes, the value does not.
    d.sandbox
        .update_lead(
            id,
            LeadChange::default().field(budget.id, FieldValue::Number(500_000.0)),
            user,
        )
        .unwrap();
    d.settle().await;
    assert_eq!(d.field(id, qual.id).as_deref(), Some("B✓ A✓ N? T?"));
    assert_eq!(d.field(id, ev.id).as_deref(), Some("20000"));

    // The deal moves on: × 0.5, one write, no echo loop.
    let patches = d.patches();
    d.sandbox
        .update_lead(id, LeadChange::default().status(second), user)
        .unwrap();
    d.settle().await;
    assert_eq!(d.field(id, ev.id).as_deref(), Some("100000"));
    assert_eq!(d.patches(), patches + 1, "one write for the new value");
}
