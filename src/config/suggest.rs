//! Messages about misspelt keys: serde lists every expected key; these name the
//! closest one instead.

/// The names quoted in backticks in a serde message, in order.
pub(super) fn backticked(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// serde's "unknown field `x`, expected one of ..." lists every key; shorten it to the
/// unknown key and the closest known one.
pub(super) fn unknown_key_message(message: &str) -> String {
    let names = backticked(message);
    let Some((unknown, expected)) = names.split_first() else {
        return message.to_string();
    };
    let best = expected
        .iter()
        .map(|c| (edit_distance(unknown, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!("unknown key `{unknown}` (did you mean `{c}`?)"),
        None => format!("unknown key `{unknown}`"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_suggests_the_closest() {
        let m = "unknown field `webhok_url`, expected one of `id`, `crm`, `webhook_url`";
        assert_eq!(
            unknown_key_message(m),
            "unknown key `webhok_url` (did you mean `webhook_url`?)"
        );
        let m = "unknown field `zzz`, expected `id` or `crm`";
        assert_eq!(unknown_key_message(m), "unknown key `zzz`");
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
