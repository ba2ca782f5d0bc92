//! `[[portal.activity_map]]`: how a portal's own activity shapes become neutral kinds.
//!
//! Real portals record behaviour their own way (an incoming e-mail whose subject is
//! "Запрос демо", a REST_APP activity "Скачан прайс-лист", an amoCRM note "Просмотр
//! страницы: Цены https://…"), so the admin maps them in the config instead of in code.
//! Entries are tried in order, before the shared tag table ([`super::tags`]) and the
//! CRM's built-in type rules; the first whose conditions all hold decides the kind.
//! Each CRM names the attributes its entries may test ([`ActivityAttr`]): exact ones
//! (an id, a type) compare case-insensitively, text ones are regular expressions whose
//! named groups `subject` and `url` (when present) fill the activity's subject and URL.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

use crate::lead::ActivityKind;

/// One attribute of a CRM's activities that mapping entries may test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityAttr {
    /// The key in a `[[portal.activity_map]]` entry.
    pub name: &'static str,
    /// A regular expression (text) rather than an exact value (ids, types).
    pub pattern: bool,
    /// What it is, for error messages and the README.
    pub about: &'static str,
}

/// One `[[portal.activity_map]]` entry as written: `kind` and the attribute conditions.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ActivityMapEntry {
    /// The neutral kind the scoring rules see (`demo_request`, `download`, ...).
    pub kind: String,
    /// Attribute → exact value or regular expression (the CRM's attribute list says).
    #[serde(flatten)]
    pub when: BTreeMap<String, toml::Value>,
}

/// A condition of a compiled entry.
#[derive(Debug, Clone)]
enum Cond {
    /// Case-insensitive equality (the value is kept lower-case).
    Equals(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Rule {
    kind: ActivityKind,
    conds: Vec<(&'static str, Cond)>,
}

/// A portal's compiled activity map (empty: only the tags and the built-in rules).
#[derive(Debug, Clone, Default)]
pub struct ActivityMap {
    rules: Vec<Rule>,
}

impl PartialEq for ActivityMap {
    /// Same entries in the same order (a reload compares configs).
    fn eq(&self, other: &Self) -> bool {
        let shape = |m: &ActivityMap| -> Vec<(ActivityKind, Vec<(&'static str, String)>)> {
            m.rules
                .iter()
                .map(|r| {
                    let conds = r
                        .conds
                        .iter()
                        .map(|(n, c)| match c {
                            Cond::Equals(v) => (*n, format!("={v}")),
                            Cond::Matches(re) => (*n, format!("~{}", re.as_str())),
                        })
                        .collect();
                    (r.kind.clone(), conds)
                })
                .collect()
        };
        shape(self) == shape(other)
    }
}

/// What an entry made of one activity.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub kind: ActivityKind,
    /// From a `subject` named group, if the entry has one and it matched.
    pub subject: Option<String>,
    /// From a `url` named group.
    pub url: Option<String>,
    /// The entry's number, from 1 in file order (shown by `explain`).
    pub entry: usize,
}

/// A mistake in one entry: the key it is about (relative to the entry) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryError {
    pub index: usize,
    pub key: String,
    pub message: String,
}

impl ActivityMap {
    /// Compile the entries against the CRM's attribute list; every mistake is reported
    /// (unknown attribute, bad regex, an entry that tests nothing).
    pub fn compile(
        entries: &[ActivityMapEntry],
        attrs: &[ActivityAttr],
    ) -> Result<ActivityMap, Vec<EntryError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        for (index, e) in entries.iter().enumerate() {
            let mut err = |key: &str, message: String| {
                errors.push(EntryError {
                    index,
                    key: key.to_string(),
                    message,
                })
            };
            if e.kind.trim().is_empty() {
                err("kind", "must name a kind, e.g. \"demo_request\"".into());
            }
            if e.when.is_empty() {
                err(
                    "",
                    format!(
                        "tests nothing: add at least one of {}",
                        names(attrs).join(", ")
                    ),
                );
            }
            let mut conds = Vec::new();
            for (key, value) in &e.when {
                let Some(attr) = attrs.iter().find(|a| a.name == key) else {
                    err(
                        key,
                        format!(
                            "unknown attribute; expected one of {}",
                            names(attrs).join(", ")
                        ),
                    );
                    continue;
                };
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    other => {
                        err(key, format!("must be a string, not {}", other.type_str()));
                        continue;
                    }
                };
                if attr.pattern {
                    match Regex::new(&text) {
                        Ok(re) => conds.push((attr.name, Cond::Matches(re))),
                        Err(e) => err(key, format!("is not a valid regular expression: {e}")),
                    }
                } else {
                    conds.push((attr.name, Cond::Equals(text.trim().to_lowercase())));
                }
            }
            rules.push(Rule {
                kind: ActivityKind::from_name(e.kind.trim()),
                conds,
            });
        }
        if errors.is_empty() {
            Ok(ActivityMap { rules })
        } else {
            Err(errors)
        }
    }

