//! amoCRM webhooks: parse the form-encoded body, then verify where it came from.
//!
//! amoCRM POSTs `application/x-www-form-urlencoded` with PHP bracket keys in the old
//! API v2 shape: `{entity}[{action}][{i}][field]`, e.g. `leads[update][0][id]=5685933`,
//! custom fields as `custom_fields[k][id|name|values][m][value|enum]` (date fields
//! without the `[value]` level: `values[0]=1537920000`), tags as
//! `tags[k][id|name]`, notes as `leads[note][i][note][element_id|text|…]`, and the
//! account at the end: `account[id]`, `account[subdomain]`, `account[_links][self]`.
//! One POST may carry several entities and several actions.
//!
//! CRM webhooks are not signed. [`parse`] yields an [`Unverified`] hook; only
//! [`Unverified::verify`], which compares the secret we put into the hook's URL
//! (`?secret=…`) in constant time and checks `account[id]` / `account[subdomain]`,
//! yields a [`Webhook`] the daemon accepts. Even then, values in the body are only
//! hints: the daemon re-fetches every lead through the API.

use std::collections::BTreeMap;
use std::fmt;

use phpform::{FormError, FormValue};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Which kind of entity an item is about (the first key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Leads,
    Contacts,
    Companies,
    Customers,
    Tasks,
    /// Incoming lead (unsorted).
    Unsorted,
    /// Chat message (`message[add]`).
    Message,
    /// Talk (`talk[add|update]`).
    Talk,
    /// A key we do not know; kept so it can be logged.
    Other(String),
}

impl Entity {
    fn from_key(key: &str) -> Entity {
        match key {
            "leads" => Entity::Leads,
            "contacts" => Entity::Contacts,
            "companies" => Entity::Companies,
            "customers" => Entity::Customers,
            "tasks" => Entity::Tasks,
            "unsorted" => Entity::Unsorted,
            "message" => Entity::Message,
            "talk" => Entity::Talk,
            other => Entity::Other(other.to_string()),
        }
    }

    /// The key as in the body.
    pub fn as_str(&self) -> &str {
        match self {
            Entity::Leads => "leads",
            Entity::Contacts => "contacts",
            Entity::Companies => "companies",
            Entity::Customers => "customers",
            Entity::Tasks => "tasks",
            Entity::Unsorted => "unsorted",
            Entity::Message => "message",
            Entity::Talk => "talk",
            Entity::Other(s) => s,
        }
    }
}

/// What happened (the second key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Add,
    Update,
    Delete,
    Restore,
    Status,
    Responsible,
    Note,
    Other(String),
}

impl Action {
    fn from_key(key: &str) -> Action {
        match key {
            "add" => Action::Add,
            "update" => Action::Update,
            "delete" => Action::Delete,
            "restore" => Action::Restore,
            "status" => Action::Status,
            "responsible" => Action::Responsible,
            "note" => Action::Note,
            other => Action::Other(other.to_string()),
        }
    }

    /// The key as in the body.
    pub fn as_str(&self) -> &str {
        match self {
            Action::Add => "add",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Restore => "restore",
            Action::Status => "status",
            Action::Responsible => "responsible",
            Action::Note => "note",
            Action::Other(s) => s,
        }
    }
}

/// `account[...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub id: Option<String>,
    pub subdomain: Option<String>,
    /// `account[_links][self]`, the account's base URL.
    pub self_link: Option<String>,
}

/// One value of a custom field in a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomFieldValue {
    /// The text (for date fields: Unix seconds as text).
    pub value: String,
    /// The select item id (`[enum]`), if any.
    pub enum_id: Option<String>,
}

/// One custom field of an entity in a hook (v2 shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomField {
    pub id: String,
    pub name: Option<String>,
    pub code: Option<String>,
    pub values: Vec<CustomFieldValue>,
}

/// A tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub id: Option<String>,
    pub name: String,
}

