//! Query strings the way amoCRM's PHP front end reads them: PHP bracket keys
//! (`filter[id][]=1`, `filter[id][0]=1`, `filter[updated_at][from]=…`), brackets
//! possibly percent-encoded, `+` as a space, and comma lists for `with` and
//! `filter[type]`.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What `http_build_query` leaves unescaped (and what we re-emit in `_links`).
pub(crate) const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Decodes one form component: `+` is a space, then percent-decoding (lossy UTF-8).
pub(crate) fn decode(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Encodes one form component the PHP way (space as `+`).
pub(crate) fn encode(raw: &str) -> String {
    utf8_percent_encode(raw, FORM)
        .to_string()
        .replace("%20", "+")
}

/// A parsed query string, in order, keys and values decoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `a=1&b[]=2`; pieces without `=` get an empty value.
    pub(crate) fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode(k), decode(v)),
                None => (decode(p), String::new()),
            })
            .collect();
        Self { pairs }
    }

    /// The last value given for exactly `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value under `key`, `key[]` or `key[N]`, in order, without splitting.
    pub(crate) fn list(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| is_list_key(k, key))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Like [`Query::list`], with each value also split on commas and trimmed.
    pub(crate) fn list_split(&self, key: &str) -> Vec<String> {
        self.list(key)
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The `with` parameter as a list of names.
    pub(crate) fn with(&self) -> Vec<String> {
        self.list_split("with")
    }

    /// Re-encodes every pair except those named in `skip`, for `_links` hrefs.
    pub(crate) fn encode_without(&self, skip: &[&str]) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect()
    }
}

fn is_list_key(k: &str, key: &str) -> bool {
    let Some(rest) = k.strip_prefix(key) else {
        return false;
    };
    if rest.is_empty() || rest == "[]" {
        return true;
    }
    rest.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// amoCRM's `query` search over one record, as far as the sandbox models it: the text
/// (case-insensitive) inside its name or any field value; and a query of digits with
/// phone punctuation (five digits or more) also inside the digits of a value, so a
/// phone is found however it was written (`+7 (912) 345-67-89` by `9123456789`).
pub(crate) fn search_hits(query: &str, name: &str, values: &[String]) -> bool {
    let q = query.trim().to_lowercase();
    if q.is_empty() {
        return true;
    }
    if name.to_lowercase().contains(&q) || values.iter().any(|v| v.to_lowercase().contains(&q)) {
        return true;
    }
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let phone_like = q
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    let qd = digits(&q);
    phone_like && qd.len() >= 5 && values.iter().any(|v| digits(v).contains(&qd))
}

/// [`search_hits`] over a contact's name and field values.
pub(crate) fn contact_hits(query: &str, c: &super::model::Contact) -> bool {
    let values: Vec<String> = c
        .fields
        .iter()
        .flat_map(|f| &f.values)
        .map(|v| v.text())
        .collect();
    search_hits(query, &c.name, &values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracket_keys_encoded_or_not() {
        let q = Query::parse(
            "filter%5Bid%5D%5B%5D=5&filter[id][]=6&filter[id][2]=7&filter[updated_at][from]=10&with=contacts,leads&x",
        );
        assert_eq!(q.list("filter[id]"), vec!["5", "6", "7"]);
        assert_eq!(q.get("filter[updated_at][from]"), Some("10"));
        assert_eq!(q.with(), vec!["contacts", "leads"]);
        assert_eq!(q.get("x"), Some(""));
        assert!(q.list("filter[updated_at]").is_empty());
    }

    #[test]
    fn plus_is_space_and_round_trip() {
        let q = Query::parse("query=a+b%2Bc&page=2");
        assert_eq!(q.get("query"), Some("a b+c"));
        assert_eq!(q.encode_without(&["page"]), vec!["query=a+b%2Bc"]);
        assert_eq!(encode("filter[id][]"), "filter%5Bid%5D%5B%5D");
    }

    #[test]
    fn the_search_finds_text_and_phones_however_written() {
        let values = ["+7 (912) 345-67-89".to_string(), "Anna@Corp.ru".to_string()];
        assert!(super::search_hits("anna@corp.ru", "Анна", &values));
        assert!(super::search_hits("9123456789", "Анна", &values));
        assert!(super::search_hits("анна", "Анна", &values));
        assert!(!super::search_hits("9123456780", "Анна", &values));
        assert!(!super::search_hits("boris@corp.ru", "Анна", &values));
    }
}
