//! The sandbox's REST surface over real HTTP: HAL shapes, 204 on empty lists, paging,
//! filters, validation errors and problem bodies, tasks, notes, custom fields.

use crate::support::{client, get, get_json, send};
use leadscore_amocrm_sandbox::{
    FieldSpec, FieldType, FieldValue, NewCompany, NewContact, NewEvent, NewLead, NewTask, Sandbox,
    SandboxOptions,
};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn lead_contact_and_company_have_the_v4_shapes() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let score = amo.create_lead_field(FieldSpec::new("Lead score", FieldType::Numeric).api_only());
    let tier = amo.create_lead_field(FieldSpec::select("Tier", &["A", "B", "C"]));
    let company = amo.add_company(NewCompany::named("ACME").web("https://acme.test"));
    let contact = amo
        .add_contact(
            NewContact::named("Ivan Petrov")
                .position("CTO")
                .email("ivan@acme.test")
                .phone("+79990000000")
                .company(company),
        )
        .unwrap();
    let lead = amo
        .add_lead(
            NewLead::named("ACME deal")
                .price(25_000)
                .field(score.id, FieldValue::Number(87.0))
                .field(tier.id, FieldValue::Enum(tier.enums[0].id))
                .tag("hot"),
        )
        .unwrap();
    amo.link_contact(lead, contact, true).unwrap();
    amo.link_company(lead, company).unwrap();

    let v = get_json(&amo, &format!("/api/v4/leads/{lead}?with=contacts")).await;
    assert_eq!(v["id"], lead);
    assert_eq!(v["name"], "ACME deal");
    assert_eq!(v["price"], 25_000);
    assert_eq!(v["account_id"], amo.account_id());
    assert_eq!(v["responsible_user_id"], amo.current_user_id());
    assert!(v["created_at"].is_i64() && v["updated_at"].is_i64());
    assert_eq!(
        v["_links"]["self"]["href"],
        format!("{}/api/v4/leads/{lead}", amo.base_url())
    );
    let cfv = v["custom_fields_values"].as_array().unwrap();
    assert_eq!(cfv.len(), 2);
    assert_eq!(cfv[0]["field_id"], score.id);
    assert_eq!(cfv[0]["field_name"], "Lead score");
    assert_eq!(cfv[0]["field_type"], "numeric");
    assert_eq!(cfv[0]["field_code"], Value::Null);
    assert_eq!(
        cfv[0]["values"][0]["value"], "87",
        "numeric values come back as strings"
    );
    assert_eq!(cfv[1]["field_type"], "select");
    assert_eq!(cfv[1]["values"][0]["value"], "A");
    assert_eq!(cfv[1]["values"][0]["enum_id"], tier.enums[0].id);
    let contacts = v["_embedded"]["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["id"], contact);
    assert_eq!(contacts[0]["is_main"], true);
    assert_eq!(v["_embedded"]["tags"][0]["name"], "hot");
    assert_eq!(v["_embedded"]["companies"][0]["id"], company);

    let without = get_json(&amo, &format!("/api/v4/leads/{lead}")).await;
    assert!(
        without["_embedded"].get("contacts").is_none(),
        "contacts only with=contacts"
    );

    let c = get_json(&amo, &format!("/api/v4/contacts/{contact}?with=leads")).await;
    assert_eq!(c["name"], "Ivan Petrov");
    let by_code = |code: &str| {
        c["custom_fields_values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field_code"] == code)
            .cloned()
            .unwrap_or_else(|| panic!("no {code}"))
    };
    assert_eq!(by_code("POSITION")["values"][0]["value"], "CTO");
    assert_eq!(by_code("EMAIL")["values"][0]["value"], "ivan@acme.test");
    assert_eq!(by_code("EMAIL")["values"][0]["enum_code"], "WORK");
    assert_eq!(by_code("PHONE")["field_type"], "multitext");
    assert_eq!(c["_embedded"]["companies"][0]["id"], company);
    assert_eq!(c["_embedded"]["leads"][0]["id"], lead);

    let list = get_json(&amo, &format!("/api/v4/contacts?filter[id][]={contact}")).await;
    assert_eq!(list["_embedded"]["contacts"][0]["id"], contact);

    let co = get_json(&amo, &format!("/api/v4/companies/{company}")).await;
    assert_eq!(co["name"], "ACME");
    assert_eq!(co["custom_fields_values"][0]["field_code"], "WEB");
    amo.shutdown().await;
}

