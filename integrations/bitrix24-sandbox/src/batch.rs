//! `batch`: up to 50 commands of the form `method?php-query`, run in order, each able to
//! refer to earlier results with `$result[cmd][field]…`. Errors of single commands go to
//! `result_error` (HTTP 200 overall); `halt=1` stops at the first one. The answer keeps
//! PHP's serialisation quirks: empty maps are `[]`, maps keyed `0..n` lose their keys.

use serde_json::{Map, Value};

use super::php::{as_flag, parse_query, scalar_string};
use super::store::ApiError;

/// Most commands one batch may carry.
pub(crate) const MAX_COMMANDS: usize = 50;

/// One command of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    pub key: String,
    pub method: String,
    pub query: String,
}

/// Reads `cmd` and `halt`, enforcing the documented limits.
pub(crate) fn parse(params: &Map<String, Value>) -> Result<(Vec<Command>, bool), ApiError> {
    let halt = params.get("halt").is_some_and(as_flag);
    let entries: Vec<(String, Value)> = match params.get("cmd") {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v.clone()))
            .collect(),
        _ => {
            return Err(ApiError::new(
                400,
                "INVALID_ARG_VALUE",
                "Required parameter \"cmd\" is missing",
            ))
        }
    };
    if entries.len() > MAX_COMMANDS {
        return Err(ApiError::new(
            400,
            "ERROR_BATCH_LENGTH_EXCEEDED",
            format!("Max batch length exceeded ({MAX_COMMANDS})"),
        ));
    }
    let mut commands = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let raw = scalar_string(&value).unwrap_or_default();
        let (method, query) = raw.split_once('?').unwrap_or((raw.as_str(), ""));
        let method = method.trim().trim_end_matches(".json").to_ascii_lowercase();
        if method == "batch" {
            return Err(ApiError::new(
                405,
                "ERROR_BATCH_METHOD_NOT_ALLOWED",
                "Method is not allowed for batch usage.",
            ));
        }
        commands.push(Command {
            key,
            method,
            query: query.to_owned(),
        });
    }
    Ok((commands, halt))
}

/// The parameters of one command with `$result[...]` references resolved against the
/// results so far. A value that is exactly one reference takes the referenced value
/// (scalars as strings, like PHP string interpolation); references inside longer
/// strings are interpolated; unresolved references stay as written.
pub(crate) fn resolve(query: &str, results: &Map<String, Value>) -> Map<String, Value> {
    let parsed = parse_query(query);
    parsed
        .into_iter()
        .map(|(k, v)| (k, substitute(v, results)))
        .collect()
}

fn substitute(v: Value, results: &Map<String, Value>) -> Value {
    match v {
        Value::String(s) => Value::String(interpolate(&s, results)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|x| substitute(x, results)).collect())
        }
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, x)| (k, substitute(x, results)))
                .collect(),
        ),
        other => other,
    }
}

fn interpolate(s: &str, results: &Map<String, Value>) -> String {
    const MARK: &str = "$result[";
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find(MARK) {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + "$result".len()..];
        let mut path = Vec::new();
        let mut tail = after;
        while let Some(inner) = tail.strip_prefix('[') {
            let Some(close) = inner.find(']') else { break };
            path.push(&inner[..close]);
            tail = &inner[close + 1..];
        }
        let consumed = &rest[pos..rest.len() - tail.len()];
        match lookup(results, &path).and_then(scalar_string) {
            Some(found) => out.push_str(&found),
            None => out.push_str(consumed),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn lookup<'a>(results: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = results.get(*first)?;
    for seg in rest {
        cur = match cur {
            Value::Object(m) => m.get(*seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_resolve_into_scalars_and_lists() {
        let mut results = Map::new();
        results.insert("get".into(), json!({"ID": "5", "ASSIGNED_BY_ID": "7"}));
        results.insert("list".into(), json!({"items": [{"id": 10}, {"id": 11}]}));
        let p = resolve(
            "id=$result[get][ID]&filter[>id]=$result[list][items][1][id]&t=L_$result[get][ID]!&x=$result[none][ID]",
            &results,
        );
        assert_eq!(p["id"], json!("5"));
        assert_eq!(p["filter"], json!({">id": "11"}));
        assert_eq!(p["t"], json!("L_5!"));
        assert_eq!(p["x"], json!("$result[none][ID]"));
    }

    #[test]
    fn limits_are_enforced() {
        let mut cmd = Map::new();
        for i in 0..51 {
            cmd.insert(format!("c{i}"), json!("crm.lead.get?id=1"));
        }
        let mut p = Map::new();
        p.insert("cmd".into(), Value::Object(cmd));
        assert_eq!(
            parse(&p).map_err(|e| e.code).err().as_deref(),
            Some("ERROR_BATCH_LENGTH_EXCEEDED")
        );
        let p: Map<String, Value> =
            serde_json::from_value(json!({"cmd": {"a": "batch?cmd[b]=crm.lead.get"}}))
                .unwrap_or_default();
        assert_eq!(parse(&p).map_err(|e| e.status).err(), Some(405));
    }
}
