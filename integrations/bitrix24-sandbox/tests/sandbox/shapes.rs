//! Response shapes of the methods the daemon uses, auth errors, and parameter encodings,
//! over real HTTP.

use crate::support::{call, ok, portal};
use leadscore_bitrix24_sandbox::{OAuthOptions, Sandbox, SandboxOptions};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn crm_lead_shapes_are_strings_and_multifields() {
    let p = portal().await;
    let id = p
        .add_lead(json!({"TITLE": "ACME", "NAME": "Ann", "OPPORTUNITY": 1500,
                          "EMAIL": [{"VALUE": "ann@acme.test", "VALUE_TYPE": "WORK"}],
                          "PHONE": [{"VALUE": "+15550001", "VALUE_TYPE": "MOBILE"}]}))
        .unwrap();
    let lead = ok(&p, "crm.lead.get", json!({"id": id})).await;
    assert_eq!(lead["ID"], json!(id.to_string()));
    assert_eq!(lead["TITLE"], json!("ACME"));
    assert_eq!(lead["OPPORTUNITY"], json!("1500.00"));
    assert_eq!(lead["STATUS_ID"], json!("NEW"));
    assert_eq!(lead["ASSIGNED_BY_ID"], json!("1"));
    assert_eq!(lead["HAS_EMAIL"], json!("Y"));
    let email = &lead["EMAIL"][0];
    assert_eq!(email["VALUE"], json!("ann@acme.test"));
    assert_eq!(email["TYPE_ID"], json!("EMAIL"));
    assert!(email["ID"].is_string());
    let date = lead["DATE_MODIFY"].as_str().unwrap();
    assert_eq!(date.len(), "2026-11-20T12:00:00+03:00".len(), "{date}");
    assert!(date.ends_with("+03:00"));

    let (status, body) = call(&p, "crm.lead.get", json!({"id": 999})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], json!(""));
    assert_eq!(body["error_description"], json!("Not found"));
    p.shutdown().await;
}

#[tokio::test]
async fn crm_item_is_camel_case_and_typed() {
    let p = portal().await;
    p.add_userfield(json!({"FIELD_NAME": "SCORE", "USER_TYPE_ID": "integer"}))
        .unwrap();
    let id = p
        .add_lead(
            json!({"TITLE": "T", "OPPORTUNITY": "99.9", "UF_CRM_SCORE": 40,
                          "EMAIL": [{"VALUE": "x@y.test"}]}),
        )
        .unwrap();
    let r = ok(&p, "crm.item.get", json!({"entityTypeId": 1, "id": id})).await;
    let item = &r["item"];
    assert_eq!(item["id"], json!(id));
    assert_eq!(item["opportunity"], json!(99.9));
    assert_eq!(item["assignedById"], json!(1));
    assert_eq!(item["stageId"], json!("NEW"));
    assert_eq!(item["ufCrm_SCORE"], json!(40));
    assert_eq!(item["email"], json!("x@y.test"));
    assert_eq!(item["fm"][0]["typeId"], json!("EMAIL"));
    let r = ok(
        &p,
        "crm.item.get",
        json!({"entityTypeId": 1, "id": id, "useOriginalUfNames": "Y"}),
    )
    .await;
    assert_eq!(r["item"]["UF_CRM_SCORE"], json!(40));

    let r = ok(
        &p,
        "crm.item.update",
        json!({"entityTypeId": 1, "id": id, "fields": {"ufCrm_SCORE": 75, "title": "T2"}}),
    )
    .await;
    assert_eq!(r["item"]["ufCrm_SCORE"], json!(75));
    assert_eq!(p.get_lead(id).unwrap()["UF_CRM_SCORE"], json!("75"));

    let list = ok(
        &p,
        "crm.item.list",
        json!({"entityTypeId": 1, "select": ["id", "ufCrm_SCORE"], "filter": {">=ufCrm_SCORE": 70}}),
    )
    .await;
    assert_eq!(list["items"], json!([{"id": id, "ufCrm_SCORE": 75}]));

    let (status, body) = call(&p, "crm.item.get", json!({"entityTypeId": 1, "id": 4242})).await;
    assert_eq!((status, body["error"].clone()), (400, json!("NOT_FOUND")));
    assert_eq!(body["error_description"], json!("Element not found"));
    let (status, _) = call(&p, "crm.item.get", json!({"entityTypeId": 2, "id": id})).await;
    assert_eq!(status, 400);
    p.shutdown().await;
}

