//! Webhooks over real HTTP: the v2 form body amoCRM sends, for seed changes and for
//! changes made through the REST API (the daemon's own writes), several leads in one
//! POST on a bulk PATCH, nothing on a no-op PATCH, failures recorded, not retried.

use std::time::Duration;

use crate::support::{form_get, form_pairs, send, Receiver};
use leadscore_amocrm_sandbox::{
    FieldSpec, FieldType, FieldValue, LeadChange, NewLead, Sandbox, SandboxOptions, WebhookPolicy,
};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn seed_add_and_user_update_arrive_in_the_v2_form() {
    let rx = Receiver::start().await;
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let score = amo.create_lead_field(FieldSpec::new("Lead score", FieldType::Numeric).api_only());
    let tier = amo.create_lead_field(FieldSpec::select("Tier", &["A", "B"]));
    let follow = amo.create_lead_field(FieldSpec::new("Next call", FieldType::Date));
    amo.add_webhook(&rx.url, &["add_lead", "update_lead", "status_lead"]);

    let lead = amo
        .add_lead(
            NewLead::named("Some text")
                .price(24_234)
                .field(score.id, FieldValue::Number(12.0))
                .field(tier.id, FieldValue::Enum(tier.enums[1].id))
                .field(follow.id, FieldValue::Date(1_537_920_000))
                .tag("взято"),
        )
        .unwrap();
    amo.settle().await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    assert_eq!(
        hit.query.as_deref(),
        Some("secret=s3cr3t"),
        "the destination's query is kept"
    );
    assert_eq!(hit.headers["user-agent"], "amoCRM-WebHook-client/1.0");
    assert_eq!(
        hit.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert!(
        hit.body.starts_with("leads%5Badd%5D%5B0%5D%5Bid%5D="),
        "{}",
        hit.body
    );
    let p = form_pairs(&hit.body);
    let lead_s = lead.to_string();
    assert_eq!(form_get(&p, "leads[add][0][id]"), Some(lead_s.as_str()));
    assert_eq!(form_get(&p, "leads[add][0][name]"), Some("Some text"));
    assert_eq!(form_get(&p, "leads[add][0][price]"), Some("24234"));
    let user = amo.current_user_id().to_string();
    assert_eq!(
        form_get(&p, "leads[add][0][responsible_user_id]"),
        Some(user.as_str())
    );
    assert_eq!(
        form_get(&p, "leads[add][0][created_user_id]"),
        Some(user.as_str())
    );
    for key in [
        "status_id",
        "last_modified",
        "modified_user_id",
        "date_create",
        "pipeline_id",
        "account_id",
        "created_at",
        "updated_at",
    ] {
        assert!(
            form_get(&p, &format!("leads[add][0][{key}]")).is_some(),
            "{key}"
        );
    }
    assert_eq!(form_get(&p, "leads[add][0][tags][0][name]"), Some("взято"));
    let score_s = score.id.to_string();
    assert_eq!(
        form_get(&p, "leads[add][0][custom_fields][0][id]"),
        Some(score_s.as_str())
    );
    assert_eq!(
        form_get(&p, "leads[add][0][custom_fields][0][name]"),
        Some("Lead score")
    );
    assert_eq!(
        form_get(&p, "leads[add][0][custom_fields][0][values][0][value]"),
        Some("12")
    );
    assert_eq!(
        form_get(&p, "leads[add][0][custom_fields][1][values][0][value]"),
        Some("B")
    );
    let b = tier.enums[1].id.to_string();
    assert_eq!(
        form_get(&p, "leads[add][0][custom_fields][1][values][0][enum]"),
        Some(b.as_str())
    );
    assert_eq!(
        form_get(&p, "leads[add][0][custom_fields][2][values][0]"),
        Some("1537920000"),
        "dates carry no [value] sub-key"
    );
    let n = p.len();
    assert_eq!(p[n - 3], ("account[subdomain]".to_owned(), amo.subdomain()));
    assert_eq!(
        p[n - 2],
        ("account[id]".to_owned(), amo.account_id().to_string())
    );
    assert_eq!(
        p[n - 1],
        (
            "account[_links][self]".to_owned(),
            amo.base_url().to_owned()
        )
    );

    // The crate's own parser accepts what the sandbox sends.
    let parsed =
        leadscore_amocrm::webhook::parse(hit.body.as_bytes()).expect("the crate parser accepts it");
    assert_eq!(parsed.account().id, Some(amo.account_id().to_string()));
    assert_eq!(parsed.account().subdomain, Some(amo.subdomain()));

    // A user moves the lead to another stage: update and status in one POST.
    let other = amo.users()[1].id;
    let old_status = amo.lead(lead).unwrap().status_id;
    let new_status = amo.pipelines()[0].stages[2].id;
    assert!(amo
        .update_lead(lead, LeadChange::default().status(new_status), other)
        .unwrap());
    amo.settle().await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    let p = form_pairs(&hits[1].body);
    assert_eq!(
        form_get(&p, "leads[update][0][status_id]"),
        Some(new_status.to_string().as_str())
    );
    assert_eq!(
        form_get(&p, "leads[update][0][old_status_id]"),
        Some(old_status.to_string().as_str())
    );
    assert_eq!(
        form_get(&p, "leads[update][0][modified_user_id]"),
        Some(other.to_string().as_str())
    );
    assert_eq!(form_get(&p, "leads[status][0][id]"), Some(lead_s.as_str()));
    assert!(form_get(&p, "leads[status][0][old_pipeline_id]").is_some());

    // Handing the lead to another user fires responsible_lead.
    amo.add_webhook(&rx.url, &["responsible_lead"]);
    assert!(amo
        .update_lead(lead, LeadChange::default().responsible(other), other)
        .unwrap());
    amo.settle().await;
    let hits = rx.hits();
    assert_eq!(
        hits.len(),
        4,
        "update to the first hook, responsible to the second"
    );
    let bodies: Vec<_> = hits[2..].iter().map(|h| form_pairs(&h.body)).collect();
    assert!(bodies.iter().any(
        |p| form_get(p, "leads[responsible][0][responsible_user_id]")
            == Some(other.to_string().as_str())
    ));
    assert!(bodies
        .iter()
        .any(|p| form_get(p, "leads[update][0][responsible_user_id]")
            == Some(other.to_string().as_str())));

    // Users cannot edit API-only fields.
    assert!(amo
        .update_lead(
            lead,
            LeadChange::default().field(score.id, FieldValue::Number(99.0)),
            other
        )
        .is_err());

    amo.shutdown().await;
    rx.stop().await;
}

#[tokio::test]
async fn api_writes_fire_hooks_bulk_in_one_post_and_noops_fire_nothing() {
    let rx = Receiver::start().await;
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let score = amo.create_lead_field(FieldSpec::new("Lead score", FieldType::Numeric).api_only());
    let ids: Vec<u64> = (0..3)
        .map(|i| amo.add_lead(NewLead::named(&format!("L{i}"))).unwrap())
        .collect();
    amo.add_webhook(&rx.url, &["update_lead"]);
    let patch = |v: u32| {
        serde_json::Value::Array(
            ids.iter()
                .map(|id| json!({"id": id, "custom_fields_values": [{"field_id": score.id, "values": [{"value": v}]}]}))
                .collect(),
        )
    };

    assert_eq!(
        send(&amo, Method::PATCH, "/api/v4/leads", &patch(80))
            .await
            .status(),
        200
    );
    amo.settle().await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 1, "one POST for the whole bulk PATCH");
    let p = form_pairs(&hits[0].body);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            form_get(&p, &format!("leads[update][{i}][id]")),
            Some(id.to_string().as_str())
        );
        assert_eq!(
            form_get(
                &p,
                &format!("leads[update][{i}][custom_fields][0][values][0][value]")
            ),
            Some("80")
        );
    }
    assert!(form_get(&p, "leads[update][3][id]").is_none());
    let stamp = amo.lead(ids[0]).unwrap().updated_at;

    // The same values again: nothing changes, nothing is sent.
    assert_eq!(
        send(&amo, Method::PATCH, "/api/v4/leads", &patch(80))
            .await
            .status(),
        200
    );
    let resp = send(
        &amo,
        Method::PATCH,
        &format!("/api/v4/leads/{}", ids[0]),
        &json!({"name": "L0"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    amo.settle().await;
    assert_eq!(rx.hits().len(), 1, "no webhook for a no-op PATCH");
    assert_eq!(
        amo.lead(ids[0]).unwrap().updated_at,
        stamp,
        "updated_at did not move"
    );
    assert_eq!(amo.deliveries().len(), 1);

    // Only the lead that really changes is in the next POST.
    let mixed = json!([
        {"id": ids[0], "custom_fields_values": [{"field_id": score.id, "values": [{"value": 80}]}]},
        {"id": ids[1], "custom_fields_values": [{"field_id": score.id, "values": [{"value": 91}]}]},
    ]);
    assert_eq!(
        send(&amo, Method::PATCH, "/api/v4/leads", &mixed)
            .await
            .status(),
        200
    );
    amo.settle().await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    let p = form_pairs(&hits[1].body);
    assert_eq!(
        form_get(&p, "leads[update][0][id]"),
        Some(ids[1].to_string().as_str())
    );
    assert!(form_get(&p, "leads[update][1][id]").is_none());
    amo.shutdown().await;
    rx.stop().await;
}

#[tokio::test]
async fn notes_and_adds_through_the_api() {
    let rx = Receiver::start().await;
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    amo.add_webhook(&rx.url, &["add_lead", "note_lead"]);
    let resp = send(
        &amo,
        Method::POST,
        "/api/v4/leads",
        &json!([{"name": "from api"}, {"name": "second"}]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let lead = body["_embedded"]["leads"][0]["id"].as_u64().unwrap();
    amo.settle().await;
    let p = form_pairs(&rx.hits()[0].body);
    assert_eq!(form_get(&p, "leads[add][0][name]"), Some("from api"));
    assert_eq!(form_get(&p, "leads[add][1][name]"), Some("second"));

    let resp = send(
        &amo,
        Method::POST,
        &format!("/api/v4/leads/{lead}/notes"),
        &json!([{"note_type": "common", "params": {"text": "hello"}}]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    amo.settle().await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    let p = form_pairs(&hits[1].body);
    assert_eq!(
        form_get(&p, "leads[note][0][note][element_id]"),
        Some(lead.to_string().as_str())
    );
    assert_eq!(
        form_get(&p, "leads[note][0][note][element_type]"),
        Some("2")
    );
    assert_eq!(form_get(&p, "leads[note][0][note][note_type]"), Some("4"));
    assert_eq!(form_get(&p, "leads[note][0][note][text]"), Some("hello"));
    assert!(form_get(&p, "leads[note][0][note][date_create]").is_some_and(|d| d.len() == 19));
    amo.shutdown().await;
    rx.stop().await;
}

#[tokio::test]
async fn failures_are_recorded_not_retried_and_disable_the_hook() {
    let rx = Receiver::start().await;
    rx.answer(500);
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    amo.set_webhook_policy(WebhookPolicy {
        failures: 2,
        within: Duration::from_secs(60),
    });
    let hook = amo.add_webhook(&rx.url, &["add_lead"]);
    for i in 0..3 {
        amo.add_lead(NewLead::named(&format!("x{i}"))).unwrap();
        amo.settle().await;
    }
    assert_eq!(rx.hits().len(), 3, "one attempt per change, no retries");
    let failures = amo.delivery_failures();
    assert_eq!(failures.len(), 3);
    assert_eq!(failures[0].status, Some(500));
    assert!(
        !format!("{:?}", failures[0]).contains("s3cr3t"),
        "the destination is not recorded"
    );
    let info = &amo.webhooks()[0];
    assert!(info.disabled, "more than 2 failures disable the hook");
    amo.add_lead(NewLead::named("after")).unwrap();
    amo.settle().await;
    assert_eq!(rx.hits().len(), 3, "a disabled hook gets nothing");

    rx.answer(200);
    assert!(amo.enable_webhook(hook));
    amo.add_lead(NewLead::named("again")).unwrap();
    amo.settle().await;
    assert_eq!(rx.hits().len(), 4);
    assert!(amo.deliveries().last().unwrap().ok());

    // A receiver that is gone: the failure is recorded with no status.
    rx.stop().await;
    amo.add_lead(NewLead::named("nobody")).unwrap();
    amo.settle().await;
    let last = amo.deliveries().last().cloned().unwrap();
    assert_eq!(last.status, None);
    assert!(last.error.is_some());
    amo.shutdown().await;
}

#[tokio::test]
async fn webhooks_can_be_managed_through_the_api() {
    let rx = Receiver::start().await;
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    assert_eq!(
        crate::support::get(&amo, "/api/v4/webhooks").await.status(),
        204
    );
    let bad = send(
        &amo,
        Method::POST,
        "/api/v4/webhooks",
        &json!({"destination": "ftp://x", "settings": ["fly_lead"]}),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    let paths: Vec<&str> = body["validation-errors"][0]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["destination", "settings.0"]);

    let resp = send(
        &amo,
        Method::POST,
        "/api/v4/webhooks",
        &json!({"destination": rx.url, "settings": ["add_lead"], "sort": 10}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let hook: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(hook["destination"], rx.url.as_str());
    assert_eq!(hook["disabled"], false);
    let again = send(
        &amo,
        Method::POST,
        "/api/v4/webhooks",
        &json!({"destination": rx.url, "settings": ["add_lead", "update_lead"]}),
    )
    .await;
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(
        again["id"], hook["id"],
        "the same destination is updated, not duplicated"
    );
    let list = crate::support::get_json(&amo, "/api/v4/webhooks").await;
    assert_eq!(list["_total_items"], 1);
    assert_eq!(
        list["_embedded"]["webhooks"][0]["settings"],
        json!(["add_lead", "update_lead"])
    );

    amo.add_lead(NewLead::named("hooked")).unwrap();
    amo.settle().await;
    assert_eq!(rx.hits().len(), 1);

    let resp = send(
        &amo,
        Method::DELETE,
        "/api/v4/webhooks",
        &json!({"destination": rx.url}),
    )
    .await;
    assert_eq!(resp.status(), 204);
    amo.add_lead(NewLead::named("unhooked")).unwrap();
    amo.settle().await;
    assert_eq!(rx.hits().len(), 1);
    assert!(amo.webhooks().is_empty());
    amo.shutdown().await;
    rx.stop().await;
}
