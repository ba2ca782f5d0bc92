//! Parse `application/x-www-form-urlencoded` bodies whose keys use PHP's bracket
//! syntax (`data[FIELDS][ID]=1`, `a[]=x`) into a tree, the way PHP's `parse_str` builds
//! `$_POST`.
//!
//! Both Bitrix24 and amoCRM are PHP applications and send their webhooks in this form,
//! so both integrations share this parser. Unlike `parse_str`, it is strict: anything
//! PHP would silently mangle (a key used both as a value and as a container, unbalanced
//! brackets, invalid UTF-8) is a typed error, and the size of the tree is bounded so a
//! hostile body cannot make us allocate without limit.

use std::collections::BTreeMap;
use std::fmt;

use percent_encoding::percent_decode;

/// Most `key=value` pairs accepted in one body (PHP's own `max_input_vars` is 1000; we
/// allow more because amoCRM batches many leads into one webhook).
pub const MAX_PAIRS: usize = 10_000;

/// Deepest bracket nesting accepted (`a[1]...[16]`); real webhooks use at most 7.
pub const MAX_DEPTH: usize = 16;

/// One node of the parsed tree: a scalar string or a map of children.
///
/// Map keys are kept in a `BTreeMap` (ordered) so output is deterministic. Indices
/// produced by `[]` are decimal strings, like PHP's array keys.
#[derive(Clone, PartialEq, Eq)]
pub enum FormValue {
    Text(String),
    Map(BTreeMap<String, FormValue>),
}

impl fmt::Debug for FormValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormValue::Text(s) => write!(f, "{s:?}"),
            FormValue::Map(m) => f.debug_map().entries(m.iter()).finish(),
        }
    }
}

/// Why a body could not be parsed. Values are never included (they may hold secrets
/// such as `auth[application_token]`); keys are, truncated, to locate the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A `%XX` escape is invalid or the decoded bytes are not UTF-8.
    #[error("pair {pair}: bad percent-encoding or invalid UTF-8")]
    BadEncoding { pair: usize },
    /// A key is empty or starts with `[`.
    #[error("pair {pair}: empty key")]
    EmptyKey { pair: usize },
    /// `[` without `]`, `]` without `[`, or text between two bracket groups.
    #[error("pair {pair}: unbalanced brackets in key {key:?}")]
    UnbalancedBrackets { pair: usize, key: String },
    /// The same path is used both as a scalar and as a map (`a=1&a[b]=2`), or a scalar
    /// is given twice.
    #[error("key {key:?} is used both as a value and as a map, or given twice")]
    Conflict { key: String },
    /// More than [`MAX_DEPTH`] bracket levels.
    #[error("pair {pair}: nesting deeper than {MAX_DEPTH}")]
    TooDeep { pair: usize },
    /// More than [`MAX_PAIRS`] pairs.
    #[error("more than {MAX_PAIRS} pairs")]
    TooManyPairs,
}

fn short(key: &str) -> String {
    key.chars().take(80).collect()
}

fn decode(raw: &str, pair: usize) -> Result<String, FormError> {
    let bytes = raw.as_bytes();
    // percent_decode passes malformed escapes through unchanged; reject them instead.
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(FormError::BadEncoding { pair });
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let plus_fixed = raw.replace('+', " ");
    percent_decode(plus_fixed.as_bytes())
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| FormError::BadEncoding { pair })
}

/// Split `a[b][]` into `["a", "b", ""]`.
fn split_key(key: &str, pair: usize) -> Result<Vec<&str>, FormError> {
    let unbalanced = || FormError::UnbalancedBrackets {
        pair,
        key: short(key),
    };
    let (head, mut rest) = match key.find('[') {
        Some(0) => return Err(FormError::EmptyKey { pair }),
        Some(i) => (&key[..i], &key[i..]),
        None => {
            if key.contains(']') {
                return Err(unbalanced());
            }
            if key.is_empty() {
                return Err(FormError::EmptyKey { pair });
            }
            return Ok(vec![key]);
        }
    };
    if head.contains(']') {
        return Err(unbalanced());
    }
    let mut parts = vec![head];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(unbalanced)?;
        let close = inner.find(']').ok_or_else(unbalanced)?;
        let seg = &inner[..close];
        if seg.contains('[') {
            return Err(unbalanced());
        }
        parts.push(seg);
        if parts.len() > MAX_DEPTH + 1 {
            return Err(FormError::TooDeep { pair });
        }
        rest = &inner[close + 1..];
    }
    Ok(parts)
}

