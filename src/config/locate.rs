//! Turning key paths into file positions and back.
//!
//! serde errors carry a byte span but no key path; semantic checks know the key path
//! but no span. A span-preserving parse of the same text (`toml::de::DeTable`) answers
//! both questions, so every message can say `FILE:LINE:COL: KEY`.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Renders segments as `portal[1].fields.map."custom.x"` (keys quoted only when needed).
pub(crate) fn format_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(k);
                } else {
                    out.push('"');
                    for c in k.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Parses the format produced by [`format_path`] (and by `Model::compile`'s `SpecError`).
/// Malformed pieces end the path early: a shorter path still locates the nearest parent.
pub(crate) fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut chars = path.chars().peekable();
    let mut key = String::new();
    let mut in_key = false;
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if in_key {
                    segs.push(Seg::Key(std::mem::take(&mut key)));
                    in_key = false;
                }
            }
            '[' => {
                if in_key {
                    segs.push(Seg::Key(std::mem::take(&mut key)));
                    in_key = false;
                }
                let mut digits = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    digits.push(d);
                }
                match digits.trim().parse::<usize>() {
                    Ok(i) => segs.push(Seg::Index(i)),
                    Err(_) => return segs,
                }
            }
            '"' => {
                let mut quoted = String::new();
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                quoted.push(n);
                            }
                        }
                        '"' => break,
                        other => quoted.push(other),
                    }
                }
                segs.push(Seg::Key(quoted));
                in_key = false;
            }
            other => {
                key.push(other);
                in_key = true;
            }
        }
    }
    if in_key {
        segs.push(Seg::Key(key));
    }
    segs
}

/// Byte offsets to 1-based line/column, and key paths to the offsets of their keys.
pub(crate) struct Locator<'a> {
    src: &'a str,
    line_starts: Vec<usize>,
    root: Spanned<DeValue<'a>>,
}

impl<'a> Locator<'a> {
    /// `root` is the parsed document (possibly partial after a syntax error).
    pub(crate) fn new(src: &'a str, root: Spanned<DeTable<'a>>) -> Self {
        let mut line_starts = vec![0];
        for (i, b) in src.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        let span = root.span();
        Locator {
            src,
            line_starts,
            root: Spanned::new(span, DeValue::Table(root.into_inner())),
        }
    }

    /// The parsed document.
    pub(crate) fn root(&self) -> &Spanned<DeValue<'a>> {
        &self.root
    }

    /// 1-based (line, column) of a byte offset; the column counts characters.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line_idx];
        let col = self
            .src
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line_idx + 1, col + 1)
    }

    /// Position of the most specific key of `path` that exists in the file (for a
    /// table header, the header's `[`); the document start when none does.
    pub(crate) fn locate(&self, path: &[Seg]) -> (usize, usize) {
        let mut offset = 0;
        let mut node = &self.root;
        for seg in path {
            match (seg, node.get_ref()) {
                (Seg::Key(k), DeValue::Table(t)) => match t.get_key_value(k.as_str()) {
                    Some((key, value)) => {
                        offset = key.span().start.min(value.span().start);
                        node = value;
                    }
                    None => break,
                },
                (Seg::Index(i), DeValue::Array(a)) => match a.get(*i) {
                    Some(value) => {
                        offset = value.span().start;
                        node = value;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        self.position(offset)
    }

    /// The node at `path`, if the file has it.
    pub(crate) fn node(&self, path: &[Seg]) -> Option<&Spanned<DeValue<'a>>> {
        let mut node = &self.root;
        for seg in path {
            node = match (seg, node.get_ref()) {
                (Seg::Key(k), DeValue::Table(t)) => t.get(k.as_str())?,
                (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The deepest key path under `node` whose key or value covers `offset`
    /// (relative to `node`; empty when only `node` itself does or nothing does).
    pub(crate) fn path_at(node: &Spanned<DeValue<'a>>, offset: usize) -> Vec<Seg> {
        let mut out = Vec::new();
        find(node, offset, &mut out);
        out
    }
}

fn covers(span: std::ops::Range<usize>, offset: usize) -> bool {
    span.start == offset || span.contains(&offset)
}

/// Depth-first: children first, because a table header's span does not cover its body.
fn find(node: &Spanned<DeValue<'_>>, offset: usize, out: &mut Vec<Seg>) -> bool {
    match node.get_ref() {
        DeValue::Table(t) => {
            for (key, value) in t.iter() {
                out.push(Seg::Key(key.get_ref().to_string()));
                if find(value, offset, out)
                    || covers(key.span(), offset)
                    || covers(value.span(), offset)
                {
                    return true;
                }
                out.pop();
            }
        }
        DeValue::Array(a) => {
            for (i, value) in a.iter().enumerate() {
                out.push(Seg::Index(i));
                if find(value, offset, out) || covers(value.span(), offset) {
                    return true;
                }
                out.pop();
            }
        }
        _ => {}
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        for p in [
            "portal[1].webhook_url_env",
            "scoring.rules[3].when.all[0].regex",
            "portal[0].fields.map.\"custom.budget\"",
        ] {
            assert_eq!(format_path(&parse_path(p)), p);
        }
    }

    #[test]
    fn locates_keys_headers_and_missing_children() {
        let src = "[server]\nlisten = \"x\"\n\n[[portal]]\nid = \"a\"\n\n[[portal]]\nid = \"b\"\n";
        let loc = Locator::new(src, DeTable::parse(src).unwrap());
        assert_eq!(loc.locate(&parse_path("server.listen")), (2, 1));
        assert_eq!(loc.locate(&parse_path("portal[1]")), (7, 1));
        assert_eq!(loc.locate(&parse_path("portal[1].id")), (8, 1));
        // A missing key falls back to its nearest existing parent.
        assert_eq!(loc.locate(&parse_path("portal[1].webhook_url")), (7, 1));
        assert_eq!(loc.locate(&parse_path("scoring.rules[0]")), (1, 1));
    }

    #[test]
    fn finds_the_key_under_an_offset() {
        let src = "[[portal]]\nid = \"a\"\n[portal.fields]\nscore = 5\n";
        let loc = Locator::new(src, DeTable::parse(src).unwrap());
        let offset = src.find('5').unwrap();
        let path = Locator::path_at(loc.root(), offset);
        assert_eq!(format_path(&path), "portal[0].fields.score");
    }

    #[test]
    fn columns_count_characters() {
        let src = "a = \"тест\"\nb = 1\n";
        let loc = Locator::new(src, DeTable::parse(src).unwrap());
        let off = src.find("\"\n").unwrap();
        assert_eq!(loc.position(off), (1, 10));
    }
}
