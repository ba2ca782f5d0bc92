//! Website behaviour a CRM has no activity type for (demo requests, downloads, page
//! views…) is recorded as an activity (Bitrix24) or a note (amoCRM) whose text starts
//! with a **tag**, e.g. `[download] Price list 2026`. One table for every CRM, so a
//! site tracker or form handler writes the same tags whichever CRM it feeds.

use crate::lead::ActivityKind;

/// Tag → neutral activity kind name, matched case-insensitively at the start of the text.
pub const TAGS: &[(&str, &str)] = &[
    ("[demo]", "demo_request"),
    ("[download]", "download"),
    ("[page]", "page_view"),
    ("[form]", "form"),
    ("[meeting]", "meeting"),
    ("[email_open]", "email_open"),
];

/// The default tag table as (tag, kind) pairs.
pub fn default_tags() -> Vec<(String, ActivityKind)> {
    TAGS.iter()
        .map(|(tag, kind)| (tag.to_string(), ActivityKind::from_name(kind)))
        .collect()
}

/// The kind a tag names and the trimmed text after it; `None` when `text` starts with
/// none of `tags`.
pub fn split_tag<'t>(
    tags: &[(String, ActivityKind)],
    text: &'t str,
) -> Option<(ActivityKind, &'t str)> {
    tags.iter().find_map(|(tag, kind)| {
        let head_len: usize = text
            .chars()
            .take(tag.chars().count())
            .map(char::len_utf8)
            .sum();
        let head = &text[..head_len];
        (head.to_lowercase() == tag.to_lowercase()).then(|| (kind.clone(), text[head_len..].trim()))
    })
}

/// The first `http(s)://` address in a text, without trailing punctuation.
pub fn first_url(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(|w| {
            w.trim_end_matches(['.', ',', ';', ')', '"', '\''])
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_is_found_case_insensitively_and_cut_off() {
        let tags = default_tags();
        assert_eq!(tags.len(), 6);
        for (tag, kind) in TAGS {
            let text = format!("{} rest", tag.to_uppercase());
            let (k, rest) = split_tag(&tags, &text).unwrap();
            assert_eq!((k, rest), (ActivityKind::from_name(kind), "rest"));
        }
        assert_eq!(
            split_tag(&tags, "[Download] Прайс 2026").map(|(k, r)| (k, r.to_string())),
            Some((ActivityKind::Download, "Прайс 2026".to_string()))
        );
        assert!(split_tag(&tags, "Заявка [demo]").is_none());
        assert!(
            split_tag(&tags, "Пр").is_none(),
            "no panic inside a character"
        );
    }

    #[test]
    fn first_url_drops_trailing_punctuation() {
        assert_eq!(
            first_url("see https://x.ru/a.pdf, thanks").as_deref(),
            Some("https://x.ru/a.pdf")
        );
        assert_eq!(first_url("/pricing only"), None);
    }
}