/// Next index for `[]`: one more than the largest non-negative integer key, as PHP does.
fn next_index(map: &BTreeMap<String, FormValue>) -> String {
    map.keys()
        .filter_map(|k| k.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m + 1)
        .to_string()
}

fn insert(
    root: &mut BTreeMap<String, FormValue>,
    parts: &[&str],
    value: String,
) -> Result<(), FormError> {
    let mut map = root;
    let mut path = String::new();
    for (i, part) in parts.iter().enumerate() {
        let key = if part.is_empty() && i > 0 {
            next_index(map)
        } else {
            (*part).to_string()
        };
        if i == 0 {
            path.push_str(&key);
        } else {
            path.push('[');
            path.push_str(&key);
            path.push(']');
        }
        let last = i + 1 == parts.len();
        if last {
            if map.contains_key(&key) {
                return Err(FormError::Conflict { key: short(&path) });
            }
            map.insert(key, FormValue::Text(value));
            return Ok(());
        }
        let entry = map
            .entry(key)
            .or_insert_with(|| FormValue::Map(BTreeMap::new()));
        map = match entry {
            FormValue::Map(m) => m,
            FormValue::Text(_) => return Err(FormError::Conflict { key: short(&path) }),
        };
    }
    Ok(())
}

/// Parse a whole body into its top-level map. Empty pairs (`a=1&&b=2`) are skipped, as
/// browsers and PHP do; a pair without `=` is a key with an empty value.
pub fn parse(body: &str) -> Result<BTreeMap<String, FormValue>, FormError> {
    let mut root = BTreeMap::new();
    let mut count = 0usize;
    for (pair_no, pair) in body.split('&').enumerate() {
        if pair.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_PAIRS {
            return Err(FormError::TooManyPairs);
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k, pair_no)?;
        let value = decode(v, pair_no)?;
        let parts = split_key(&key, pair_no)?;
        insert(&mut root, &parts, value)?;
    }
    Ok(root)
}

/// Parse raw bytes (a request body), rejecting invalid UTF-8 before anything else.
pub fn parse_bytes(body: &[u8]) -> Result<BTreeMap<String, FormValue>, FormError> {
    let text = std::str::from_utf8(body).map_err(|_| FormError::BadEncoding { pair: 0 })?;
    parse(text)
}

impl FormValue {
    /// The string if this is a scalar.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            FormValue::Text(s) => Some(s),
            FormValue::Map(_) => None,
        }
    }

    /// The children if this is a map.
    pub fn as_map(&self) -> Option<&BTreeMap<String, FormValue>> {
        match self {
            FormValue::Map(m) => Some(m),
            FormValue::Text(_) => None,
        }
    }

    /// Child by key (`None` for scalars or missing keys).
    pub fn get(&self, key: &str) -> Option<&FormValue> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// Follow a path of keys, e.g. `["FIELDS", "ID"]`.
    pub fn path(&self, keys: &[&str]) -> Option<&FormValue> {
        keys.iter().try_fold(self, |node, k| node.get(k))
    }
}