    /// Compile `[[activity_map]]` entries written as TOML on their own (tools and tests
    /// that hold a map outside a config file).
    pub fn from_toml(text: &str, attrs: &[ActivityAttr]) -> Result<ActivityMap, String> {
        #[derive(Deserialize)]
        struct Doc {
            activity_map: Vec<ActivityMapEntry>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        ActivityMap::compile(&doc.activity_map, attrs).map_err(|errors| {
            errors
                .iter()
                .map(|e| format!("activity_map[{}].{}: {}", e.index, e.key, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The exact values the entries test `attr` for (e.g. the amoCRM event types to
    /// ask the event feed for, beyond the built-in ones).
    pub fn exact_values(&self, attr: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .rules
            .iter()
            .flat_map(|r| r.conds.iter())
            .filter_map(|(n, c)| match c {
                Cond::Equals(v) if *n == attr => Some(v.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The first entry whose conditions all hold for an activity whose attributes
    /// `get` reads (`None` for an attribute the activity does not have: the condition
    /// fails).
    pub fn classify<'v>(&self, get: impl Fn(&str) -> Option<&'v str>) -> Option<Mapped> {
        'rules: for (i, rule) in self.rules.iter().enumerate() {
            let mut subject = None;
            let mut url = None;
            for (name, cond) in &rule.conds {
                let Some(value) = get(name) else {
                    continue 'rules;
                };
                match cond {
                    Cond::Equals(want) => {
                        if value.trim().to_lowercase() != *want {
                            continue 'rules;
                        }
                    }
                    Cond::Matches(re) => {
                        let Some(caps) = re.captures(value) else {
                            continue 'rules;
                        };
                        let group = |g: &str| {
                            caps.name(g)
                                .map(|m| m.as_str().trim().to_string())
                                .filter(|s| !s.is_empty())
                        };
                        subject = subject.or_else(|| group("subject"));
                        url = url.or_else(|| group("url"));
                    }
                }
            }
            return Some(Mapped {
                kind: rule.kind.clone(),
                subject,
                url,
                entry: i + 1,
            });
        }
        None
    }
}

fn names(attrs: &[ActivityAttr]) -> Vec<String> {
    attrs.iter().map(|a| format!("`{}`", a.name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTRS: &[ActivityAttr] = &[
        ActivityAttr {
            name: "type_id",
            pattern: false,
            about: "type",
        },
        ActivityAttr {
            name: "subject",
            pattern: true,
            about: "subject",
        },
    ];

    #[test]
    fn first_matching_entry_wins_and_named_groups_fill_subject_and_url() {
        let map = ActivityMap::from_toml(
            r#"
                [[activity_map]]
                kind = "demo_request"
                type_id = 4
                subject = '(?i)запрос\s+демо'
                [[activity_map]]
                kind = "page_view"
                subject = '^Просмотр страницы: (?P<subject>[^h]+?) (?P<url>https?://\S+)'
                "#,
            ATTRS,
        )
        .unwrap();
        let attrs = |t: &'static str, s: &'static str| {
            move |k: &str| match k {
                "type_id" => Some(t),
                "subject" => Some(s),
                _ => None,
            }
        };
        let m = map.classify(attrs("4", "Re: ЗАПРОС  демо")).unwrap();
        assert_eq!((m.kind, m.entry), (ActivityKind::DemoRequest, 1));
        assert_eq!(map.classify(attrs("2", "Запрос демо")), None);
        let m = map
            .classify(attrs("2", "Просмотр страницы: Цены https://site.ru/price"))
            .unwrap();
        assert_eq!(m.kind, ActivityKind::PageView);
        assert_eq!(m.subject.as_deref(), Some("Цены"));
        assert_eq!(m.url.as_deref(), Some("https://site.ru/price"));
        assert_eq!(m.entry, 2);
        // An attribute the activity lacks fails the condition.
        assert_eq!(map.classify(|_| None), None);
        assert_eq!(map.exact_values("type_id"), vec!["4".to_string()]);
    }

    #[test]
    fn mistakes_name_the_entry_and_key() {
        #[derive(Deserialize)]
        struct Doc {
            activity_map: Vec<ActivityMapEntry>,
        }
        let doc: Doc = toml::from_str(
            r#"
                [[activity_map]]
                kind = "download"
                subjet = "x"
                [[activity_map]]
                kind = ""
                subject = "(unclosed"
                [[activity_map]]
                kind = "form"
                "#,
        )
        .unwrap();
        let errs = ActivityMap::compile(&doc.activity_map, ATTRS).unwrap_err();
        let keys: Vec<(usize, &str)> = errs.iter().map(|e| (e.index, e.key.as_str())).collect();
        assert_eq!(
            keys,
            vec![(0, "subjet"), (1, "kind"), (1, "subject"), (2, "")]
        );
        assert!(errs[0].message.contains("`subject`"), "{}", errs[0].message);
        assert!(errs[2].message.contains("regular expression"));
    }
}
