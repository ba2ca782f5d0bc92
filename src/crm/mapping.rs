//! The neutral field mapping (`[portal.fields.map]`: neutral name → CRM field), applied
//! the same way for every CRM so a rule reads the same lead whichever CRM it came from.
//!
//! Each adapter only finds the mapped field's values (as texts, empty ones dropped);
//! [`apply_map`] decides what they mean:
//! - one-value fields (`name`, `position`, `company`, `status`, `responsible_id`) take
//!   the first value and replace what the CRM's standard field gave;
//! - descriptive text (`industry`, `region`, `source`, `custom.<x>`) joins all values
//!   with ", ";
//! - numbers (`revenue`, `employees`) parse the first value ("12 000 000", "1,5");
//! - `email` and `phone` **add** to the lead's own addresses (skipping duplicates): a
//!   mapped field is one more place the CRM keeps them, and replacing would hide the
//!   address on the card from rules such as `email_domain_in` or the free-mailbox check.
//!
//! A mapped field with no value changes nothing.

use std::collections::BTreeMap;

use crate::lead::Lead;

/// Fill `lead` from the mapping; `values_of(crm_field)` gives the field's non-empty
/// values (none when the record lacks the field).
pub fn apply_map(
    lead: &mut Lead,
    map: &BTreeMap<String, String>,
    mut values_of: impl FnMut(&str) -> Vec<String>,
) {
    for (neutral, field) in map {
        let values = values_of(field);
        if !values.is_empty() {
            set_field(lead, neutral, values);
        }
    }
}

/// Put one mapped field's values (non-empty) into the neutral field `name`.
pub fn set_field(lead: &mut Lead, name: &str, values: Vec<String>) {
    let first = values.first().cloned();
    let joined = values.join(", ");
    match name {
        "name" => lead.name = first,
        "position" => lead.position = first,
        "company" => lead.company = first,
        "status" => lead.status = first,
        "responsible_id" => lead.responsible_id = first,
        "email" => add_unique(&mut lead.emails, values),
        "phone" => add_unique(&mut lead.phones, values),
        "industry" => lead.industry = Some(joined),
        "region" => lead.region = Some(joined),
        "source" => lead.source = Some(joined),
        "revenue" => lead.revenue = first.as_deref().and_then(parse_number),
        "employees" => lead.employees = first.as_deref().and_then(parse_number),
        other => {
            let key = other.strip_prefix("custom.").unwrap_or(other);
            lead.custom.insert(key.to_string(), joined);
        }
    }
}

fn add_unique(list: &mut Vec<String>, values: Vec<String>) {
    for v in values {
        if !list.iter().any(|have| have.eq_ignore_ascii_case(&v)) {
            list.push(v);
        }
    }
}

/// A number as CRMs store it in text fields: spaces (also non-breaking) as thousands
/// separators, a comma or a point as the decimal mark.
pub fn parse_number(s: &str) -> Option<f64> {
    let cleaned: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{a0}')
        .collect::<String>()
        .replace(',', ".");
    cleaned.parse::<f64>().ok().filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn every_kind_of_neutral_field() {
        let mut lead = Lead {
            name: Some("From the card".into()),
            emails: vec!["ivan@corp.ru".into()],
            ..Lead::default()
        };
        let m = map(&[
            ("name", "N"),
            ("email", "E"),
            ("phone", "P"),
            ("industry", "I"),
            ("revenue", "R"),
            ("employees", "S"),
            ("custom.budget", "B"),
            ("region", "EMPTY"),
        ]);
        apply_map(&mut lead, &m, |f| match f {
            "N" => vec!["Иван".into(), "ignored".into()],
            "E" => vec!["IVAN@corp.ru".into(), "ivan@gmail.com".into()],
            "P" => vec!["+7 900".into()],
            "I" => vec!["Retail".into(), "Food".into()],
            "R" => vec!["12 000 000".into()],
            "S" => vec!["1,5".into()],
            "B" => vec!["yes".into()],
            _ => Vec::new(),
        });
        assert_eq!(lead.name.as_deref(), Some("Иван"));
        // E-mails add to the card's own (case-insensitive duplicates skipped).
        assert_eq!(lead.emails, vec!["ivan@corp.ru", "ivan@gmail.com"]);
        assert_eq!(lead.phones, vec!["+7 900"]);
        assert_eq!(lead.industry.as_deref(), Some("Retail, Food"));
        assert_eq!(lead.revenue, Some(12_000_000.0));
        assert_eq!(lead.employees, Some(1.5));
        assert_eq!(lead.custom["budget"], "yes");
        // A mapped field without a value changes nothing.
        assert_eq!(lead.region, None);
    }

    #[test]
    fn numbers_in_crm_text() {
        assert_eq!(parse_number("1\u{a0}200"), Some(1200.0));
        assert_eq!(parse_number("5000000.5"), Some(5_000_000.5));
        assert_eq!(parse_number("n/a"), None);
        assert_eq!(parse_number("inf"), None);
    }
}
