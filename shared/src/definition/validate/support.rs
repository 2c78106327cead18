//! Small helpers shared by the structural and semantic checks: paths, plain wording, suggestions.

use serde_json::Value;

/// `parent.key` (or just `key` at the top level).
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(super) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The path of a serde_path_to_error path below `prefix`.
pub(super) fn join_serde_path(prefix: &str, path: &serde_path_to_error::Path) -> String {
    let mut out = prefix.to_string();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index: i } => out = index(&out, *i),
            serde_path_to_error::Segment::Map { key } => out = join(&out, key),
            serde_path_to_error::Segment::Enum { variant } => out = join(&out, variant),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// A JSON value's kind as a person would say it, for "expected X, found Y" messages.
pub(super) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `a, b, c`.
pub(super) fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

/// Restricted Damerau-Levenshtein distance (a transposition counts as one edit, so "tset" is one
/// edit away from "test").
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, cell) in d.iter_mut().step_by(width).enumerate() {
        *cell = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// The candidate closest to `name`, if it is close enough to be a plausible typo.
pub(super) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = match name.chars().count() {
        0..=2 => 1,
        3..=5 => 2,
        _ => 3,
    };
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            let candidate = c.to_lowercase();
            // "str" for "string", "int" for "integer": an abbreviation is as good as one typo.
            let d = if lower.len() >= 3 && candidate.starts_with(&lower) {
                1
            } else {
                edit_distance(&lower, &candidate)
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `; did you mean "x"?` when a candidate is close, else an empty string.
pub(super) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    closest(name, candidates)
        .map(|c| format!("; did you mean \"{c}\"?"))
        .unwrap_or_default()
}

/// Rewrite serde's messages into plain words ("expected u32" means nothing to most people).
pub(super) fn humanize(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!(
            "expected {}, found {}",
            plain_expected(expected),
            plain_found(found)
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!(
            "expected {}, found {}",
            plain_expected(expected),
            found.replace('`', "")
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once('`')
    {
        let allowed: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return format!(
            "\"{value}\" is not one of {}{}",
            list(allowed.iter().copied()),
            did_you_mean(value, allowed.iter().copied())
        );
    }
    message.to_string()
}

fn plain_expected(expected: &str) -> String {
    match expected {
        "u8" => "a whole number from 0 to 255".to_string(),
        "u16" => "a whole number from 0 to 65535".to_string(),
        "u32" | "u64" | "usize" => "a whole number of 0 or more".to_string(),
        "i8" | "i16" | "i32" | "i64" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" => "a mapping".to_string(),
        other if other.starts_with("struct ") => "a mapping".to_string(),
        other => other.to_string(),
    }
}

fn plain_found(found: &str) -> String {
    match found {
        "map" => "a mapping".to_string(),
        "sequence" => "a list".to_string(),
        "null" => "nothing (null)".to_string(),
        other => other.replace('`', ""),
    }
}

/// `^[a-z0-9][a-z0-9_-]{0,63}$`: workflow ids, step ids, webhook ids.
pub(super) fn is_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// What to write instead of a bad id.
pub(super) const ID_RULE: &str =
    "use 1 to 64 lowercase letters, digits, \"-\" or \"_\", starting with a letter or digit";

/// `^[a-zA-Z_][a-zA-Z0-9_]*$`: input names (they appear in templates as `inputs.<name>`).
pub(super) fn is_input_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("tset", "test"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("tset", ["build", "test"]), Some("test"));
        assert_eq!(closest("zzz", ["build", "test"]), None);
        assert_eq!(
            closest("test", ["test"]),
            None,
            "an exact match is not a suggestion"
        );
        assert_eq!(closest("str", ["string", "number"]), Some("string"));
        assert_eq!(
            closest("st", ["string"]),
            None,
            "too short to be an abbreviation"
        );
    }

    #[test]
    fn humanizes_serde_messages() {
        assert_eq!(
            humanize("invalid type: string \"x\", expected u32"),
            "expected a whole number of 0 or more, found string \"x\""
        );
        assert_eq!(
            humanize("invalid value: integer `-1`, expected u32"),
            "expected a whole number of 0 or more, found integer -1"
        );
        assert_eq!(
            humanize("invalid type: map, expected a sequence"),
            "expected a list, found a mapping"
        );
        assert_eq!(
            humanize("unknown variant `sucess`, expected one of `success`, `failure`, `always`"),
            "\"sucess\" is not one of success, failure, always; did you mean \"success\"?"
        );
        assert_eq!(
            humanize("invalid value: integer `70000`, expected u16"),
            "expected a whole number from 0 to 65535, found integer 70000"
        );
        assert_eq!(humanize("something else"), "something else");
    }

    #[test]
    fn id_and_input_name_rules() {
        for ok in ["a", "0", "build-2", "a_b", &"a".repeat(64)] {
            assert!(is_id(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "_a", "a b", "a.b", "é", &"a".repeat(65)] {
            assert!(!is_id(bad), "{bad}");
        }
        for ok in ["a", "A", "_x", "issue_2"] {
            assert!(is_input_name(ok), "{ok}");
        }
        for bad in ["", "2a", "a-b", "a.b"] {
            assert!(!is_input_name(bad), "{bad}");
        }
    }
}
