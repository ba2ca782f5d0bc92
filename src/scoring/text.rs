//! Case folding and pattern matching tuned for the texts leads carry (ASCII URLs and
//! e-mails, Russian job titles), without allocating.
//!
//! `Pattern` keeps the admin's regex as the source of truth and adds a fast path for
//! the most common shape, an alternation of plain words (`(?i)/pricing|/prices|/цены`):
//! those are matched by one pass over the text's bytes that tries every word at once
//! (see `Words`), which for the texts where it is used gives exactly the regex's answer
//! (see `Pattern::is_match`). Case folding of ASCII and basic Cyrillic is done on UTF-8
//! bytes (each such letter's cases differ by fixed byte offsets), so it never decodes
//! chars nor re-validates the result.

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

/// Size of the stack buffers texts are folded into; longer texts take the slow path.
const BUF: usize = 256;

/// Fold the UTF-8 bytes of a text made only of `simple_char`s to lowercase into `buf`
/// (the same bytes `lower_str` gives), returning the length; `None` when the text has
/// another char or does not fit. Basic Cyrillic is `D0 80`..`D1 9F`: `Ѐ`..`Џ` (`D0
/// 80`..`8F`) lower to `D1 90`..`9F`, `А`..`П` (`D0 90`..`9F`) to `D0 B0`..`BF`, `Р`..`Я`
/// (`D0 A0`..`AF`) to `D1 80`..`8F`; the lowercase forms stay as they are.
#[inline]
fn fold_simple(s: &[u8], buf: &mut [u8; BUF]) -> Option<usize> {
    if s.len() > BUF {
        return None;
    }
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            buf[i] = b.to_ascii_lowercase();
            i += 1;
            continue;
        }
        let c = *s.get(i + 1)?;
        let (f, c) = match (b, c) {
            (0xD0, 0x80..=0x8F) => (0xD1, c + 0x10),
            (0xD0, 0x90..=0x9F) => (0xD0, c + 0x20),
            (0xD0, 0xA0..=0xAF) => (0xD1, c - 0x20),
            (0xD0, 0xB0..=0xBF) | (0xD1, 0x80..=0x9F) => (b, c),
            _ => return None,
        };
        buf[i] = f;
        buf[i + 1] = c;
        i += 2;
    }
    Some(s.len())
}

/// Run `f` on the UTF-8 bytes of the lowercase form of `s` (the same as `lower_str`),
/// using a stack buffer so the common short value costs no allocation.
pub(crate) fn with_lower<R>(s: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    if !s.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
        return f(s.as_bytes());
    }
    let mut buf = [0u8; BUF];
    if let Some(n) = fold_simple(s.as_bytes(), &mut buf) {
        return f(&buf[..n]);
    }
    let mut len = 0;
    for c in s.chars() {
        let Some(l) = lower_char(c) else {
            return f(lower_str(s).as_bytes());
        };
        let n = l.len_utf8();
        if len + n > buf.len() {
            return f(lower_str(s).as_bytes());
        }
        l.encode_utf8(&mut buf[len..]);
        len += n;
    }
    f(&buf[..len])
}

/// Does `hay` contain `needle` (bytes)? For short field values: no searcher set-up.
pub(crate) fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// A compiled regex plus, when the pattern is a plain alternation, its words.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    regex: Regex,
    /// Boxed: most patterns have none, and rules stay small.
    literals: Option<Box<Literals>>,
}

#[derive(Debug, Clone)]
struct Literals {
    /// `(?i)` prefix: the words are lowercased and matched against a lowercased text.
    case_insensitive: bool,
    /// Every word (lowercased with `(?i)`).
    words: Words,
    /// The ASCII-only words: the only ones an ASCII text (most URLs) can contain.
    ascii_words: Words,
}

/// A set of words searched for in one pass: at each position of the text, the two
/// bytes there are looked up in a 512-bit table of the words' first two bytes (in both
/// ASCII cases when matching ignores ASCII case), and only on a hit are the words
/// compared. One-byte words are tried at every position.
#[derive(Debug, Default, Clone)]
struct Words {
    words: Vec<Box<[u8]>>,
    pairs: [u64; 8],
    /// Some word is a single byte.
    short: bool,
}

/// The table slot of two adjacent bytes.
#[inline]
fn pair_slot(a: u8, b: u8) -> usize {
    ((usize::from(a) << 4) ^ usize::from(b)) & 511
}

