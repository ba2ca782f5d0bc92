//! Paging (50 per page, `next`/`total`, `start=-1`), filters, and `batch` with its PHP
//! quirks, over real HTTP.

use crate::support::{call, ok, portal};
use serde_json::{json, Value};

#[tokio::test]
async fn paging_with_next_total_and_start_minus_one() {
    let p = portal().await;
    let ids: Vec<u64> = (0..120)
        .map(|i| p.add_lead(json!({"TITLE": format!("L{i}")})).unwrap())
        .collect();
    let (_, first) = call(&p, "crm.lead.list", json!({"order": {"ID": "ASC"}})).await;
    assert_eq!(first["result"].as_array().unwrap().len(), 50);
    assert_eq!(
        (first["total"].clone(), first["next"].clone()),
        (json!(120), json!(50))
    );
    let (_, last) = call(&p, "crm.lead.list", json!({"start": 100})).await;
    assert_eq!(last["result"].as_array().unwrap().len(), 20);
    assert_eq!(last["total"], json!(120));
    assert!(last.get("next").is_none());

    // start=-1: no total, no next; walk with >ID.
    let mut seen = Vec::new();
    let mut after = 0u64;
    loop {
        let (_, page) = call(
            &p,
            "crm.lead.list",
            json!({"start": -1, "order": {"ID": "ASC"}, "filter": {">ID": after}, "select": ["ID"]}),
        )
        .await;
        assert!(page.get("total").is_none() && page.get("next").is_none());
        let items = page["result"].as_array().unwrap().clone();
        for it in &items {
            seen.push(it["ID"].as_str().unwrap().parse::<u64>().unwrap());
        }
        if items.len() < 50 {
            break;
        }
        after = *seen.last().unwrap();
    }
    assert_eq!(seen, ids);

    // crm.item.list pages the same way and filters on dates.
    let (_, items) = call(
        &p,
        "crm.item.list",
        json!({"entityTypeId": 1, "start": 50, "select": ["id"], "order": {"id": "DESC"}}),
    )
    .await;
    assert_eq!(items["result"]["items"].as_array().unwrap().len(), 50);
    assert_eq!(items["result"]["items"][0]["id"], json!(ids[69]));
    assert_eq!(items["next"], json!(100));
    let aged = p
        .add_lead(json!({"TITLE": "old", "DATE_MODIFY": "2020-01-01T00:00:00+03:00"}))
        .unwrap();
    let old = ok(
        &p,
        "crm.lead.list",
        json!({"filter": {"<DATE_MODIFY": "2021-01-01T00:00:00+03:00"}, "select": ["ID"]}),
    )
    .await;
    assert_eq!(old, json!([{"ID": aged.to_string()}]));
    let some = ok(
        &p,
        "crm.lead.list",
        json!({"filter": {"@ID": [ids[0], ids[5]], "!ID": ids[5]}, "select": ["ID"]}),
    )
    .await;
    assert_eq!(some, json!([{"ID": ids[0].to_string()}]));
    p.shutdown().await;
}

#[tokio::test]
async fn select_star_uf_and_multifields() {
    let p = portal().await;
    p.add_userfield(json!({"FIELD_NAME": "SCORE", "USER_TYPE_ID": "integer"}))
        .unwrap();
    p.add_lead(json!({"TITLE": "A", "UF_CRM_SCORE": 3, "PHONE": [{"VALUE": "+1"}]}))
        .unwrap();
    let plain = ok(&p, "crm.lead.list", json!({})).await;
    assert!(plain[0].get("TITLE").is_some());
    assert!(plain[0].get("UF_CRM_SCORE").is_none(), "no UF without UF_*");
    assert!(
        plain[0].get("PHONE").is_none(),
        "no multi-fields unless named"
    );
    let full = ok(
        &p,
        "crm.lead.list",
        json!({"select": ["*", "UF_*", "PHONE"]}),
    )
    .await;
    assert_eq!(full[0]["UF_CRM_SCORE"], json!("3"));
    assert_eq!(full[0]["PHONE"][0]["VALUE"], json!("+1"));
    p.shutdown().await;
}

