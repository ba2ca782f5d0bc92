//! `batch`: up to 50 REST calls in one request (one unit of the rate limit).
//!
//! Commands travel as PHP query strings (`crm.lead.update?id=1&fields%5BTITLE%5D=x`),
//! built here like PHP's `http_build_query`. Keys must be non-numeric (`c0`, `u123`):
//! with numeric keys PHP turns the result maps into lists and the keys are lost. The
//! answer is 200 even when commands fail; each command's result or error is returned
//! separately so one bad lead never fails the others.

use std::collections::{BTreeMap, BTreeSet};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::error::Error;
use crate::types::{value_i64, BatchResult, PageInfo, Time};

/// Most commands Bitrix24 accepts in one batch (`ERROR_BATCH_LENGTH_EXCEEDED` above).
pub const MAX_COMMANDS: usize = 50;

/// One call inside a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCommand {
    /// Unique, non-numeric key (`[A-Za-z0-9_]`, not all digits).
    pub key: String,
    pub method: String,
    pub params: Value,
}

impl BatchCommand {
    /// A command; the key is checked when the batch is sent.
    pub fn new(key: impl Into<String>, method: impl Into<String>, params: Value) -> Self {
        BatchCommand {
            key: key.into(),
            method: method.into(),
            params,
        }
    }
}

/// The outcome of one command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub result: Result<Value, Error>,
    /// Paging of a list command (`result_next` / `result_total`).
    pub page: PageInfo,
    /// The command's own timing (`result_time`), for operating-time accounting.
    pub time: Option<Time>,
}

/// What PHP's `urlencode` leaves alone: letters, digits, `-_.`.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn push_pairs(prefix: &str, v: &Value, out: &mut Vec<String>) {
    let enc = |s: &str| utf8_percent_encode(s, QUERY).to_string();
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push(format!("{}={}", enc(prefix), if *b { "1" } else { "0" })),
        Value::Number(n) => out.push(format!("{}={}", enc(prefix), n)),
        Value::String(s) => out.push(format!("{}={}", enc(prefix), enc(s))),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                push_pairs(&format!("{prefix}[{i}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                push_pairs(&format!("{prefix}[{k}]"), item, out);
            }
        }
    }
}

/// Encode parameters as PHP's `http_build_query` does (nested keys in brackets,
/// `true`/`false` as `1`/`0`, `null` and empty arrays omitted). Top-level scalars have
/// no key and are rejected by the caller.
pub fn encode_params(params: &Value) -> String {
    let mut out = Vec::new();
    if let Value::Object(map) = params {
        for (k, v) in map {
            push_pairs(k, v, &mut out);
        }
    }
    out.join("&")
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !k.bytes().all(|b| b.is_ascii_digit())
}