impl Words {
    /// `ascii_ci`: the search will ignore ASCII case, so both cases go in the table.
    fn new<'w>(words: impl Iterator<Item = &'w str>, ascii_ci: bool) -> Words {
        let mut set = Words::default();
        for w in words {
            let b = w.as_bytes();
            match b {
                [] => {}
                [_] => set.short = true,
                [x, y, ..] => {
                    let cases = |c: u8| {
                        if ascii_ci {
                            [c.to_ascii_lowercase(), c.to_ascii_uppercase()]
                        } else {
                            [c, c]
                        }
                    };
                    for x in cases(*x) {
                        for y in cases(*y) {
                            let s = pair_slot(x, y);
                            set.pairs[s >> 6] |= 1 << (s & 63);
                        }
                    }
                }
            }
            set.words.push(b.into());
        }
        set
    }

    /// Does `text` contain one of the words, comparing bytes with `eq`?
    #[inline]
    fn find_in(&self, text: &[u8], eq: impl Fn(&[u8], &[u8]) -> bool) -> bool {
        let at = |i: usize| {
            let rest = &text[i..];
            self.words
                .iter()
                .any(|w| rest.len() >= w.len() && eq(&rest[..w.len()], w))
        };
        if self.short {
            return (0..text.len()).any(at);
        }
        text.windows(2).enumerate().any(|(i, p)| {
            let s = pair_slot(p[0], p[1]);
            self.pairs[s >> 6] & (1 << (s & 63)) != 0 && at(i)
        })
    }
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
            let ascii = words.iter().map(String::as_str).filter(|w| w.is_ascii());
            Box::new(Literals {
                case_insensitive,
                ascii_words: Words::new(ascii, case_insensitive),
                words: Words::new(words.iter().map(String::as_str), false),
            })
        });
        Ok(Pattern { regex, literals })
    }

    /// The regex source, which identifies the pattern.
    pub(crate) fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    /// Same answer as `Regex::is_match`. Case-sensitive words are plain substrings. With
    /// `(?i)`, the words contain only ASCII and basic Cyrillic chars, so a text made of
    /// those chars matches a word exactly when its lowercase form contains the word's
    /// (an ASCII text: ignoring ASCII case); any other text goes to the regex.
    #[inline]
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let Some(l) = &self.literals else {
            return self.regex.is_match(text);
        };
        let bytes = text.as_bytes();
        if !l.case_insensitive {
            return l.words.find_in(bytes, |a, b| a == b);
        }
        if text.is_ascii() {
            return l.ascii_words.find_in(bytes, <[u8]>::eq_ignore_ascii_case);
        }
        let mut buf = [0u8; BUF];
        match fold_simple(bytes, &mut buf) {
            Some(n) => l.words.find_in(&buf[..n], |a, b| a == b),
            None => self.regex.is_match(text),
        }
    }
}
/// Up to 64 patterns tested against one text together: the plain-word patterns by one
/// pass over an ASCII text (each word tried where its first byte occurs, its pattern's
/// bit set on a match), the others one by one. Same answers as each `is_match`.
#[derive(Debug)]
pub(crate) struct PatternSet {
    patterns: Vec<Pattern>,
    /// Bits of the patterns the word pass does not answer.
    others: u64,
    /// ASCII words: bytes, their pattern's bit, whether ASCII case is ignored.
    words: Vec<(Box<[u8]>, u64, bool)>,
    /// Bytes (both cases for `(?i)` words) a word starts with.
    first: [bool; 256],
    /// The same bytes when there are at most three of them (URL patterns' words mostly
    /// all start with `/`): the pass then looks for them eight bytes at a time
    /// (`find_bytes`) instead of looking at every byte.
    starts: Option<Starts>,
    /// `words` sorted by the `pair_slot` of their first two bytes lowercased, and where
    /// each slot's words start (the next slot's start is where they end): at a position
    /// only the words whose first two bytes can be there are compared. Empty when a
    /// one-byte word (`short`) makes every word a candidate everywhere.
    slot_start: Box<[u16]>,
    short: bool,
}

