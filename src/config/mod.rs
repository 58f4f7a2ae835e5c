//! User-facing TOML files, validated once at the edge.
//!
//! - [`workload`]: what to compute (inputs, output expressions).
//!
//! Every error here is a bad-input error (exit code 2) that quotes the offending value
//! and says how to fix it.

pub mod site;
pub mod taskgraph;
pub mod taskjob;
pub mod workload;

use std::path::Path;

/// Turn a TOML deserialization error into one line with the file, line and column.
pub(crate) fn toml_error_line(path: &Path, text: &str, err: &toml::de::Error) -> String {
    let msg = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let upto = &text[..span.start.min(text.len())];
            let line = upto.matches('\n').count() + 1;
            let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            // Name the key of a `key = value` line, serde's messages do not.
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-'))
                .map(|k| format!(" (key \"{k}\")"))
                .unwrap_or_default();
            format!("{}: line {line}, column {col}{key}: {msg}", path.display())
        }
        None => format!("{}: {msg}", path.display()),
    }
}

/// The closest candidate to `word` by edit distance, if it is close enough.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= c.len().max(word.len()).div_ceil(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("fiel", ["file", "dataset", "chunks"]), Some("file"));
        assert_eq!(did_you_mean("meen", ["mean", "min"]), Some("mean"));
        assert_eq!(did_you_mean("zzzzzz", ["mean", "min"]), None);
    }
}
