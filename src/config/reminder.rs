//! `[portal.reminder]`: a call before a customer's usual purchase. A leading metric the
//! guides ask for: a company that buys every June should hear from its rep in May, not
//! when it is already comparing offers.

use serde::Deserialize;

use super::load::Ctx;

/// `[portal.reminder]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReminderSection {
    /// The lead field holding the purchase month (1–12 or a month name) or the date of
    /// the next purchase: a field name rules use (`custom.<name>` mapped in
    /// `[portal.fields.map]`).
    pub field: String,
    /// How long before the purchase the rep gets the task.
    #[serde(default = "default_days_before")]
    pub days_before: u32,
    /// A purchase date repeats every year (a month always does: it has no year).
    #[serde(default = "default_yearly")]
    pub yearly: bool,
    /// Title; `{name}`, `{lead}`, `{date}` (the purchase, e.g. 01.06.2027) are filled in.
    #[serde(default = "default_title")]
    pub title: String,
    /// Body; the same placeholders.
    #[serde(default = "default_text")]
    pub text: String,
}

fn default_days_before() -> u32 {
    30
}
fn default_yearly() -> bool {
    true
}
fn default_title() -> String {
    "Скоро закупка: {name} ({date})".into()
}
fn default_text() -> String {
    "Клиент {name} обычно покупает около {date}. Позвоните заранее: узнайте планы и бюджет.".into()
}

/// `[portal.reminder]` checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Reminder {
    pub field: String,
    pub days_before: u32,
    pub yearly: bool,
    pub title: String,
    pub text: String,
}

impl Ctx<'_> {
    /// Check a lead field a section reads: a known field, or `custom.<name>` mapped in
    /// `[portal.fields.map]` to the CRM field that holds `what`.
    pub(super) fn mapped_lead_field(
        &mut self,
        path: &str,
        field: &str,
        mapped: &std::collections::BTreeMap<String, String>,
        what: &str,
    ) {
        let known = crate::lead::FIELD_NAMES.contains(&field)
            || field
                .strip_prefix("custom.")
                .is_some_and(|rest| !rest.is_empty());
        if !known {
            self.error(
                path,
                format!(
                    "`{field}` is not a lead field: use custom.<name> (mapped in [portal.fields.map]) or one of {}",
                    crate::lead::FIELD_NAMES.join(", ")
                ),
            );
        } else if field.starts_with("custom.") && !mapped.contains_key(field) {
            self.error(
                path,
                format!("`{field}` is not mapped: add it to [portal.fields.map] with the CRM field that holds {what}"),
            );
        }
    }

    /// Check `[portal.reminder]` against the portal's field mapping; `None` after
    /// recording each mistake at its key.
    pub(super) fn reminder(
        &mut self,
        base: &str,
        r: &ReminderSection,
        mapped: &std::collections::BTreeMap<String, String>,
    ) -> Option<Reminder> {
        let base = format!("{base}.reminder");
        let errors_before = self.errors.len();
        let field = r.field.trim();
        self.mapped_lead_field(
            &format!("{base}.field"),
            field,
            mapped,
            "the purchase month or date",
        );
        if !(1..=365).contains(&r.days_before) {
            self.error(
                &format!("{base}.days_before"),
                "must be 1 to 365 (days before the purchase)",
            );
        }
        if r.title.trim().is_empty() {
            self.error(&format!("{base}.title"), "must not be empty");
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Reminder {
            field: field.to_string(),
            days_before: r.days_before,
            yearly: r.yearly,
            title: r.title.clone(),
            text: r.text.clone(),
        })
    }
}