#[tokio::test]
async fn empty_lists_are_204_with_an_empty_body() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let lead = amo.add_lead(NewLead::named("only")).unwrap();
    for path in [
        "/api/v4/leads?filter[id][]=1".to_owned(),
        "/api/v4/contacts".to_owned(),
        "/api/v4/companies".to_owned(),
        format!("/api/v4/leads/{lead}/notes"),
        "/api/v4/tasks".to_owned(),
        format!("/api/v4/events?filter[entity]=lead&filter[entity_id][]={lead}&filter[type]=incoming_call"),
        "/api/v4/leads?page=2".to_owned(),
    ] {
        let resp = get(&amo, &path).await;
        assert_eq!(resp.status(), 204, "{path}");
        assert!(resp.headers().get("content-type").is_none(), "{path}");
        assert!(resp.bytes().await.unwrap().is_empty(), "{path}");
    }
    // A missing record by id is 204 too (what the official SDK's getOne expects).
    assert_eq!(get(&amo, "/api/v4/leads/1").await.status(), 204);
    amo.shutdown().await;
}

#[tokio::test]
async fn paging_filters_and_the_250_cap() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..260 {
        let t = 1_700_000_000 + i * 10;
        ids.push(
            amo.add_lead(NewLead::named(&format!("L{i}")).created_at(t))
                .unwrap(),
        );
    }
    let p1 = get_json(&amo, "/api/v4/leads?limit=100").await;
    assert_eq!(p1["_page"], 1);
    assert_eq!(p1["_embedded"]["leads"].as_array().unwrap().len(), 100);
    let next = p1["_links"]["next"]["href"].as_str().unwrap();
    assert!(
        next.contains("page=2") && next.contains("limit=100"),
        "{next}"
    );
    let p3 = get_json(&amo, "/api/v4/leads?limit=100&page=3").await;
    assert_eq!(p3["_embedded"]["leads"].as_array().unwrap().len(), 60);
    assert!(p3["_links"].get("next").is_none(), "last page has no next");
    assert!(p3["_links"]["prev"]["href"]
        .as_str()
        .unwrap()
        .contains("page=2"));
    assert_eq!(
        get(&amo, "/api/v4/leads?limit=100&page=4").await.status(),
        204
    );

    let capped = get_json(&amo, "/api/v4/leads?limit=500").await;
    assert_eq!(
        capped["_embedded"]["leads"].as_array().unwrap().len(),
        250,
        "limit is capped at 250"
    );

    let wanted = format!(
        "/api/v4/leads?filter[id][]={}&filter[id][]={}&filter[id][]=5",
        ids[3], ids[7]
    );
    let by_id = get_json(&amo, &wanted).await;
    let got: Vec<u64> = by_id["_embedded"]["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![ids[3], ids[7]]);
    let single = get_json(&amo, &format!("/api/v4/leads?filter[id]={}", ids[9])).await;
    assert_eq!(single["_embedded"]["leads"][0]["id"], ids[9]);

    let window = get_json(
        &amo,
        "/api/v4/leads?filter[updated_at][from]=1700000100&filter[updated_at][to]=1700000150&order[updated_at]=desc",
    )
    .await;
    let times: Vec<i64> = window["_embedded"]["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["updated_at"].as_i64().unwrap())
        .collect();
    assert_eq!(
        times,
        vec![
            1_700_000_150,
            1_700_000_140,
            1_700_000_130,
            1_700_000_120,
            1_700_000_110,
            1_700_000_100
        ]
    );
    amo.shutdown().await;
}

#[tokio::test]
async fn bulk_patch_validates_all_or_nothing_with_real_error_bodies() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let tier = amo.create_lead_field(FieldSpec::select("Tier", &["A", "B"]));
    let score = amo.create_lead_field(FieldSpec::new("Score", FieldType::Numeric));
    let a = amo.add_lead(NewLead::named("a")).unwrap();
    let b = amo.add_lead(NewLead::named("b")).unwrap();

    let bad = json!([
        {"id": a, "custom_fields_values": [{"field_id": score.id, "values": [{"value": 90}]}]},
        {"id": b, "custom_fields_values": [{"field_id": tier.id, "values": [{"enum_id": 1}]}]},
    ]);
    let resp = send(&amo, Method::PATCH, "/api/v4/leads", &bad).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"validation-errors": [{"request_id": "1", "errors": [{
            "code": "NotSupportedChoice",
            "path": "custom_fields_values.0.values.0.enum_id",
            "detail": "The value you selected is not a valid choice."}]}],
         "title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
         "detail": "Request validation failed"})
    );
    assert_eq!(
        amo.lead(a).unwrap().text(score.id),
        None,
        "nothing applied when one entity fails"
    );

    let unknown_field =
        json!([{"id": a, "custom_fields_values": [{"field_id": 1, "values": [{"value": 1}]}]}]);
    let body: Value = send(&amo, Method::PATCH, "/api/v4/leads", &unknown_field)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["validation-errors"][0]["errors"][0]["path"],
        "custom_fields_values.0.field_id"
    );

    let too_many: Vec<Value> = (0..251).map(|_| json!({"id": a, "price": 1})).collect();
    let resp = send(
        &amo,
        Method::PATCH,
        "/api/v4/leads",
        &Value::Array(too_many),
    )
    .await;
    assert_eq!(resp.status(), 400);

    let good = json!([
        {"id": a, "custom_fields_values": [{"field_id": score.id, "values": [{"value": 90}]}, {"field_id": tier.id, "values": [{"enum_id": tier.enums[0].id}]}]},
        {"id": b, "custom_fields_values": [{"field_id": score.id, "values": [{"value": "41.5"}]}, {"field_id": tier.id, "values": [{"value": "B"}]}]},
    ]);
    let resp = send(&amo, Method::PATCH, "/api/v4/leads", &good).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["_embedded"]["leads"][0]["id"], a);
    assert!(body["_embedded"]["leads"][1]["updated_at"].is_i64());
    assert_eq!(amo.lead(a).unwrap().text(score.id).as_deref(), Some("90"));
    assert_eq!(amo.lead(b).unwrap().text(score.id).as_deref(), Some("41.5"));
    assert_eq!(
        amo.lead(b).unwrap().enum_id(tier.id),
        Some(tier.enums[1].id)
    );

    // A single-lead PATCH, and clearing a field with `values: null`.
    let resp = send(
        &amo,
        Method::PATCH,
        &format!("/api/v4/leads/{a}"),
        &json!({"custom_fields_values": [{"field_id": score.id, "values": null}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(amo.lead(a).unwrap().text(score.id), None);
    amo.shutdown().await;
}

#[tokio::test]
async fn post_leads_and_unauthorized_and_unknown_routes() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let resp = send(
        &amo,
        Method::POST,
        "/api/v4/leads",
        &json!([{"name": "new", "price": 10, "request_id": "r1"}]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let id = body["_embedded"]["leads"][0]["id"].as_u64().unwrap();
    assert_eq!(body["_embedded"]["leads"][0]["request_id"], "r1");
    let lead = amo.lead(id).unwrap();
    assert_eq!(lead.price, 10);
    assert_eq!(
        lead.status_id,
        amo.pipelines()[0].stages[1].id,
        "first ordinary stage of the main pipeline"
    );

    let anon = client()
        .get(format!("{}/api/v4/leads", amo.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    assert_eq!(anon.headers()["content-type"], "application/problem+json");
    let body: Value = anon.json().await.unwrap();
    assert_eq!(body["title"], "Unauthorized");
    assert_eq!(body["type"], "https://httpstatus.es/401");
    assert_eq!(body["status"], 401);
    let wrong = client()
        .get(format!("{}/api/v4/leads", amo.base_url()))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let missing = get(&amo, "/api/v4/nothing").await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["type"], "https://httpstatus.es/404");
    let field = get(&amo, "/api/v4/leads/custom_fields/1").await;
    assert_eq!(field.status(), 404);
    assert_eq!(
        field.json::<Value>().await.unwrap()["detail"],
        "Custom field not found"
    );
    amo.shutdown().await;
}

#[tokio::test]
async fn events_filters_limits_and_order() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let lead = amo
        .add_lead(NewLead::named("x").created_at(1_700_000_000))
        .unwrap();
    let other = amo
        .add_lead(NewLead::named("y").created_at(1_700_000_000))
        .unwrap();
    amo.add_event(
        NewEvent::lead(lead, "incoming_call")
            .at(1_700_000_100)
            .by(3_493_061),
    )
    .unwrap();
    amo.add_event(NewEvent::lead(lead, "incoming_mail").at(1_700_000_200))
        .unwrap();
    amo.add_event(NewEvent::lead(lead, "outgoing_call").at(1_700_000_300))
        .unwrap();
    amo.add_event(NewEvent::lead(other, "incoming_call").at(1_700_000_400))
        .unwrap();
    amo.add_event(
        NewEvent::lead(lead, "incoming_chat_message")
            .at(1_700_000_500)
            .after(json!([{"message": {"id": "abc", "origin": "telegram"}}])),
    )
    .unwrap();

    let v = get_json(
        &amo,
        &format!("/api/v4/events?filter[entity]=lead&filter[entity_id][]={lead}&filter[type]=incoming_call,incoming_mail,incoming_chat_message"),
    )
    .await;
    let events = v["_embedded"]["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        vec!["incoming_chat_message", "incoming_mail", "incoming_call"],
        "newest first"
    );
    let e = &events[2];
    assert!(e["id"].is_string());
    assert_eq!(e["entity_type"], "lead");
    assert_eq!(e["entity_id"], lead);
    assert_eq!(e["created_by"], 3_493_061);
    assert_eq!(e["created_at"], 1_700_000_100);
    assert!(e["value_after"].is_array() && e["value_before"].is_array());
    assert_eq!(events[0]["value_after"][0]["message"]["origin"], "telegram");

    let arr = get_json(
        &amo,
        &format!("/api/v4/events?filter[entity]=lead&filter[entity_id]={lead}&filter[type][]=outgoing_call&filter[created_at][from]=1700000250"),
    )
    .await;
    assert_eq!(arr["_embedded"]["events"].as_array().unwrap().len(), 1);

    let too_many: String = (1..=11)
        .map(|i| format!("&filter[entity_id][]={i}"))
        .collect();
    let resp = get(
        &amo,
        &format!("/api/v4/events?filter[entity]=lead{too_many}"),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["validation-errors"][0]["errors"][0]["path"],
        "filter.entity_id"
    );

    let capped = get_json(&amo, "/api/v4/events?limit=250").await;
    assert!(capped["_embedded"]["events"].as_array().unwrap().len() <= 100);
    amo.shutdown().await;
}

#[tokio::test]
async fn tasks_notes_fields_account_users() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let lead = amo.add_lead(NewLead::named("t")).unwrap();
    amo.add_task(NewTask::follow_up(lead, "old", 1_700_000_000))
        .unwrap();

    let resp = send(
        &amo,
        Method::POST,
        "/api/v4/tasks",
        &json!([{"text": "Call now: score 92 (A)", "complete_till": 1_900_000_000, "entity_id": lead, "entity_type": "leads", "task_type_id": 1, "responsible_user_id": 3_493_061}]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let task_id = body["_embedded"]["tasks"][0]["id"].as_u64().unwrap();
    assert_eq!(body["_embedded"]["tasks"][0]["request_id"], "0");

    let bad = send(
        &amo,
        Method::POST,
        "/api/v4/tasks",
        &json!([{"complete_till": 1}]),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["validation-errors"][0]["errors"][0]["path"], "text");

    let open = get_json(&amo, &format!("/api/v4/tasks?filter[entity_type]=leads&filter[entity_id][]={lead}&filter[is_completed]=0&filter[task_type]=1")).await;
    let tasks = open["_embedded"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    let t = tasks.iter().find(|t| t["id"] == task_id).unwrap();
    assert_eq!(t["entity_type"], "leads");
    assert_eq!(t["is_completed"], false);
    assert_eq!(t["responsible_user_id"], 3_493_061);
    assert_eq!(t["complete_till"], 1_900_000_000);

    let lead_json = get_json(&amo, &format!("/api/v4/leads/{lead}")).await;
    assert_eq!(lead_json["closest_task_at"], 1_700_000_000);

    let resp = send(
        &amo,
        Method::PATCH,
        "/api/v4/tasks",
        &json!([{"id": task_id, "is_completed": true, "result": {"text": "done"}}]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let done = amo.tasks().into_iter().find(|t| t.id == task_id).unwrap();
    assert!(done.is_completed);
    assert_eq!(done.result_text.as_deref(), Some("done"));
    let open = get_json(
        &amo,
        &format!("/api/v4/tasks?filter[entity_id][]={lead}&filter[is_completed]=0"),
    )
    .await;
    assert_eq!(open["_embedded"]["tasks"].as_array().unwrap().len(), 1);

    let resp = send(
        &amo,
        Method::POST,
        "/api/v4/leads/notes",
        &json!([{"entity_id": lead, "note_type": "common", "params": {"text": "Score 92: opened the pricing page"}}]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let notes = get_json(&amo, &format!("/api/v4/leads/{lead}/notes")).await;
    let n = &notes["_embedded"]["notes"][0];
    assert_eq!(n["note_type"], "common");
    assert_eq!(n["params"]["text"], "Score 92: opened the pricing page");
    assert_eq!(n["entity_id"], lead);
    assert_eq!(amo.notes(lead).len(), 1);

    let created = send(
        &amo,
        Method::POST,
        "/api/v4/leads/custom_fields",
        &json!([{"type": "select", "name": "Lead tier", "is_api_only": true, "enums": [{"value": "A", "sort": 1}, {"value": "B", "sort": 2}]}]),
    )
    .await;
    assert_eq!(created.status(), 200);
    let created: Value = created.json().await.unwrap();
    let field = &created["_embedded"]["custom_fields"][0];
    assert_eq!(field["type"], "select");
    assert_eq!(field["is_api_only"], true);
    assert_eq!(field["enums"].as_array().unwrap().len(), 2);
    assert!(field["enums"][0]["id"].is_u64());
    let listed = get_json(&amo, "/api/v4/leads/custom_fields").await;
    assert_eq!(listed["_total_items"], 1);
    assert_eq!(listed["_embedded"]["custom_fields"][0]["name"], "Lead tier");

    let account = get_json(&amo, "/api/v4/account?with=task_types").await;
    assert_eq!(account["id"], amo.account_id());
    assert_eq!(account["subdomain"], amo.subdomain());
    assert_eq!(account["_embedded"]["task_types"][0]["id"], 1);
    let users = get_json(&amo, "/api/v4/users").await;
    assert_eq!(users["_embedded"]["users"].as_array().unwrap().len(), 2);
    assert!(users["_embedded"]["users"][0]["email"].is_string());
    amo.shutdown().await;
}

#[tokio::test]
async fn api_changes_write_the_event_feed() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let score = amo.create_lead_field(FieldSpec::new("Score", FieldType::Numeric));
    let lead = amo.add_lead(NewLead::named("e")).unwrap();
    let pipeline = amo.pipelines()[0].clone();
    let target = pipeline.stages[3].id;
    let resp = send(
        &amo,
        Method::PATCH,
        "/api/v4/leads",
        &json!([{"id": lead, "status_id": target, "custom_fields_values": [{"field_id": score.id, "values": [{"value": 70}]}]}]),
    )
    .await;
    assert_eq!(resp.status(), 200);

    let moved = get_json(
        &amo,
        &format!(
            "/api/v4/events?filter[entity]=lead&filter[entity_id][]={lead}&filter[type]=lead_status_changed\
             &filter[value_after][leads_statuses][0][pipeline_id]={}&filter[value_after][leads_statuses][0][status_id]={target}",
            pipeline.id
        ),
    )
    .await;
    let e = &moved["_embedded"]["events"][0];
    assert_eq!(e["value_after"][0]["lead_status"]["id"], target);
    assert_eq!(
        e["value_before"][0]["lead_status"]["id"],
        pipeline.stages[1].id
    );
    assert_eq!(e["created_by"], amo.current_user_id());

    let field_type = format!("custom_field_{}_value_changed", score.id);
    let changed = get_json(&amo, &format!("/api/v4/events?filter[entity]=lead&filter[entity_id][]={lead}&filter[type]={field_type}")).await;
    let e = &changed["_embedded"]["events"][0];
    assert_eq!(e["type"], field_type.as_str());
    assert_eq!(e["value_after"][0]["custom_field_value"]["text"], "70");
    let any = get_json(
        &amo,
        "/api/v4/events?filter[type]=custom_field_value_changed",
    )
    .await;
    assert_eq!(any["_embedded"]["events"].as_array().unwrap().len(), 1);
    // Another field's type leaves the score's change out; a list of entities and of
    // per-field types (comma-separated, as leadscore's account-wide read sends) keeps it.
    let other_field = format!("custom_field_{}_value_changed", score.id + 1);
    let q = format!("/api/v4/events?filter[type]={other_field}");
    assert_eq!(get(&amo, &q).await.status(), 204);
    let q = format!(
        "/api/v4/events?filter[entity]=lead%2Ccontact&filter[type]={other_field}%2C{field_type}%2Csale_field_changed"
    );
    let both = get_json(&amo, &q).await;
    assert_eq!(both["_embedded"]["events"].as_array().unwrap().len(), 1);

    let other = pipeline.stages[2].id;
    let none = get(
        &amo,
        &format!(
            "/api/v4/events?filter[type]=lead_status_changed&filter[value_after][leads_statuses][0][pipeline_id]={}&filter[value_after][leads_statuses][0][status_id]={other}",
            pipeline.id
        ),
    )
    .await;
    assert_eq!(none.status(), 204);
    let added = get_json(&amo, "/api/v4/events?filter[type]=lead_added").await;
    assert_eq!(added["_embedded"]["events"][0]["entity_id"], lead);
    amo.shutdown().await;
}

#[tokio::test]
async fn field_codes_and_the_not_found_option() {
    let amo = Sandbox::start(SandboxOptions {
        missing_entity: leadscore_amocrm_sandbox::MissingEntity::NotFound,
        ..SandboxOptions::unlimited()
    })
    .await
    .unwrap();
    let score =
        amo.create_lead_field(FieldSpec::new("Score", FieldType::Numeric).code("LEADSCORE"));
    let lead = amo.add_lead(NewLead::named("c")).unwrap();
    let resp = send(
        &amo,
        Method::PATCH,
        &format!("/api/v4/leads/{lead}"),
        &json!({"custom_fields_values": [{"field_code": "LEADSCORE", "values": [{"value": 55}]}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        amo.lead(lead).unwrap().text(score.id).as_deref(),
        Some("55")
    );
    let v = get_json(&amo, &format!("/api/v4/leads/{lead}")).await;
    assert_eq!(v["custom_fields_values"][0]["field_code"], "LEADSCORE");

    let bad = send(
        &amo,
        Method::PATCH,
        &format!("/api/v4/leads/{lead}"),
        &json!({"custom_fields_values": [{"field_code": "NOPE", "values": [{"value": 1}]}]}),
    )
    .await;
    let body: Value = bad.json().await.unwrap();
    assert_eq!(
        body["validation-errors"][0]["errors"][0]["path"],
        "custom_fields_values.0.field_code"
    );

    let missing = get(&amo, "/api/v4/leads/1").await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["title"], "Not Found");
    amo.shutdown().await;
}