/// Follow a path from the top-level map, e.g. `lookup(&root, &["data", "FIELDS", "ID"])`.
pub fn lookup<'a>(root: &'a BTreeMap<String, FormValue>, keys: &[&str]) -> Option<&'a FormValue> {
    let (first, rest) = keys.split_first()?;
    root.get(*first)?.path(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(root: &BTreeMap<String, FormValue>, keys: &[&str]) -> Option<String> {
        lookup(root, keys)
            .and_then(|v| v.as_text())
            .map(str::to_string)
    }

    /// Verbatim capture of a 2018 Bitrix24 outgoing webhook (crm notes §1).
    const B24_2018: &str = "event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=365&ts=1545851621&auth%5Bdomain%5D=b24-46hovy.bitrix24.ru&auth%5Bclient_endpoint%5D=https%3A%2F%2Fb24-46hovy.bitrix24.ru%2Frest%2F&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bmember_id%5D=1b87798bc2d16c4b7f2a604e0c899a34&auth%5Bapplication_token%5D=o8kfcne3du24sfvoeahh43uf9oygu2x3";

    #[test]
    fn parses_bitrix24_capture() {
        let root = parse(B24_2018).unwrap();
        assert_eq!(text(&root, &["event"]).as_deref(), Some("ONCRMLEADADD"));
        assert_eq!(
            text(&root, &["data", "FIELDS", "ID"]).as_deref(),
            Some("365")
        );
        assert_eq!(
            text(&root, &["auth", "client_endpoint"]).as_deref(),
            Some("https://b24-46hovy.bitrix24.ru/rest/")
        );
        assert_eq!(root.len(), 4);
    }

    #[test]
    fn amocrm_style_deep_keys_and_plus_spaces() {
        let body = "leads%5Bupdate%5D%5B0%5D%5Bid%5D=7&leads%5Bupdate%5D%5B0%5D%5Bcustom_fields%5D%5B1%5D%5Bvalues%5D%5B0%5D%5Bvalue%5D=Big+Co%21&account%5Bsubdomain%5D=x";
        let root = parse(body).unwrap();
        assert_eq!(
            text(
                &root,
                &[
                    "leads",
                    "update",
                    "0",
                    "custom_fields",
                    "1",
                    "values",
                    "0",
                    "value"
                ]
            )
            .as_deref(),
            Some("Big Co!")
        );
        assert_eq!(
            text(&root, &["leads", "update", "0", "id"]).as_deref(),
            Some("7")
        );
    }

    #[test]
    fn empty_brackets_append_after_largest_index() {
        let root = parse("a[]=x&a[]=y&a[5]=z&a[]=w&b=&c").unwrap();
        let a = root["a"].as_map().unwrap();
        let got: Vec<(&str, &str)> = a
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_text().unwrap()))
            .collect();
        assert_eq!(got, vec![("0", "x"), ("1", "y"), ("5", "z"), ("6", "w")]);
        assert_eq!(text(&root, &["b"]).as_deref(), Some(""));
        assert_eq!(text(&root, &["c"]).as_deref(), Some(""));
    }

    #[test]
    fn unicode_values_decode() {
        let root = parse("name=%D0%98%D0%B2%D0%B0%D0%BD").unwrap();
        assert_eq!(text(&root, &["name"]).as_deref(), Some("Иван"));
    }

    #[test]
    fn rejects_bad_encoding() {
        assert_eq!(parse("a=%zz"), Err(FormError::BadEncoding { pair: 0 }));
        assert_eq!(parse("a=1&b=%4"), Err(FormError::BadEncoding { pair: 1 }));
        assert_eq!(parse("a=%FF%FE"), Err(FormError::BadEncoding { pair: 0 }));
        assert!(matches!(
            parse_bytes(b"a=\xff"),
            Err(FormError::BadEncoding { .. })
        ));
    }

    #[test]
    fn rejects_conflicts() {
        assert!(matches!(
            parse("a=1&a[b]=2"),
            Err(FormError::Conflict { .. })
        ));
        assert!(matches!(
            parse("a[b]=2&a=1"),
            Err(FormError::Conflict { .. })
        ));
        assert!(matches!(
            parse("a[b]=1&a[b]=2"),
            Err(FormError::Conflict { .. })
        ));
    }

    #[test]
    fn rejects_unbalanced_and_empty_keys() {
        for body in ["a[b=1", "a]=1", "a[b]c[d]=1", "a[b[c]]=1", "a[b]]=1"] {
            assert!(
                matches!(parse(body), Err(FormError::UnbalancedBrackets { .. })),
                "{body}"
            );
        }
        assert_eq!(parse("=1"), Err(FormError::EmptyKey { pair: 0 }));
        assert_eq!(parse("[a]=1"), Err(FormError::EmptyKey { pair: 0 }));
    }

    #[test]
    fn bounds_depth_and_pairs() {
        let ok = format!("a{}=1", "[x]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("a{}=1", "[x]".repeat(MAX_DEPTH + 1));
        assert_eq!(parse(&deep), Err(FormError::TooDeep { pair: 0 }));
        let many = (0..=MAX_PAIRS)
            .map(|i| format!("k{i}=1"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(parse(&many), Err(FormError::TooManyPairs));
        let limit = (0..MAX_PAIRS)
            .map(|i| format!("k{i}=1"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(parse(&limit).unwrap().len(), MAX_PAIRS);
    }

    #[test]
    fn errors_never_echo_values() {
        let err = parse("auth[application_token]=s3cr3t&auth[application_token][x]=1").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }
}
