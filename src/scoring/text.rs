//! Case folding and pattern matching tuned for the texts leads carry (ASCII URLs and
//! e-mails, Russian job titles), without allocating.
//!
//! `Pattern` keeps the admin's regex as the source of truth and adds a fast path for
//! the most common shape, an alternation of plain words (`(?i)/pricing|/prices|/цены`):
//! those are matched with substring search, which for the texts where it is used gives
//! exactly the regex's answer (see `Pattern::is_match`).

use regex::Regex;

/// Lowercase one char; fast for ASCII and the basic Cyrillic block, where
/// `char::to_lowercase` is a table search. Returns `None` for chars whose lowercase
/// form is several chars (e.g. `İ`).
#[inline]
fn lower_char(c: char) -> Option<char> {
    match c {
        'A'..='Z' => Some((c as u8 + 32) as char),
        '\u{0410}'..='\u{042F}' => char::from_u32(c as u32 + 0x20),
        '\u{0400}'..='\u{040F}' => char::from_u32(c as u32 + 0x50),
        _ if c.is_ascii() || ('\u{0430}'..='\u{045F}').contains(&c) => Some(c),
        _ => {
            let mut it = c.to_lowercase();
            match (it.next(), it.next()) {
                (Some(l), None) => Some(l),
                _ => None,
            }
        }
    }
}

/// Lowercase the way `lower_str` does (trimmed input assumed).
pub(crate) fn lower_str(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Chars on which plain lowercasing agrees with the regex engine's Unicode case
/// folding: ASCII and the basic Cyrillic letters (each has exactly one other case form
/// within these ranges, and the rarer forms that fold with them lie outside).
#[inline]
fn simple_char(c: char) -> bool {
    c.is_ascii() || ('\u{0400}'..='\u{045F}').contains(&c)
}

/// Run `f` on the lowercase form of `s` (the same as `lower_str`), using a stack buffer
/// so the common short value costs no allocation.
pub(crate) fn with_lower<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    if !s.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
        return f(s);
    }
    let mut buf = [0u8; 256];
    let mut len = 0;
    for c in s.chars() {
        let Some(l) = lower_char(c) else {
            return f(&lower_str(s));
        };
        let n = l.len_utf8();
        if len + n > buf.len() {
            return f(&lower_str(s));
        }
        l.encode_utf8(&mut buf[len..]);
        len += n;
    }
    match std::str::from_utf8(&buf[..len]) {
        Ok(lowered) => f(lowered),
        // Unreachable: the buffer holds whole encoded chars only.
        Err(_) => f(&lower_str(s)),
    }
}

/// A compiled regex plus, when the pattern is a plain alternation, its words.
#[derive(Debug)]
pub(crate) struct Pattern {
    regex: Regex,
    /// Boxed: most patterns have none, and rules stay small.
    literals: Option<Box<Literals>>,
}

#[derive(Debug)]
struct Literals {
    /// `(?i)` prefix: the words are lowercased and matched against a lowercased text.
    case_insensitive: bool,
    words: Vec<String>,
    /// The ASCII-only words: the only ones an ASCII text (most URLs) can contain.
    ascii_words: Vec<String>,
    /// Bytes (both cases) an ASCII word can start with: the search only compares words
    /// at those positions.
    first: [u64; 4],
    /// When every ASCII word starts with the same non-letter (`/` for URL paths), the
    /// search jumps between its occurrences with `memchr` instead of testing each byte.
    common_first: Option<char>,
}

/// Characters that make a regex piece more than a plain word.
const META: &[char] = &[
    '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$', '#',
];