#[tokio::test]
async fn userfields_get_prefix_and_enum_ids() {
    let p = portal().await;
    let id = ok(
        &p,
        "crm.lead.userfield.add",
        json!({"fields": {"FIELD_NAME": "TIER", "USER_TYPE_ID": "enumeration", "LABEL": "Tier",
               "LIST": [{"VALUE": "cold", "XML_ID": "cold"}, {"VALUE": "warm", "XML_ID": "warm"},
                        {"VALUE": "hot", "XML_ID": "hot"}]}}),
    )
    .await;
    assert!(id.as_u64().is_some());
    let list = ok(
        &p,
        "crm.lead.userfield.list",
        json!({"filter": {"FIELD_NAME": "UF_CRM_TIER"}}),
    )
    .await;
    let field = &list[0];
    assert_eq!(field["ENTITY_ID"], json!("CRM_LEAD"));
    assert_eq!(field["USER_TYPE_ID"], json!("enumeration"));
    let hot = field["LIST"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["XML_ID"] == json!("hot"))
        .unwrap();
    let hot_id: u64 = hot["ID"].as_str().unwrap().parse().unwrap();

    let lead = p.add_lead(json!({"TITLE": "L"})).unwrap();
    ok(
        &p,
        "crm.lead.update",
        json!({"id": lead, "fields": {"UF_CRM_TIER": hot_id}}),
    )
    .await;
    assert_eq!(
        p.get_lead(lead).unwrap()["UF_CRM_TIER"],
        json!(hot_id.to_string())
    );
    // A value that is not an item id is not stored.
    ok(
        &p,
        "crm.lead.update",
        json!({"id": lead, "fields": {"UF_CRM_TIER": "hot"}}),
    )
    .await;
    assert_eq!(
        p.get_lead(lead).unwrap()["UF_CRM_TIER"],
        json!(hot_id.to_string())
    );

    let (status, body) = call(
        &p,
        "crm.lead.userfield.add",
        json!({"fields": {"FIELD_NAME": "TIER", "USER_TYPE_ID": "string"}}),
    )
    .await;
    assert_eq!((status, body["error"].clone()), (400, json!("ERROR_CORE")));
    p.shutdown().await;
}

