//! PHP-flavoured wire helpers: the bracket query-string syntax Bitrix24 accepts in GET
//! queries, form bodies and `batch` commands (`filter[>ID]=5&select[]=ID`), PHP's habit of
//! serialising empty or sequential maps as JSON lists, and lenient scalar readers (the
//! portal accepts `5`, `"5"` and `5.0` alike).

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
pub(crate) fn decode_component(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Splits `a[b][]` into `["a", "b", ""]`. A key without brackets is one segment. A key
/// whose brackets are malformed is taken literally, as PHP does.
fn key_segments(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_owned()];
    };
    if open == 0 {
        return vec![key.to_owned()];
    }
    let mut segments = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while let Some(stripped) = rest.strip_prefix('[') {
        let Some(close) = stripped.find(']') else {
            break;
        };
        segments.push(stripped[..close].to_owned());
        rest = &stripped[close + 1..];
    }
    segments
}

/// Inserts `value` at the path `segments` inside `target`; an empty segment appends with
/// the next numeric key, like PHP's `$a[] = …`.
fn insert_path(target: &mut Map<String, Value>, segments: &[String], value: Value) {
    let (first, rest) = match segments.split_first() {
        Some(parts) => parts,
        None => return,
    };
    let key = if first.is_empty() {
        next_index(target).to_string()
    } else {
        first.clone()
    };
    if rest.is_empty() {
        target.insert(key, value);
        return;
    }
    let slot = target
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(inner) = slot {
        insert_path(inner, rest, value);
    }
}

fn next_index(map: &Map<String, Value>) -> u64 {
    map.keys()
        .filter_map(|k| k.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

/// Turns maps whose keys are exactly `0..n` into lists, recursively, so that
/// `select[]=ID&select[]=TITLE` reads the same as the JSON `["ID","TITLE"]`.
fn listify(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sequential = !map.is_empty()
                && map
                    .keys()
                    .enumerate()
                    .all(|(i, k)| k.parse::<usize>().ok() == Some(i));
            let mut entries: Vec<(String, Value)> =
                map.into_iter().map(|(k, v)| (k, listify(v))).collect();
            if sequential {
                entries.sort_by_key(|(k, _)| k.parse::<usize>().unwrap_or(usize::MAX));
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(entries.into_iter().collect())
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(listify).collect()),
        other => other,
    }
}

/// Parses a PHP-style query string into a JSON object; every leaf is a string.
pub(crate) fn parse_query(query: &str) -> Map<String, Value> {
    let mut root = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_component(raw_key);
        if key.is_empty() {
            continue;
        }
        let value = decode_component(raw_value);
        insert_path(&mut root, &key_segments(&key), Value::String(value));
    }
    match listify(Value::Object(root)) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Serialises an ordered string-keyed map the way PHP's `json_encode` does for arrays:
/// empty → `[]`, keys exactly `0..n` → a list that has lost its keys, otherwise an object.
pub(crate) fn php_map(entries: Vec<(String, Value)>) -> Value {
    if entries.is_empty() {
        return Value::Array(Vec::new());
    }
    let sequential = entries
        .iter()
        .enumerate()
        .all(|(i, (k, _))| k.parse::<usize>().ok() == Some(i));
    if sequential {
        Value::Array(entries.into_iter().map(|(_, v)| v).collect())
    } else {
        Value::Object(entries.into_iter().collect())
    }
}

/// Reads an integer from a number, a numeric string or a float with no fraction.
pub(crate) fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<i64>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0)
                    .map(|f| f as i64)
            })
        }
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// Reads a float from a number or a numeric string.
pub(crate) fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// Renders a scalar the way PHP would print it into a string field.
pub(crate) fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("Y".to_owned()),
        Value::Bool(false) => Some("N".to_owned()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// Reads a `Y`/`N`-ish flag (`1`, `true`, `"Y"`).
pub(crate) fn as_flag(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        Value::String(s) => matches!(s.trim(), "Y" | "y" | "1" | "true"),
        _ => false,
    }
}

/// Looks a parameter up by any of the spellings the portal accepts (`id`, `ID`).
pub(crate) fn param<'a>(params: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| params.get(*n))
}

/// A list parameter may arrive as a JSON list or as a PHP map with numeric keys.
pub(crate) fn as_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map.values().cloned().collect(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn brackets_nest_and_lists_form() {
        let parsed = parse_query(
            "filter%5B%3EID%5D=5&select[]=ID&select[]=TITLE&order[ID]=ASC&start=-1&x=a+b",
        );
        assert_eq!(
            Value::Object(parsed),
            json!({"filter": {">ID": "5"}, "select": ["ID", "TITLE"],
                   "order": {"ID": "ASC"}, "start": "-1", "x": "a b"})
        );
    }

    #[test]
    fn explicit_numeric_keys_become_lists_in_order() {
        let parsed = parse_query("ids[1]=b&ids[0]=a");
        assert_eq!(parsed["ids"], json!(["a", "b"]));
        let parsed = parse_query("ids[3]=b&ids[0]=a");
        assert_eq!(parsed["ids"], json!({"3": "b", "0": "a"}));
    }

    #[test]
    fn php_maps_collapse_like_json_encode() {
        assert_eq!(php_map(vec![]), json!([]));
        assert_eq!(
            php_map(vec![("0".into(), json!(1)), ("1".into(), json!(2))]),
            json!([1, 2])
        );
        assert_eq!(php_map(vec![("c0".into(), json!(1))]), json!({"c0": 1}));
    }

    #[test]
    fn lenient_scalars() {
        assert_eq!(as_i64(&json!("42")), Some(42));
        assert_eq!(as_i64(&json!(42.0)), Some(42));
        assert_eq!(as_i64(&json!("4.5")), None);
        assert_eq!(as_f64(&json!("4.5")), Some(4.5));
        assert!(as_flag(&json!("Y")));
        assert!(!as_flag(&json!("N")));
    }
}
