//! A person's e-mail or phone as a signed identify call (or an erasure request) names
//! them, normalised so that the same person is the same value however a form wrote it:
//! e-mail trimmed and lower-cased, phone reduced to its digits with the Russian trunk
//! prefix `8XXXXXXXXXX` read as `7XXXXXXXXXX`. Only a keyed hash of this value is ever
//! stored (see `store::tracking_contacts`).

use std::fmt;

/// An e-mail or a phone, normalised. `Debug` hides the value: it is personal data and
/// must not reach logs.
#[derive(Clone, PartialEq, Eq)]
pub enum ContactPoint {
    /// Lower-case, trimmed.
    Email(String),
    /// Digits only, 7 to 15 of them (E.164's most), `7…` for a Russian number.
    Phone(String),
}

impl fmt::Debug for ContactPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContactPoint::Email(_) => "Email(<hidden>)",
            ContactPoint::Phone(_) => "Phone(<hidden>)",
        })
    }
}

impl ContactPoint {
    /// Normalise an e-mail; `None` when it is not one.
    pub fn email(raw: &str) -> Option<ContactPoint> {
        let e = raw.trim().to_lowercase();
        let (local, domain) = e.split_once('@')?;
        let ok = !local.is_empty()
            && e.len() <= 254
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && !e.chars().any(|c| c.is_whitespace() || c.is_control());
        ok.then_some(ContactPoint::Email(e))
    }

    /// Normalise a phone: digits only, `8XXXXXXXXXX` (a Russian number dialled with
    /// the trunk prefix) as `7XXXXXXXXXX`; `None` when fewer than 7 or more than 15
    /// digits remain, or when letters are mixed in.
    pub fn phone(raw: &str) -> Option<ContactPoint> {
        let raw = raw.trim();
        if raw
            .chars()
            .any(|c| !(c.is_ascii_digit() || " +-().".contains(c)))
        {
            return None;
        }
        let mut digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        if digits.len() == 11 && digits.starts_with('8') {
            digits.replace_range(0..1, "7");
        }
        (7..=15)
            .contains(&digits.len())
            .then_some(ContactPoint::Phone(digits))
    }

    /// `email` or `phone` (the hash input's prefix, and what reports name).
    pub fn kind(&self) -> &'static str {
        match self {
            ContactPoint::Email(_) => "email",
            ContactPoint::Phone(_) => "phone",
        }
    }

    /// The normalised value (only for the CRM look-up and the keyed hash).
    pub fn value(&self) -> &str {
        match self {
            ContactPoint::Email(v) | ContactPoint::Phone(v) => v,
        }
    }

    /// A Russian number's ten national digits, which every written form of it contains
    /// (`+7 912…`, `8 (912)…`, `912…`): for `7` and ten digits, and for ten digits alone
    /// (a number written without its country code, as Russian CRMs often hold them).
    pub fn russian_national(&self) -> Option<&str> {
        match self {
            ContactPoint::Phone(d) if d.len() == 11 && d.starts_with('7') => Some(&d[1..]),
            ContactPoint::Phone(d) if d.len() == 10 => Some(d),
            _ => None,
        }
    }

    /// Does a value the CRM holds (in whatever form a rep typed it) name this point?
    /// Phones match when equal, or when both are Russian with the same national digits.
    pub fn matches(&self, crm_value: &str) -> bool {
        let other = match self {
            ContactPoint::Email(_) => ContactPoint::email(crm_value),
            ContactPoint::Phone(_) => ContactPoint::phone(crm_value),
        };
        let Some(other) = other else {
            return false;
        };
        other == *self
            || matches!(
                (self.russian_national(), other.russian_national()),
                (Some(a), Some(b)) if a == b
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased_and_junk_is_refused() {
        assert_eq!(
            ContactPoint::email("  Ivan.Petrov@Factory.RU "),
            Some(ContactPoint::Email("ivan.petrov@factory.ru".into()))
        );
        for bad in [
            "",
            "ivan",
            "@factory.ru",
            "ivan@",
            "ivan@ru",
            "iv an@x.ru",
            "a@b@c.ru",
        ] {
            assert_eq!(ContactPoint::email(bad), None, "{bad}");
        }
    }

    #[test]
    fn phones_keep_digits_and_read_the_russian_trunk_prefix() {
        let p = |s: &str| ContactPoint::phone(s).map(|c| c.value().to_string());
        assert_eq!(p("+7 (912) 345-67-89").as_deref(), Some("79123456789"));
        assert_eq!(p("8 912 345 67 89").as_deref(), Some("79123456789"));
        assert_eq!(p("79123456789").as_deref(), Some("79123456789"));
        // Not eleven digits: no trunk prefix to read.
        assert_eq!(p("+44 20 7946 0958").as_deref(), Some("442079460958"));
        assert_eq!(p("123"), None);
        assert_eq!(p("8-912-CALL-NOW"), None);
        let ru = ContactPoint::phone("8 (912) 345-67-89").unwrap();
        assert_eq!(ru.russian_national(), Some("9123456789"));
        assert!(ru.matches("+7 912 345-67-89"));
        assert!(
            ru.matches("912 345-67-89"),
            "written without the country code"
        );
        assert!(!ru.matches("+7 912 345-67-80"));
        assert!(!ru.matches("+44 912 345 67 89"));
        let national = ContactPoint::phone("(912) 345-67-89").unwrap();
        assert_eq!(national.russian_national(), Some("9123456789"));
        assert!(national.matches("8 912 345 67 89"));
        assert!(format!("{ru:?}").contains("hidden"));
    }
}