impl Pattern {
    pub(crate) fn new(src: &str) -> Result<Pattern, regex::Error> {
        let regex = Regex::new(src)?;
        let (case_insensitive, body) = match src.strip_prefix("(?i)") {
            Some(rest) => (true, rest),
            None => (false, src),
        };
        let words: Vec<&str> = body.split('|').collect();
        let plain = words.iter().all(|w| {
            !w.is_empty() && !w.contains(META) && (!case_insensitive || w.chars().all(simple_char))
        });
        let literals = plain.then(|| {
            let words: Vec<String> = words
                .iter()
                .map(|w| {
                    if case_insensitive {
                        lower_str(w)
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            Box::new(Literals {
                case_insensitive,
                ascii_words: words.iter().filter(|w| w.is_ascii()).cloned().collect(),
                first: first_bytes(&words),
                common_first: common_first(&words),
                words,
            })
        });
        Ok(Pattern { regex, literals })
    }

    /// Same answer as `Regex::is_match`. Case-sensitive words are plain substrings. With
    /// `(?i)`, the words contain only ASCII and basic Cyrillic chars, so a text made of
    /// those chars matches a word exactly when its lowercase form contains the word's;
    /// any other text goes to the regex.
    #[inline]
    pub(crate) fn is_match(&self, text: &str) -> bool {
        match &self.literals {
            Some(l) if !l.case_insensitive => l.words.iter().any(|w| text.contains(w.as_str())),
            Some(l) if text.is_ascii() => match l.common_first {
                Some(c) => ascii_ci_contains_from(text, c, l),
                None => ascii_ci_contains(text.as_bytes(), l),
            },
            Some(l) if text.chars().all(simple_char) => {
                with_lower(text, |t| l.words.iter().any(|w| t.contains(w.as_str())))
            }
            _ => self.regex.is_match(text),
        }
    }
}

/// The first bytes of the ASCII words, in both cases.
fn first_bytes(words: &[String]) -> [u64; 4] {
    let mut first = [0u64; 4];
    for w in words.iter().filter(|w| w.is_ascii()) {
        if let Some(&b) = w.as_bytes().first() {
            for c in [b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                first[usize::from(c >> 6)] |= 1 << (c & 63);
            }
        }
    }
    first
}

/// The first byte shared by all ASCII words, if it is the same for all and not a letter.
fn common_first(words: &[String]) -> Option<char> {
    let mut firsts = words
        .iter()
        .filter(|w| w.is_ascii())
        .map(|w| w.as_bytes().first().copied());
    let first = firsts.next()??;
    (!first.is_ascii_alphabetic() && firsts.all(|f| f == Some(first))).then_some(char::from(first))
}

/// `ascii_ci_contains` for words sharing the first char `c`: only positions of `c` are
/// tried, found with the standard library's `memchr`.
#[inline]
fn ascii_ci_contains_from(text: &str, c: char, l: &Literals) -> bool {
    let bytes = text.as_bytes();
    let mut pos = 0;
    while let Some(off) = text.get(pos..).and_then(|t| t.find(c)) {
        let rest = &bytes[pos + off..];
        for w in &l.ascii_words {
            let w = w.as_bytes();
            if rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w) {
                return true;
            }
        }
        pos += off + 1;
    }
    false
}

/// Does an ASCII text contain one of the (lowercase, ASCII) words, ignoring ASCII case?
/// One pass over the text; words are compared only where their first byte occurs, so a
/// URL is scanned once per pattern instead of once per word, with no copy.
#[inline]
fn ascii_ci_contains(text: &[u8], l: &Literals) -> bool {
    for (i, b) in text.iter().enumerate() {
        if l.first[usize::from(*b >> 6)] & (1 << (*b & 63)) == 0 {
            continue;
        }
        let rest = &text[i..];
        for w in &l.ascii_words {
            let w = w.as_bytes();
            if rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_matches_the_standard_library() {
        for s in [
            "ГЕНЕРАЛЬНЫЙ Директор",
            "ЁЖИК Ѐ Џ",
            "Straße İstanbul",
            "ΣΊΣΥΦΟΣ",
            "plain",
        ] {
            assert_eq!(with_lower(s, str::to_string), lower_str(s), "{s}");
        }
    }

    #[test]
    fn fast_path_agrees_with_the_regex() {
        let patterns = [
            "(?i)/pricing|/prices|/цены",
            "/blog",
            "(?i)директор|ceo|руководител",
            "(?i)manager|менеджер",
            "price|Прайс",
            "(?i)k",
            "^/blog",
            "(?i)a.c",
            "(?i)/careers|/jobs",
            "(?i)/Blog|/news",
        ];
        let texts = [
            "https://x.ru/PRICING",
            "https://x.ru/Цены",
            "/blog/1",
            "x/blog",
            "Генеральный ДИРЕКТОР",
            "CEO",
            "Sales MANAGER",
            "Менеджер",
            "ПРАЙС",
            "Прайс",
            "\u{212A}elvin",
            "K",
            "abc",
            "ſtraße",
            "https://x.ru/CAREERS/1",
            "https://x.ru/a/b/c/JoBs",
            "https://x.ru/jobs",
            "/",
            "https://x.ru/BLOG",
            "",
        ];
        for p in patterns {
            let pat = Pattern::new(p).unwrap();
            let re = Regex::new(p).unwrap();
            for t in texts {
                assert_eq!(pat.is_match(t), re.is_match(t), "{p} on {t}");
            }
        }
        assert!(Pattern::new("(?i)/pricing|/цены")
            .unwrap()
            .literals
            .is_some());
        assert!(Pattern::new("^/blog").unwrap().literals.is_none());
        assert!(Pattern::new("a||b").unwrap().literals.is_none());
        let url = Pattern::new("(?i)/pricing|/цены").unwrap();
        assert_eq!(url.literals.as_ref().unwrap().common_first, Some('/'));
        assert_eq!(
            Pattern::new("(?i)ab|ac")
                .unwrap()
                .literals
                .unwrap()
                .common_first,
            None
        );
    }
}