#[tokio::test]
async fn activities_todos_comments_and_tasks() {
    let p = portal().await;
    let lead = p
        .add_lead(json!({"TITLE": "L", "ASSIGNED_BY_ID": 7}))
        .unwrap();
    let call_id = p
        .add_activity(json!({"OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 2,
                             "DIRECTION": 1, "SUBJECT": "Inbound call", "COMPLETED": "Y"}))
        .unwrap();
    let a = ok(&p, "crm.activity.get", json!({"id": call_id})).await;
    assert_eq!(a["OWNER_ID"], json!(lead.to_string()));
    assert_eq!(a["OWNER_TYPE_ID"], json!("1"));
    assert_eq!(a["PROVIDER_ID"], json!("VOXIMPLANT_CALL"));
    assert_eq!(a["DIRECTION"], json!("1"));
    assert_eq!(a["COMPLETED"], json!("Y"));

    let todo = ok(
        &p,
        "crm.activity.todo.add",
        json!({"ownerTypeId": 1, "ownerId": lead, "deadline": "2026-11-20T12:00:00+03:00",
               "title": "Call now", "responsibleId": 7}),
    )
    .await;
    let todo_id = todo["id"].as_u64().unwrap();
    let todos = p.todos();
    assert_eq!(todos.len(), 1);
    assert_eq!(todos[0]["ID"], json!(todo_id.to_string()));
    assert_eq!(todos[0]["TYPE_ID"], json!("6"));
    let (status, body) = call(
        &p,
        "crm.activity.todo.add",
        json!({"ownerTypeId": 1, "ownerId": lead, "deadline": "soon"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("WRONG_DATETIME_FORMAT"))
    );

    let listed = ok(
        &p,
        "crm.activity.list",
        json!({"filter": {"OWNER_TYPE_ID": 1, "OWNER_ID": lead}, "order": {"ID": "ASC"},
               "select": ["ID", "TYPE_ID"]}),
    )
    .await;
    assert_eq!(
        listed,
        json!([{"ID": call_id.to_string(), "TYPE_ID": "2"},
                              {"ID": todo_id.to_string(), "TYPE_ID": "6"}])
    );
    let bound = ok(
        &p,
        "crm.activity.list",
        json!({"filter": {"BINDINGS": [{"OWNER_TYPE_ID": 1, "OWNER_ID": lead}], "TYPE_ID": 2}}),
    )
    .await;
    assert_eq!(bound.as_array().unwrap().len(), 1);

    let cid = ok(
        &p,
        "crm.timeline.comment.add",
        json!({"fields": {"ENTITY_ID": lead, "ENTITY_TYPE": "lead", "COMMENT": "score 80"}}),
    )
    .await;
    assert!(cid.as_u64().is_some());
    assert_eq!(p.comments()[0].comment, "score 80");
    let (status, _) = call(
        &p,
        "crm.timeline.comment.add",
        json!({"FIELDS": {"ENTITY_ID": lead, "ENTITY_TYPE": "lead", "COMMENT": "x"}}),
    )
    .await;
    assert_eq!(status, 400, "uppercase FIELDS is not read");

    let t = ok(
        &p,
        "tasks.task.add",
        json!({"fields": {"TITLE": "Call ACME", "RESPONSIBLE_ID": 7, "PRIORITY": 2,
                          "DEADLINE": "2026-11-20T12:00:00+03:00",
                          "DESCRIPTION": "[leadscore:L1]", "UF_CRM_TASK": [format!("L_{lead}")]}}),
    )
    .await;
    let task_id = t["task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(t["task"]["status"], json!("2"));
    assert_eq!(t["task"]["responsibleId"], json!("7"));
    let found = ok(
        &p,
        "tasks.task.list",
        json!({"filter": {"UF_CRM_TASK": format!("L_{lead}"), "%DESCRIPTION": "leadscore:L1"},
               "select": ["ID", "STATUS", "UF_CRM_TASK"]}),
    )
    .await;
    assert_eq!(found["tasks"][0]["id"], json!(task_id));
    assert_eq!(found["tasks"][0]["ufCrmTask"], json!([format!("L_{lead}")]));
    let got = ok(&p, "tasks.task.get", json!({"taskId": task_id})).await;
    assert_eq!(got["task"]["title"], json!("Call ACME"));
    // The task also shows on the lead's timeline as a task activity.
    assert!(p.activities().iter().any(|a| a["TYPE_ID"] == json!("3")));
    let (status, body) = call(
        &p,
        "tasks.task.add",
        json!({"fields": {"RESPONSIBLE_ID": 7}}),
    )
    .await;
    assert_eq!((status, body["error"].clone()), (400, json!("ERROR_CORE")));
    p.shutdown().await;
}

#[tokio::test]
async fn auth_paths_and_encodings() {
    let p = portal().await;
    let id = p.add_lead(json!({"TITLE": "Q"})).unwrap();
    let hook = p.webhook_url().expose_secret().to_owned();
    let client = reqwest::Client::new();

    // Wrong code.
    let bad = format!("{}/rest/1/wrongcode/crm.lead.get.json", p.base_url());
    let resp = client
        .post(bad)
        .json(&json!({"id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
    );

    // GET with a PHP query and the .json suffix.
    let resp = client
        .get(format!(
            "{hook}crm.lead.list.json?filter%5BID%5D={id}&select[]=ID&select[]=TITLE"
        ))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["result"],
        json!([{"ID": id.to_string(), "TITLE": "Q"}])
    );
    assert!(body["time"]["operating_reset_at"].is_i64());
    assert!(body["time"]["date_start"].is_string());

    // Form body.
    let resp = client
        .post(format!("{hook}crm.lead.update"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id={id}&fields%5BTITLE%5D=Form+title"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(p.get_lead(id).unwrap()["TITLE"], json!("Form title"));

    // Unknown method.
    let (status, body) = call(&p, "crm.nothing.here", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"})
    );
    assert_eq!(p.count_status(401), 1);
    p.shutdown().await;
}

#[tokio::test]
async fn oauth_tokens_expire_and_refresh_tokens_rotate_once() {
    let p = Sandbox::start(SandboxOptions {
        rate_limit: None,
        oauth: Some(OAuthOptions {
            client_id: "app.1".into(),
            client_secret: SecretString::from("s3cret"),
            access_token: SecretString::from("access-1"),
            refresh_token: SecretString::from("refresh-1"),
            access_ttl: Duration::from_secs(3600),
        }),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let rest = |m: &str| format!("{}{}", p.client_endpoint(), m);
    let resp = client
        .post(rest("crm.lead.list"))
        .json(&json!({"auth": "access-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    p.expire_access_tokens();
    let resp = client
        .post(rest("crm.lead.list"))
        .json(&json!({"auth": "access-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "expired_token", "error_description": "The access token provided has expired."})
    );

    let refresh = |token: &str| {
        client.get(p.oauth_token_url()).query(&[
            ("grant_type", "refresh_token"),
            ("client_id", "app.1"),
            ("client_secret", "s3cret"),
            ("refresh_token", token),
        ])
    };
    let fresh: Value = refresh("refresh-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = fresh["access_token"].as_str().unwrap().to_owned();
    let new_refresh = fresh["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, "refresh-1");
    assert_eq!(fresh["expires_in"], json!(3600));
    assert_eq!(fresh["member_id"], json!(p.member_id()));
    let (a, r) = p.oauth_tokens().unwrap();
    assert_eq!(
        (a.expose_secret(), r.expose_secret()),
        (access.as_str(), new_refresh.as_str())
    );

    let reused = refresh("refresh-1").send().await.unwrap();
    assert_eq!(reused.status().as_u16(), 400);
    let body: Value = reused.json().await.unwrap();
    assert_eq!(body["error"], json!("invalid_grant"));

    let resp = client
        .post(rest("crm.lead.list"))
        .form(&[("auth", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    p.shutdown().await;
}

#[tokio::test]
async fn completing_a_bound_task_completes_its_activity() {
    let p = portal().await;
    let lead = p.add_lead(json!({"TITLE": "L"})).unwrap();
    let t = ok(
        &p,
        "tasks.task.add",
        json!({"fields": {"TITLE": "Call", "RESPONSIBLE_ID": 1, "UF_CRM_TASK": [format!("L_{lead}")]}}),
    )
    .await;
    let task_id = t["task"]["id"].as_str().unwrap().to_owned();
    let done = ok(&p, "tasks.task.complete", json!({"taskId": task_id})).await;
    assert_eq!(done["task"]["status"], json!("5"));
    assert!(done["task"]["closedDate"].is_string());
    let act = p
        .activities()
        .into_iter()
        .find(|a| a["TYPE_ID"] == json!("3"))
        .unwrap();
    assert_eq!(act["COMPLETED"], json!("Y"));
    assert_eq!(act["ASSOCIATED_ENTITY_ID"], json!(task_id));
    let open = ok(
        &p,
        "tasks.task.list",
        json!({"filter": {"UF_CRM_TASK": format!("L_{lead}"), "!STATUS": 5}}),
    )
    .await;
    assert_eq!(open["tasks"], json!([]));
    assert_eq!(
        open["total"],
        json!(null),
        "total is beside result, not inside"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let p = portal().await;
    let url = format!("{}crm.lead.list", p.webhook_url().expose_secret());
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 200);
    drop(p);
    let mut refused = false;
    for _ in 0..50 {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        if client.get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the port still answers after drop");
}

#[test]
fn the_handle_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<leadscore_bitrix24_sandbox::SandboxHandle>();
    send_sync::<SandboxOptions>();
}

#[tokio::test]
async fn crm_deal_methods_and_deal_user_fields() {
    let p = portal().await;
    // Deal user fields are their own list: a lead field of the same name is another field.
    let uf = ok(
        &p,
        "crm.deal.userfield.add",
        json!({"fields": {"FIELD_NAME": "SCORE", "USER_TYPE_ID": "integer"}}),
    )
    .await;
    assert!(uf.as_u64().is_some(), "{uf}");
    let list = ok(
        &p,
        "crm.deal.userfield.list",
        json!({"filter": {"FIELD_NAME": "UF_CRM_SCORE"}}),
    )
    .await;
    assert_eq!(list[0]["ENTITY_ID"], json!("CRM_DEAL"));
    let leads = ok(&p, "crm.lead.userfield.list", json!({})).await;
    assert_eq!(leads, json!([]));
    let id = ok(
        &p,
        "crm.deal.add",
        json!({"fields": {"TITLE": "Поставка", "STAGE_ID": "C1:PREPARATION", "CATEGORY_ID": 1,
                          "OPPORTUNITY": 1500, "UF_CRM_SCORE": 40}}),
    )
    .await;
    let deal = ok(&p, "crm.deal.get", json!({"id": id})).await;
    assert_eq!(deal["TITLE"], json!("Поставка"));
    assert_eq!(deal["OPPORTUNITY"], json!("1500.00"));
    assert_eq!(deal["CATEGORY_ID"], json!("1"));
    assert_eq!(deal["STAGE_SEMANTIC_ID"], json!("P"));
    assert_eq!(deal["CLOSED"], json!("N"));
    assert_eq!(deal["UF_CRM_SCORE"], json!("40"));
    assert_eq!(deal["MODIFY_BY_ID"], json!("1"));
    assert!(deal["DATE_MODIFY"].as_str().unwrap().ends_with("+03:00"));
    // update: true; a read-only field is ignored; the stage moves the semantics.
    let done = ok(
        &p,
        "crm.deal.update",
        json!({"id": id, "fields": {"UF_CRM_SCORE": 55, "STAGE_ID": "C1:WON", "DATE_CREATE": "2020-01-01T00:00:00+03:00"}}),
    )
    .await;
    assert_eq!(done, json!(true));
    let deal = ok(&p, "crm.deal.get", json!({"id": id})).await;
    assert_eq!(deal["UF_CRM_SCORE"], json!("55"));
    assert_eq!(deal["STAGE_SEMANTIC_ID"], json!("S"));
    assert_ne!(deal["DATE_CREATE"], json!("2020-01-01T00:00:00+03:00"));
    // list: user fields only when asked for.
    let rows = ok(
        &p,
        "crm.deal.list",
        json!({"filter": {"@ID": [id]}, "select": ["ID", "DATE_MODIFY"], "start": -1}),
    )
    .await;
    assert!(rows[0].get("UF_CRM_SCORE").is_none() && rows[0].get("TITLE").is_none());
    let rows = ok(
        &p,
        "crm.deal.list",
        json!({"filter": {"@ID": [id]}, "select": ["*", "UF_*"]}),
    )
    .await;
    assert_eq!(rows[0]["UF_CRM_SCORE"], json!("55"));
    let (status, body) = call(&p, "crm.deal.get", json!({"id": 999})).await;
    assert_eq!(
        (status, body["error_description"].clone()),
        (400, json!("Not found"))
    );
    // Deal activities (owner type 2), and a task bound D_<id> puts one on the deal.
    let (status, _) = call(
        &p,
        "crm.activity.add",
        json!({"fields": {"OWNER_TYPE_ID": 2, "OWNER_ID": 999, "TYPE_ID": 2}}),
    )
    .await;
    assert_eq!(status, 400, "the owning deal must exist");
    ok(
        &p,
        "crm.activity.add",
        json!({"fields": {"OWNER_TYPE_ID": 2, "OWNER_ID": id, "TYPE_ID": 2, "SUBJECT": "call"}}),
    )
    .await;
    ok(&p, "tasks.task.add", json!({"fields": {"TITLE": "Позвонить", "RESPONSIBLE_ID": 1, "UF_CRM_TASK": [format!("D_{id}")]}})).await;
    let acts = ok(
        &p,
        "crm.activity.list",
        json!({"filter": {"OWNER_TYPE_ID": 2, "OWNER_ID": id}}),
    )
    .await;
    let types: Vec<&str> = acts
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["TYPE_ID"].as_str())
        .collect();
    assert_eq!(types.len(), 2, "{acts}");
    assert!(types.contains(&"3"), "the task's activity: {acts}");
    p.shutdown().await;
}

#[tokio::test]
async fn the_crm_mode_and_a_simple_mode_portal_without_leads() {
    let p = portal().await;
    let lead = p.add_lead(json!({"TITLE": "L"})).unwrap();
    assert_eq!(ok(&p, "crm.settings.mode.get", json!({})).await, json!(1));
    p.set_simple_mode(true);
    assert_eq!(ok(&p, "crm.settings.mode.get", json!({})).await, json!(2));
    assert_eq!(ok(&p, "crm.lead.list", json!({})).await, json!([]));
    for (method, params) in [
        ("crm.lead.get", json!({"id": lead})),
        ("crm.lead.add", json!({"fields": {"TITLE": "x"}})),
        (
            "crm.lead.update",
            json!({"id": lead, "fields": {"TITLE": "x"}}),
        ),
    ] {
        let (status, body) = call(&p, method, params).await;
        assert_eq!(
            (status, body["error"].clone()),
            (403, json!("ACCESS_DENIED")),
            "{method}"
        );
    }
    // Deals work as ever.
    let id = ok(&p, "crm.deal.add", json!({"fields": {"TITLE": "D"}})).await;
    assert!(id.as_u64().is_some());
    p.set_simple_mode(false);
    assert_eq!(
        ok(&p, "crm.lead.get", json!({"id": lead})).await["TITLE"],
        json!("L")
    );
    p.shutdown().await;
}

#[tokio::test]
async fn duplicate_findbycomm_matches_emails_by_case_and_phones_by_digits() {
    let p = portal().await;
    let a = p
        .add_lead(json!({"TITLE": "A", "EMAIL": [{"VALUE": "Anna@Corp.test"}],
                          "PHONE": [{"VALUE": "+7 (912) 345-67-89"}]}))
        .unwrap();
    let b = p
        .add_lead(json!({"TITLE": "B", "PHONE": [{"VALUE": "8 912 345 67 89"}]}))
        .unwrap();
    let find =
        |kind: &str, values: Value| json!({"entity_type": "LEAD", "type": kind, "values": values});
    let r = ok(
        &p,
        "crm.duplicate.findbycomm",
        find("EMAIL", json!(["anna@corp.test"])),
    )
    .await;
    assert_eq!(r, json!({"LEAD": [a]}));
    // Phones on their digits as written: `+7…` and `8…` are two numbers to the portal.
    let r = ok(
        &p,
        "crm.duplicate.findbycomm",
        find("PHONE", json!(["79123456789"])),
    )
    .await;
    assert_eq!(r, json!({"LEAD": [a]}));
    let r = ok(
        &p,
        "crm.duplicate.findbycomm",
        find("PHONE", json!(["79123456789", "8-912-345-67-89"])),
    )
    .await;
    assert_eq!(r, json!({"LEAD": [a, b]}));
    // Nothing found is PHP's empty array; contacts are not leads.
    let r = ok(
        &p,
        "crm.duplicate.findbycomm",
        find("EMAIL", json!(["nobody@x.test"])),
    )
    .await;
    assert_eq!(r, json!([]));
    let r = ok(
        &p,
        "crm.duplicate.findbycomm",
        json!({"entity_type": "CONTACT", "type": "EMAIL", "values": ["anna@corp.test"]}),
    )
    .await;
    assert_eq!(r, json!([]));
    let (status, body) = call(&p, "crm.duplicate.findbycomm", json!({"values": ["x"]})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], json!("Communication type is not defined"));
    let (status, _) = call(&p, "crm.duplicate.findbycomm", json!({"type": "EMAIL"})).await;
    assert_eq!(status, 400);
    p.shutdown().await;
}