/// Check a batch's commands and build the `batch` parameters (`halt: 0`).
pub fn build(commands: &[BatchCommand]) -> Result<Value, Error> {
    if commands.is_empty() || commands.len() > MAX_COMMANDS {
        return Err(Error::Config(format!(
            "a batch needs 1..={MAX_COMMANDS} commands, got {}",
            commands.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut cmd = serde_json::Map::new();
    for c in commands {
        if !valid_key(&c.key) || !seen.insert(c.key.as_str()) {
            return Err(Error::Config(format!(
                "bad or duplicate batch key {:?}",
                c.key
            )));
        }
        if c.method.eq_ignore_ascii_case("batch") || !c.params.is_object() {
            return Err(Error::Config(format!(
                "batch command {:?}: nested batch or non-object params",
                c.key
            )));
        }
        let query = encode_params(&c.params);
        let line = if query.is_empty() {
            c.method.clone()
        } else {
            format!("{}?{}", c.method, query)
        };
        cmd.insert(c.key.clone(), Value::String(line));
    }
    Ok(json!({ "halt": 0, "cmd": cmd }))
}

/// Split a `batch` answer into per-command outcomes. A command that appears in neither
/// `result` nor `result_error` gets an error (it was not executed, e.g. after a halt).
/// When PHP turned `result_error` into a keyless list, errors are matched to the
/// commands that have no result, in order.
pub fn split(
    commands: &[BatchCommand],
    raw: &Value,
) -> Result<BTreeMap<String, CommandResult>, Error> {
    let parsed: BatchResult = serde_json::from_value(raw.clone()).map_err(|e| Error::Decode {
        method: "batch".into(),
        detail: e.to_string(),
    })?;
    let BatchResult {
        result,
        result_error,
        result_total,
        result_next,
        result_time,
    } = parsed;
    let mut errors = result_error.0;
    let keyed = commands.iter().any(|c| errors.contains_key(&c.key));
    let mut positional: Vec<_> = if keyed {
        Vec::new()
    } else {
        let mut v: Vec<(usize, _)> = std::mem::take(&mut errors)
            .into_iter()
            .filter_map(|(k, e)| k.parse::<usize>().ok().map(|i| (i, e)))
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v.into_iter().map(|(_, e)| e).collect()
    };
    positional.reverse();
    let mut out = BTreeMap::new();
    for c in commands {
        let page = PageInfo {
            next: result_next
                .0
                .get(&c.key)
                .and_then(value_i64)
                .map(|n| n as u64),
            total: result_total
                .0
                .get(&c.key)
                .and_then(value_i64)
                .map(|n| n as u64),
        };
        let time = result_time.0.get(&c.key).cloned();
        let res = if let Some(v) = result.0.get(&c.key) {
            Ok(v.clone())
        } else if let Some(e) = errors.remove(&c.key).or_else(|| positional.pop()) {
            Err(Error::classify(
                None,
                e.error.as_deref().unwrap_or(""),
                e.error_description.as_deref().unwrap_or(""),
                &c.method,
            ))
        } else {
            Err(Error::Command {
                code: "NOT_EXECUTED".into(),
                description: "the batch answer has neither a result nor an error for this command"
                    .into(),
            })
        };
        out.insert(
            c.key.clone(),
            CommandResult {
                result: res,
                page,
                time,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_http_build_query() {
        let p = json!({"id": 5, "fields": {"UF_CRM_SCORE": 71, "TITLE": "A & B [x]", "OK": true},
                       "select": ["*", "UF_*"], "skip": null, "params": {"REGISTER_SONET_EVENT": "N"}});
        let q = encode_params(&p);
        assert_eq!(
            q,
            "fields%5BOK%5D=1&fields%5BTITLE%5D=A%20%26%20B%20%5Bx%5D&fields%5BUF_CRM_SCORE%5D=71&id=5&params%5BREGISTER_SONET_EVENT%5D=N&select%5B0%5D=%2A&select%5B1%5D=UF_%2A"
        );
    }

    #[test]
    fn build_checks_keys_and_size() {
        let c = |k: &str| BatchCommand::new(k, "crm.lead.get", json!({"id": 1}));
        let body = build(&[c("c0"), c("lead_7")]).unwrap();
        assert_eq!(body["halt"], json!(0));
        assert_eq!(body["cmd"]["c0"], json!("crm.lead.get?id=1"));
        for bad in ["0", "12", "", "a-b", "a b"] {
            assert!(build(&[c(bad)]).is_err(), "{bad}");
        }
        assert!(build(&[c("a"), c("a")]).is_err());
        let many: Vec<_> = (0..51).map(|i| c(&format!("c{i}"))).collect();
        assert!(build(&many).is_err());
        assert!(build(&many[..50]).is_ok());
        assert!(build(&[]).is_err());
        assert!(build(&[BatchCommand::new("c", "batch", json!({}))]).is_err());
    }

    #[test]
    fn splits_mixed_results_with_php_quirks() {
        let cmds: Vec<_> = ["c0", "c1", "c2"]
            .iter()
            .map(|k| BatchCommand::new(*k, "crm.lead.list", json!({})))
            .collect();
        let raw = json!({"result": {"c0": [{"ID": "1"}], "c1": true},
            "result_error": {"c2": {"error": "", "error_description": "Not found"}},
            "result_total": {"c0": "120"}, "result_next": {"c0": 50},
            "result_time": {"c0": {"duration": 0.1, "operating": 3}}});
        let out = split(&cmds, &raw).unwrap();
        assert_eq!(
            out["c0"].page,
            PageInfo {
                next: Some(50),
                total: Some(120)
            }
        );
        assert_eq!(out["c0"].time.as_ref().unwrap().operating, Some(3.0));
        assert_eq!(out["c1"].result, Ok(json!(true)));
        let err = out["c2"].result.clone().unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
    }

    #[test]
    fn keyless_error_list_and_missing_commands() {
        let cmds: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|k| BatchCommand::new(*k, "crm.lead.get", json!({})))
            .collect();
        // PHP lost the keys: errors map to result-less commands in order.
        let raw = json!({"result": {"b": {"ID": "2"}}, "result_error": [
            {"error": "", "error_description": "ID is not defined or invalid."},
            {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}],
            "result_total": [], "result_next": [], "result_time": []});
        let out = split(&cmds, &raw).unwrap();
        assert!(out["a"].result.as_ref().unwrap_err().is_not_found());
        assert!(out["b"].result.is_ok());
        assert_eq!(out["c"].result, Err(Error::QueryLimitExceeded));
        // The fast_bitrix24 real capture: everything empty but one keyless error.
        let raw = json!({"result": [], "result_error": [{"error": "", "error_description": "ID is not defined or invalid."}],
            "result_total": [], "result_next": [], "result_time": []});
        let out = split(&cmds[..2], &raw).unwrap();
        assert!(out["a"].result.as_ref().unwrap_err().is_not_found());
        assert!(
            matches!(&out["b"].result, Err(Error::Command { code, .. }) if code == "NOT_EXECUTED")
        );
        assert!(split(&cmds, &json!("nope")).is_err());
    }
}