#[tokio::test]
async fn batch_runs_commands_with_references_and_php_quirks() {
    let p = portal().await;
    let a = p
        .add_lead(json!({"TITLE": "A", "ASSIGNED_BY_ID": 7}))
        .unwrap();
    let b = p.add_lead(json!({"TITLE": "B"})).unwrap();
    let r = ok(
        &p,
        "batch",
        json!({"halt": 0, "cmd": {
            "get_a": format!("crm.lead.get?id={a}"),
            "list": format!("crm.lead.list?filter[@ID][]={a}&filter[@ID][]={b}&select[]=ID"),
            "same_owner": "crm.lead.list?filter[ASSIGNED_BY_ID]=$result[get_a][ASSIGNED_BY_ID]&select[]=ID",
            "upd": format!("crm.lead.update?id={b}&fields[TITLE]=B2"),
        }}),
    )
    .await;
    assert_eq!(r["result"]["get_a"]["TITLE"], json!("A"));
    assert_eq!(r["result"]["list"].as_array().unwrap().len(), 2);
    assert_eq!(r["result"]["same_owner"], json!([{"ID": a.to_string()}]));
    assert_eq!(r["result"]["upd"], json!(true));
    assert_eq!(r["result_error"], json!([]), "empty map is []");
    assert_eq!(r["result_next"], json!([]));
    assert_eq!(r["result_total"]["list"], json!(2));
    assert!(r["result_time"]["get_a"]["duration"].is_f64());
    assert_eq!(p.get_lead(b).unwrap()["TITLE"], json!("B2"));
    let batch_calls: Vec<_> = p.calls().into_iter().filter(|c| c.in_batch).collect();
    assert_eq!(batch_calls.len(), 4);
    assert_eq!(p.counters().requests, 1);

    // Errors: sequential keys lose their names; halt stops at the first error.
    let r = ok(
        &p,
        "batch",
        json!({"halt": 0, "cmd": ["crm.lead.get?id=9999", format!("crm.lead.get?id={a}")]}),
    )
    .await;
    assert_eq!(r["result"], json!({"1": r["result"]["1"].clone()}));
    assert!(r["result"]["1"].is_object());
    assert_eq!(
        r["result_error"],
        json!([{"error": "", "error_description": "Not found"}]),
        "the only key is 0, so PHP emits a list"
    );
    let r = ok(
        &p,
        "batch",
        json!({"halt": 1, "cmd": {"x": "crm.lead.get?id=9999", "y": format!("crm.lead.get?id={a}")}}),
    )
    .await;
    assert_eq!(r["result"], json!([]));
    assert!(r["result_error"]["x"].is_object());
    let r = ok(
        &p,
        "batch",
        json!({"cmd": ["crm.lead.get?id=9999", "crm.lead.get?id=9998"]}),
    )
    .await;
    assert_eq!(r["result"], json!([]));
    assert_eq!(
        r["result_error"].as_array().map(Vec::len),
        Some(2),
        "keys 0..n become a list"
    );

    // Limits.
    let many: serde_json::Map<String, Value> = (0..51)
        .map(|i| (format!("c{i}"), json!(format!("crm.lead.get?id={a}"))))
        .collect();
    let (status, body) = call(&p, "batch", json!({"cmd": many})).await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("ERROR_BATCH_LENGTH_EXCEEDED"))
    );
    let (status, body) = call(
        &p,
        "batch",
        json!({"cmd": {"n": "batch?cmd[a]=crm.lead.get%3Fid%3D1"}}),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (405, json!("ERROR_BATCH_METHOD_NOT_ALLOWED"))
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_large_portal_answers_id_filtered_batches_quickly() {
    let p = portal().await;
    p.add_userfield(json!({"FIELD_NAME": "SCORE", "USER_TYPE_ID": "integer"}))
        .unwrap();
    let ids: Vec<u64> = (0..10_000)
        .map(|i| p.add_lead(json!({"TITLE": format!("L{i}")})).unwrap())
        .collect();
    for id in &ids {
        p.add_activity(json!({"OWNER_TYPE_ID": 1, "OWNER_ID": id, "TYPE_ID": 2}))
            .unwrap();
    }
    let started = std::time::Instant::now();
    let reads: serde_json::Map<String, Value> = ids
        .chunks(50)
        .take(50)
        .enumerate()
        .map(|(i, chunk)| {
            let q: Vec<String> = chunk
                .iter()
                .map(|id| format!("filter[@id][]={id}"))
                .collect();
            let cmd = format!(
                "crm.item.list?entityTypeId=1&start=-1&select[]=id&select[]=ufCrm_SCORE&{}",
                q.join("&")
            );
            (format!("r{i}"), json!(cmd))
        })
        .collect();
    let r = ok(&p, "batch", json!({"cmd": reads})).await;
    assert_eq!(r["result"]["r49"]["items"].as_array().unwrap().len(), 50);
    assert_eq!(r["result"]["r49"]["items"][0]["id"], json!(ids[49 * 50]));
    let writes: serde_json::Map<String, Value> = ids[..50]
        .iter()
        .map(|id| {
            let cmd = format!("crm.item.update?entityTypeId=1&id={id}&fields[ufCrm_SCORE]=80");
            (format!("w{id}"), json!(cmd))
        })
        .collect();
    let r = ok(&p, "batch", json!({"cmd": writes})).await;
    assert_eq!(r["result_error"], json!([]));
    let acts: serde_json::Map<String, Value> = ids
        .chunks(50)
        .take(50)
        .enumerate()
        .map(|(i, chunk)| {
            let q: Vec<String> = chunk
                .iter()
                .map(|id| format!("filter[@OWNER_ID][]={id}"))
                .collect();
            let cmd = format!(
                "crm.activity.list?start=-1&filter[OWNER_TYPE_ID]=1&select[]=ID&select[]=OWNER_ID&{}",
                q.join("&")
            );
            (format!("a{i}"), json!(cmd))
        })
        .collect();
    let r = ok(&p, "batch", json!({"cmd": acts})).await;
    assert_eq!(r["result"]["a0"].as_array().unwrap().len(), 50);
    let elapsed = started.elapsed();
    eprintln!("2,500 lead reads + 50 writes + 50 activity lists over 10,000 leads and activities in three batches: {elapsed:?}");
    assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(p.get_lead(ids[0]).unwrap()["UF_CRM_SCORE"], json!("80"));
    p.shutdown().await;
}