impl PatternSet {
    /// The set of `patterns` (at most 64: bit `i` is `patterns[i]`).
    pub(crate) fn new(patterns: Vec<Pattern>) -> PatternSet {
        assert!(
            patterns.len() <= 64,
            "a pattern set holds at most 64 patterns"
        );
        let mut set = PatternSet {
            others: 0,
            words: Vec::new(),
            first: [false; 256],
            starts: None,
            slot_start: Box::default(),
            short: false,
            patterns,
        };
        for (i, p) in set.patterns.iter().enumerate() {
            let bit = 1u64 << i;
            let Some(l) = &p.literals else {
                set.others |= bit;
                continue;
            };
            let ci = l.case_insensitive;
            let cases = |c: u8| [c, if ci { c.to_ascii_uppercase() } else { c }];
            for w in &l.ascii_words.words {
                for a in cases(w[0]) {
                    set.first[usize::from(a)] = true;
                }
                set.short |= w.len() < 2;
                set.words.push((w.clone(), bit, ci));
            }
        }
        if !set.short {
            let key = |w: &[u8]| pair_slot(w[0].to_ascii_lowercase(), w[1].to_ascii_lowercase());
            set.words.sort_by_key(|(w, _, _)| key(w));
            let mut start = vec![0u16; 513];
            for (w, _, _) in &set.words {
                start[key(w) + 1] += 1;
            }
            for k in 1..start.len() {
                start[k] += start[k - 1];
            }
            set.slot_start = start.into_boxed_slice();
        }
        let firsts: Vec<u8> = (0..=u8::MAX)
            .filter(|&b| set.first[usize::from(b)])
            .collect();
        set.starts = match *firsts.as_slice() {
            [a] => Some(Starts::One(a)),
            [a, b] => Some(Starts::Two(a, b)),
            [a, b, c] => Some(Starts::Three(a, b, c)),
            _ => None,
        };
        set
    }

    /// The bits of the patterns that match `text`.
    pub(crate) fn matches(&self, text: &str) -> u64 {
        let each = |bits: u64| {
            if bits == 0 {
                return 0;
            }
            (0..self.patterns.len())
                .filter(|&i| bits & (1 << i) != 0 && self.patterns[i].is_match(text))
                .fold(0u64, |m, i| m | 1 << i)
        };
        if !text.is_ascii() {
            return each(u64::MAX);
        }
        let mut m = each(self.others);
        if self.words.is_empty() {
            return m;
        }
        let bytes = text.as_bytes();
        match self.starts {
            Some(Starts::One(a)) => find_bytes(bytes, [a, a, a], |i| self.try_at(bytes, i, &mut m)),
            Some(Starts::Two(a, b)) => {
                find_bytes(bytes, [a, b, b], |i| self.try_at(bytes, i, &mut m))
            }
            Some(Starts::Three(a, b, c)) => {
                find_bytes(bytes, [a, b, c], |i| self.try_at(bytes, i, &mut m))
            }
            None => {
                for (i, &b) in bytes.iter().enumerate() {
                    if self.first[usize::from(b)] {
                        self.try_at(bytes, i, &mut m);
                    }
                }
            }
        }
        m
    }

    /// Try the words at `bytes[i]`, which some word starts with; set the bits of the
    /// patterns found in `m`.
    #[inline]
    fn try_at(&self, bytes: &[u8], i: usize, m: &mut u64) {
        let rest = &bytes[i..];
        let words = if self.short {
            &self.words[..]
        } else {
            let Some(&next) = rest.get(1) else { return };
            let k = pair_slot(rest[0].to_ascii_lowercase(), next.to_ascii_lowercase());
            &self.words[usize::from(self.slot_start[k])..usize::from(self.slot_start[k + 1])]
        };
        for (w, bit, ci) in words {
            if *m & bit == 0
                && rest.len() >= w.len()
                && (if *ci {
                    eq_lower(&rest[..w.len()], w)
                } else {
                    rest[..w.len()] == **w
                })
            {
                *m |= bit;
            }
        }
    }
}

/// Call `f` with each position of `bytes` holding one of `needles`, in order, testing
/// eight bytes at a time (a URL is ~45 bytes: a library search's set-up per call costs
/// more than the scan). A lane's high bit is set exactly when its byte equals the needle:
/// `(v & 0x7F) + 0x7F` sets it for any non-zero low seven bits without carrying into the
/// next lane, `| v` for a set high bit, so it stays clear only for a zero byte.
#[inline]
fn find_bytes(bytes: &[u8], needles: [u8; 3], mut f: impl FnMut(usize)) {
    const LO7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let zero_lanes = |v: u64| !(((v & LO7).wrapping_add(LO7)) | v | LO7);
    let [a, b, c] = needles.map(|n| u64::from(n) * ONES);
    let mut chunks = bytes.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let mut hits = zero_lanes(x ^ a) | zero_lanes(x ^ b) | zero_lanes(x ^ c);
        while hits != 0 {
            f(base + (hits.trailing_zeros() / 8) as usize);
            hits &= hits - 1;
        }
        base += 8;
    }
    for (i, x) in chunks.remainder().iter().enumerate() {
        if needles.contains(x) {
            f(base + i);
        }
    }
}

/// The bytes a [`PatternSet`]'s words start with, when few enough to search for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Starts {
    One(u8),
    Two(u8, u8),
    Three(u8, u8, u8),
}