/// `…[note][note][…]`: a note added to an entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoteInfo {
    pub id: Option<String>,
    /// v2 element type: 1 contact, 2 lead, 3 company, 12 customer.
    pub element_type: Option<String>,
    pub element_id: Option<String>,
    /// v2 numeric note type: 4 common, 10 incoming call, 11 outgoing call…
    pub note_type: Option<String>,
    pub text: Option<String>,
}

/// One `{entity}[{action}][{i}]` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub entity: Entity,
    pub action: Action,
    /// The entity's id (`[id]`); for notes the note's entity is in [`Item::note`].
    pub id: Option<String>,
    /// Every scalar field (`name`, `status_id`, `old_status_id`, `price`,
    /// `responsible_user_id`, `last_modified`, `updated_at`, `entity_id`…).
    pub fields: BTreeMap<String, String>,
    pub custom_fields: Vec<CustomField>,
    pub tags: Vec<Tag>,
    pub note: Option<NoteInfo>,
}

impl Item {
    /// A scalar field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// A custom field by id.
    pub fn custom_field(&self, id: &str) -> Option<&CustomField> {
        self.custom_fields.iter().find(|f| f.id == id)
    }

    /// The lead this item is about, if any:
    /// - a lead event: the lead itself;
    /// - a note on a lead (`leads[note]`, or any note with `element_type` 2): its lead;
    /// - a chat message bound to a lead (`entity_type` lead or `element_type` 2): its
    ///   lead, because incoming messages are scored activity.
    ///
    /// Tasks are deliberately not mapped: leadscore creates tasks itself, and their
    /// hooks would only echo back.
    pub fn lead_id(&self) -> Option<&str> {
        if let Some(note) = &self.note {
            let on_lead = match &note.element_type {
                Some(t) => t == "2",
                None => self.entity == Entity::Leads,
            };
            return if on_lead {
                note.element_id.as_deref()
            } else {
                None
            };
        }
        match self.entity {
            Entity::Leads => self.id.as_deref(),
            Entity::Message | Entity::Talk => {
                let on_lead = self.get("entity_type") == Some("lead")
                    || self.get("element_type") == Some("2");
                if on_lead {
                    self.get("entity_id").or_else(|| self.get("element_id"))
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// A verified hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub account: Account,
    pub items: Vec<Item>,
}

impl Webhook {
    /// Every lead the hook is about, each once (in key order of the body).
    pub fn lead_ids(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for item in &self.items {
            if let Some(id) = item.lead_id() {
                if seen.insert(id.to_string()) {
                    out.push(id.to_string());
                }
            }
        }
        out
    }

    /// The leads among [`Webhook::lead_ids`] that a note or a chat message is about:
    /// their activities changed, while a lead's own add/update/status says nothing of
    /// its notes (our own score write echoes as `leads[update]`).
    pub fn activity_lead_ids(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for item in &self.items {
            let activity = item.note.is_some()
                || item.action == Action::Note
                || matches!(item.entity, Entity::Message | Entity::Talk);
            if let Some(id) = item.lead_id().filter(|_| activity) {
                if seen.insert(id.to_string()) {
                    out.push(id.to_string());
                }
            }
        }
        out
    }

    /// `leads[update]+leads[note]`-style summary for logs and the ledger.
    pub fn summary(&self) -> String {
        let mut kinds: Vec<String> = self
            .items
            .iter()
            .map(|i| format!("{}[{}]", i.entity.as_str(), i.action.as_str()))
            .collect();
        kinds.dedup();
        let mut uniq = Vec::new();
        for k in kinds {
            if !uniq.contains(&k) {
                uniq.push(k);
            }
        }
        if uniq.is_empty() {
            "empty".into()
        } else {
            uniq.join("+")
        }
    }
}

/// A parsed hook that is not trusted yet. The account is readable (to route and log);
/// the items only through [`Unverified::verify`].
#[derive(Clone, PartialEq, Eq)]
pub struct Unverified(Webhook);

impl fmt::Debug for Unverified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unverified")
            .field("account", &self.0.account)
            .field("items", &self.0.items.len())
            .finish()
    }
}

/// Why a hook was refused. Never carries the secret or body values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The body is not a valid PHP-bracket form.
    #[error("webhook body is not a valid form: {0}")]
    Form(#[from] FormError),
    /// The form does not have the amoCRM hook shape.
    #[error("webhook body does not have the amoCRM shape: {0}")]
    Shape(String),
    /// No `?secret=` in the hook URL.
    #[error("webhook URL carries no secret")]
    MissingSecret,
    /// The secret does not match.
    #[error("webhook secret does not match")]
    WrongSecret,
    /// `account[id]` or `account[subdomain]` is not the configured account (or absent
    /// while one is configured).
    #[error("webhook is for another account ({0} does not match)")]
    WrongAccount(&'static str),
}

impl Unverified {
    /// The account the body claims to come from (untrusted).
    pub fn account(&self) -> &Account {
        &self.0.account
    }

    /// Check the URL secret in constant time, then the account id and subdomain when
    /// they are configured (a hook without them is refused, not trusted).
    pub fn verify(
        self,
        secret_from_query: Option<&str>,
        expected_secret: &SecretString,
        account_id: Option<&str>,
        subdomain: Option<&str>,
    ) -> Result<Webhook, WebhookError> {
        check_secret(secret_from_query, expected_secret)?;
        if let Some(want) = account_id {
            if self.0.account.id.as_deref().map(str::trim) != Some(want.trim()) {
                return Err(WebhookError::WrongAccount("account[id]"));
            }
        }
        if let Some(want) = subdomain {
            let ok = self
                .0
                .account
                .subdomain
                .as_deref()
                .is_some_and(|s| s.trim().eq_ignore_ascii_case(want.trim()));
            if !ok {
                return Err(WebhookError::WrongAccount("account[subdomain]"));
            }
        }
        Ok(self.0)
    }
}

/// The `secret` parameter of a raw query string (`secret=…&x=…`), percent-decoded,
/// found by a linear scan ([`phpform::find`]) that decodes nothing else; given twice or
/// badly encoded counts as absent.
pub fn query_secret(query: Option<&str>) -> Option<String> {
    phpform::find(query?.as_bytes(), "secret").ok().flatten()
}

/// Constant-time comparison of the URL's secret; an empty expected secret never matches.
fn check_secret(given: Option<&str>, expected: &SecretString) -> Result<(), WebhookError> {
    let given = given.ok_or(WebhookError::MissingSecret)?;
    let expected = expected.expose_secret().as_bytes();
    if expected.is_empty() || !bool::from(given.as_bytes().ct_eq(expected)) {
        return Err(WebhookError::WrongSecret);
    }
    Ok(())
}

/// The gate in front of [`parse`]: the hook URL's `?secret=` must be `expected`, checked
/// before a byte of the body is decoded. [`Unverified::verify`] checks it again, with
/// the account, on the parsed hook.
pub fn authenticate(query: Option<&str>, expected: &SecretString) -> Result<(), WebhookError> {
    check_secret(query_secret(query).as_deref(), expected)
}

fn shape(msg: impl Into<String>) -> WebhookError {
    WebhookError::Shape(msg.into())
}

fn text_at(v: &FormValue, key: &str) -> Option<String> {
    v.get(key)
        .and_then(FormValue::as_text)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A record id (lead, note's element, account): canonical and bounded, so `0001` is
/// refused (400) rather than queued as a lead other than `1`.
fn is_id(s: &str) -> bool {
    phpform::is_record_id(s)
}

/// A list index (`leads[update][0]`): digits, `0` allowed, bounded like an id.
fn is_index(s: &str) -> bool {
    s == "0" || is_id(s)
}

/// Parse a hook body. Refuses anything that is not an amoCRM hook: no account, an
/// entity or action that is not a list of items, an item index that is not a number,
/// a lead without a numeric id, a lead note without the lead's id.
pub fn parse(body: &[u8]) -> Result<Unverified, WebhookError> {
    let root = phpform::parse_bytes(body)?;
    let account = match root.get("account") {
        Some(FormValue::Map(_)) => {
            let a = &root["account"];
            Account {
                id: text_at(a, "id"),
                subdomain: text_at(a, "subdomain"),
                self_link: a
                    .path(&["_links", "self"])
                    .and_then(FormValue::as_text)
                    .map(str::to_string),
            }
        }
        Some(FormValue::Text(_)) => return Err(shape("account is not a map")),
        None => return Err(shape("no account[...] keys")),
    };
    if account.id.is_none() && account.subdomain.is_none() {
        return Err(shape("account has neither id nor subdomain"));
    }
    if let Some(id) = &account.id {
        if !is_id(id) {
            return Err(shape("account[id] is not a number"));
        }
    }
    let mut items = Vec::new();
    for (key, value) in &root {
        if key == "account" {
            continue;
        }
        let entity = Entity::from_key(key);
        let FormValue::Map(actions) = value else {
            return Err(shape(format!("{key} is not a map of actions")));
        };
        for (action_key, list) in actions {
            let action = Action::from_key(action_key);
            let FormValue::Map(list) = list else {
                return Err(shape(format!("{key}[{action_key}] is not a list")));
            };
            for (index, item) in list {
                if !is_index(index) {
                    return Err(shape(format!(
                        "{key}[{action_key}] has a non-numeric index"
                    )));
                }
                let where_ = format!("{key}[{action_key}][{index}]");
                items.push(parse_item(entity.clone(), action.clone(), item, &where_)?);
            }
        }
    }
    Ok(Unverified(Webhook { account, items }))
}

fn parse_item(
    entity: Entity,
    action: Action,
    item: &FormValue,
    where_: &str,
) -> Result<Item, WebhookError> {
    let FormValue::Map(map) = item else {
        return Err(shape(format!("{where_} is not a map")));
    };
    let mut fields = BTreeMap::new();
    for (k, v) in map {
        if let FormValue::Text(t) = v {
            fields.insert(k.clone(), t.clone());
        }
    }
    let id = fields
        .get("id")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let note = match map.get("note") {
        Some(n @ FormValue::Map(_)) => Some(NoteInfo {
            id: text_at(n, "id"),
            element_type: text_at(n, "element_type"),
            element_id: text_at(n, "element_id"),
            note_type: text_at(n, "note_type"),
            text: n
                .get("text")
                .and_then(FormValue::as_text)
                .map(str::to_string),
        }),
        Some(FormValue::Text(_)) => return Err(shape(format!("{where_}[note] is not a map"))),
        None => None,
    };
    // Leads are what we act on, so their custom fields must be well-formed; other
    // entities' odd fields are skipped rather than failing the whole delivery.
    let strict = entity == Entity::Leads;
    let custom_fields = match map.get("custom_fields") {
        Some(FormValue::Map(cfs)) => {
            let mut out = Vec::new();
            for (k, cf) in cfs {
                match parse_custom_field(cf, &format!("{where_}[custom_fields][{k}]")) {
                    Ok(f) => out.push(f),
                    Err(e) if strict => return Err(e),
                    Err(_) => {}
                }
            }
            out
        }
        Some(FormValue::Text(t)) if t.is_empty() || !strict => Vec::new(),
        Some(FormValue::Text(_)) => {
            return Err(shape(format!("{where_}[custom_fields] is not a map")))
        }
        None => Vec::new(),
    };
    let tags = match map.get("tags") {
        Some(FormValue::Map(tags)) => tags
            .values()
            .map(|t| match t {
                FormValue::Map(_) => Tag {
                    id: text_at(t, "id"),
                    name: t
                        .get("name")
                        .and_then(FormValue::as_text)
                        .unwrap_or("")
                        .to_string(),
                },
                FormValue::Text(name) => Tag {
                    id: None,
                    name: name.clone(),
                },
            })
            .collect(),
        _ => Vec::new(),
    };
    let item = Item {
        entity,
        action,
        id,
        fields,
        custom_fields,
        tags,
        note,
    };
    // A lead event must name its lead; a note on a lead must name the lead it is on.
    if item.entity == Entity::Leads {
        match (&item.action, &item.note) {
            (Action::Note, None) => return Err(shape(format!("{where_} has no [note]"))),
            (_, Some(note)) => {
                if !note.element_id.as_deref().is_some_and(is_id) {
                    return Err(shape(format!(
                        "{where_}[note][element_id] is missing or not a number"
                    )));
                }
            }
            (_, None) => {
                if !item.id.as_deref().is_some_and(is_id) {
                    return Err(shape(format!("{where_}[id] is missing or not a number")));
                }
            }
        }
    }
    if let Some(id) = item.lead_id() {
        if !is_id(id) {
            return Err(shape(format!("{where_}: lead id is not a number")));
        }
    }
    Ok(item)
}

fn parse_custom_field(cf: &FormValue, where_: &str) -> Result<CustomField, WebhookError> {
    let FormValue::Map(map) = cf else {
        return Err(shape(format!("{where_} is not a map")));
    };
    let id = text_at(cf, "id").ok_or_else(|| shape(format!("{where_} has no [id]")))?;
    let mut values = Vec::new();
    match map.get("values") {
        Some(FormValue::Map(vals)) => {
            for v in vals.values() {
                match v {
                    // Date fields: values[m]=<unix> without [value].
                    FormValue::Text(t) => values.push(CustomFieldValue {
                        value: t.clone(),
                        enum_id: None,
                    }),
                    FormValue::Map(_) => values.push(CustomFieldValue {
                        value: v
                            .get("value")
                            .and_then(FormValue::as_text)
                            .unwrap_or("")
                            .to_string(),
                        enum_id: text_at(v, "enum"),
                    }),
                }
            }
        }
        Some(FormValue::Text(t)) if !t.is_empty() => values.push(CustomFieldValue {
            value: t.clone(),
            enum_id: None,
        }),
        _ => {}
    }
    Ok(CustomField {
        id,
        name: text_at(cf, "name"),
        code: text_at(cf, "code"),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("s3cr3t-hook")
    }

    #[test]
    fn verify_checks_secret_account_and_subdomain() {
        let body = b"leads[update][0][id]=7&account[id]=29715442&account[subdomain]=ablaser";
        let ok = |q: Option<&str>, id: Option<&str>, sub: Option<&str>| {
            parse(body).unwrap().verify(q, &secret(), id, sub)
        };
        assert!(ok(Some("s3cr3t-hook"), Some("29715442"), Some("AbLaser")).is_ok());
        assert_eq!(
            ok(None, None, None).unwrap_err(),
            WebhookError::MissingSecret
        );
        assert_eq!(
            ok(Some("s3cr3t-hooK"), None, None).unwrap_err(),
            WebhookError::WrongSecret
        );
        assert_eq!(
            ok(Some(""), None, None).unwrap_err(),
            WebhookError::WrongSecret
        );
        assert_eq!(
            ok(Some("s3cr3t-hook"), Some("1"), None).unwrap_err(),
            WebhookError::WrongAccount("account[id]")
        );
        assert_eq!(
            ok(Some("s3cr3t-hook"), None, Some("other")).unwrap_err(),
            WebhookError::WrongAccount("account[subdomain]")
        );
        // An old-style hook without account[id] is refused when an id is configured.
        let old = parse(b"leads[add][0][id]=1&account[subdomain]=x").unwrap();
        assert_eq!(
            old.verify(Some("s3cr3t-hook"), &secret(), Some("5"), None)
                .unwrap_err(),
            WebhookError::WrongAccount("account[id]")
        );
        // An empty configured secret never matches.
        assert_eq!(
            parse(body)
                .unwrap()
                .verify(Some(""), &SecretString::from(""), None, None)
                .unwrap_err(),
            WebhookError::WrongSecret
        );
    }

    #[test]
    fn query_secret_is_decoded() {
        assert_eq!(
            query_secret(Some("secret=a%2Bb&x=1")).as_deref(),
            Some("a+b")
        );
        assert_eq!(query_secret(Some("x=1")), None);
        assert_eq!(query_secret(None), None);
    }

    #[test]
    fn authenticate_reads_only_the_query_secret() {
        assert_eq!(
            authenticate(Some("x=1&secret=s3cr3t-hook"), &secret()),
            Ok(())
        );
        assert_eq!(
            authenticate(Some("secret=s3cr3t-hooK"), &secret()),
            Err(WebhookError::WrongSecret)
        );
        assert_eq!(
            authenticate(None, &secret()),
            Err(WebhookError::MissingSecret)
        );
        // Given twice: ambiguous, so absent.
        assert_eq!(
            authenticate(Some("secret=s3cr3t-hook&secret=x"), &secret()),
            Err(WebhookError::MissingSecret)
        );
        // An 80 kB query of `a[]` is scanned, not parsed.
        let q = vec!["a[]"; 20_000].join("&");
        assert_eq!(
            authenticate(Some(&q), &secret()),
            Err(WebhookError::MissingSecret)
        );
    }

    #[test]
    fn ids_are_canonical_and_indices_may_be_zero() {
        let ok = b"leads[update][0][id]=7&account[id]=1";
        assert_eq!(parse(ok).unwrap().0.lead_ids(), vec!["7"]);
        for body in [
            &b"leads[update][0][id]=0007&account[id]=1"[..],
            b"leads[update][0][id]=0&account[id]=1",
            b"leads[update][0][id]=1234567890123456789&account[id]=1",
            b"leads[update][00][id]=7&account[id]=1",
            b"leads[update][0][id]=7&account[id]=01",
            b"leads[note][0][note][element_type]=2&leads[note][0][note][element_id]=007&account[id]=1",
        ] {
            assert!(
                matches!(parse(body), Err(WebhookError::Shape(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn several_leads_and_actions_in_one_post_dedupe() {
        let body = "leads[update][0][id]=1&leads[update][1][id]=2&leads[status][0][id]=2\
            &leads[note][0][note][element_type]=2&leads[note][0][note][element_id]=3\
            &contacts[update][0][id]=99&tasks[add][0][id]=5&tasks[add][0][element_id]=1&tasks[add][0][element_type]=2\
            &leads[delete][0][id]=4&account[id]=10&account[subdomain]=x";
        let hook = parse(body.as_bytes())
            .unwrap()
            .verify(Some("s3cr3t-hook"), &secret(), None, None)
            .unwrap();
        let mut ids = hook.lead_ids();
        ids.sort();
        assert_eq!(ids, vec!["1", "2", "3", "4"]);
        assert_eq!(hook.items.len(), 7);
        assert!(hook.summary().contains("leads[update]"));
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"leads[update][0][id]=1",
            b"leads[update][0][id]=1&account=x",
            b"account[_links][self]=https://x.amocrm.ru",
            b"leads=1&account[id]=1",
            b"leads[update]=1&account[id]=1",
            b"leads[update][x][id]=1&account[id]=1",
            b"leads[update][0]=1&account[id]=1",
            b"leads[update][0][name]=no-id&account[id]=1",
            b"leads[update][0][id]=12a&account[id]=1",
            b"leads[note][0][note][text]=no-element&account[id]=1",
            b"leads[note][0][id]=5&account[id]=1",
            b"leads[update][0][id]=1&account[id]=abc",
            b"leads[update][0][id]=1&leads[update][0][custom_fields][0][name]=x&account[id]=1",
        ];
        for body in cases {
            let e = parse(body).unwrap_err();
            assert!(
                matches!(e, WebhookError::Shape(_)),
                "{:?}: {e:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(
            parse(b"a=%zz&account[id]=1"),
            Err(WebhookError::Form(_))
        ));
        assert!(matches!(
            parse(b"leads[update][0][id]=1&leads[update][0][id][x]=2&account[id]=1"),
            Err(WebhookError::Form(_))
        ));
    }

    #[test]
    fn errors_and_debug_never_show_values() {
        let body = b"leads[update][0][id]=1&leads[update][0][name]=Secret+Name&account[id]=1";
        let u = parse(body).unwrap();
        assert!(!format!("{u:?}").contains("Secret"));
        let e = u
            .verify(Some("Secret Name"), &secret(), None, None)
            .unwrap_err();
        assert!(!e.to_string().contains("Secret"));
    }
}