/// `text` equals the lowercase ASCII `word` ignoring ASCII case; inlined, and most
/// candidates fail on the second byte.
#[inline(always)]
fn eq_lower(text: &[u8], word: &[u8]) -> bool {
    text.iter()
        .zip(word)
        .all(|(t, w)| t.to_ascii_lowercase() == *w)
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
            assert_eq!(
                with_lower(s, <[u8]>::to_vec),
                lower_str(s).into_bytes(),
                "{s}"
            );
        }
        // Every char of the byte-level fold's range, in both cases, and its neighbours.
        let all: String = ('\u{0}'..='\u{7F}')
            .chain('\u{0400}'..='\u{045F}')
            .collect();
        let mut buf = [0u8; BUF];
        for chunk in all.chars().collect::<Vec<_>>().chunks(40) {
            let s: String = chunk.iter().collect();
            let n = fold_simple(s.as_bytes(), &mut buf).expect("simple chars fold");
            assert_eq!(&buf[..n], lower_str(&s).as_bytes(), "{s}");
        }
        for c in ['\u{0460}', '\u{03A3}', '\u{00C9}', '\u{212A}'] {
            assert_eq!(fold_simple(c.to_string().as_bytes(), &mut buf), None, "{c}");
        }
    }

    /// The eight-bytes-at-a-time search finds exactly the positions a byte-by-byte one
    /// does, for every length around the chunk size, bytes with and without the high
    /// bit (lanes next to a hit or to 0x00/0x80/0xFF must not report one), one to three
    /// needles.
    #[test]
    fn find_bytes_agrees_with_a_plain_search() {
        let alphabet = [b'/', b'a', 0x00, 0x80, 0xFF, 0x2E, 0x7F, 0xD0, 0x01];
        let mut state = 7u32;
        for len in 0..40 {
            for _ in 0..30 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        alphabet[(state >> 16) as usize % alphabet.len()]
                    })
                    .collect();
                for needles in [[b'/'; 3], [b'/', 0x80, 0x80], [0x00, 0xFF, 0xD0]] {
                    let mut found = Vec::new();
                    find_bytes(&bytes, needles, |i| found.push(i));
                    let want: Vec<usize> = (0..bytes.len())
                        .filter(|&i| needles.contains(&bytes[i]))
                        .collect();
                    assert_eq!(found, want, "{bytes:?} for {needles:?}");
                }
            }
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
            "(?i)head of|директор|ab",
            "Ab|x",
            "(?i)ёж|ЁЖ|ѐ",
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
            "HEAD OF sales",
            "Head  of",
            "ГЕНДИРЕКТОР",
            "xAb",
            "xab",
            "ЁЖИК",
            "Ѐ",
            "Ѡдиректор",
            "a",
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
        // With and without a one-byte word (which turns off the two-byte filter).
        for short in [true, false] {
            let pats: Vec<&str> = patterns
                .iter()
                .copied()
                .filter(|p| short || !["(?i)k", "Ab|x"].contains(p))
                .collect();
            let set = PatternSet::new(pats.iter().map(|p| Pattern::new(p).unwrap()).collect());
            assert_eq!(set.short, short);
            for t in texts {
                let want = pats.iter().enumerate().fold(0u64, |m, (i, p)| {
                    m | u64::from(Regex::new(p).unwrap().is_match(t)) << i
                });
                assert_eq!(set.matches(t), want, "{t}");
            }
        }
        // Sets whose words start with one, two or three distinct bytes (searched for
        // eight bytes at a time) and with more (every byte looked at).
        let sets: [(&[&str], Option<Starts>); 4] = [
            (
                &["(?i)/careers|/jobs", "/blog", "^/blog", "(?i)/Blog|/news"],
                Some(Starts::One(b'/')),
            ),
            (
                &["price|Прайс", "(?i)/pricing|/prices|/цены"],
                Some(Starts::Two(b'/', b'p')),
            ),
            (
                &["(?i)/careers|/jobs", "Ab|x"],
                Some(Starts::Three(b'/', b'A', b'x')),
            ),
            (&["(?i)k", "/blog", "Ab|x"], None),
        ];
        for (pats, starts) in sets {
            let set = PatternSet::new(pats.iter().map(|p| Pattern::new(p).unwrap()).collect());
            assert_eq!(set.starts, starts, "{pats:?}");
            for t in texts {
                let want = pats.iter().enumerate().fold(0u64, |m, (i, p)| {
                    m | u64::from(Regex::new(p).unwrap().is_match(t)) << i
                });
                assert_eq!(set.matches(t), want, "{pats:?} on {t}");
            }
        }
        assert!(Pattern::new("^/blog").unwrap().literals.is_none());
        assert!(Pattern::new("a||b").unwrap().literals.is_none());
        assert!(Pattern::new("(?i)k").unwrap().literals.unwrap().words.short);
    }
}
