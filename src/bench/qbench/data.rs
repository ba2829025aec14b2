//! Labelled datasets of the classifier rows: `DIR/{test,val}.jsonl` with lines
//! `{"text": str, "label": int, "tier": "head"|"mid"|"tail"}` (tier optional) and
//! `DIR/labels.json` (label names, index = id), as tools/fetch-data.sh writes them.

use super::metrics::permutation;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: usize,
    pub tier: Option<String>,
}

/// Reads a split, checking every line.
pub fn read_split(path: &Path) -> Result<Vec<Example>> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let at = || format!("{}: line {}", path.display(), i + 1);
        let line = line.with_context(at)?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).with_context(at)?;
        let text = v
            .get("text")
            .and_then(|t| t.as_str())
            .with_context(|| format!("{}: no \"text\" string", at()))?;
        let label = v
            .get("label")
            .and_then(|t| t.as_u64())
            .with_context(|| format!("{}: no non-negative integer \"label\"", at()))?;
        let tier = v.get("tier").and_then(|t| t.as_str()).map(str::to_string);
        out.push(Example {
            text: text.to_string(),
            label: label as usize,
            tier,
        });
    }
    if out.is_empty() {
        bail!("{}: no examples", path.display());
    }
    Ok(out)
}

/// Label names from `labels.json` (a list of strings).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let s = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&s)
        .with_context(|| format!("{}: not a JSON list of label names", path.display()))
}

/// At most `n` examples, a seeded sample kept in file order (so a quick run still spans every
/// tier when the file is sorted by label).
pub fn sample(ex: Vec<Example>, n: usize, seed: u64) -> Vec<Example> {
    if ex.len() <= n {
        return ex;
    }
    let mut keep: Vec<usize> = permutation(ex.len(), seed).into_iter().take(n).collect();
    keep.sort_unstable();
    let mut it = keep.into_iter().peekable();
    ex.into_iter()
        .enumerate()
        .filter(|(i, _)| it.next_if_eq(i).is_some())
        .map(|(_, e)| e)
        .collect()
}

/// Writes the texts as qrun's --input JSONL.
pub fn write_texts(ex: &[Example], path: &Path) -> Result<()> {
    let mut s = Vec::new();
    for e in ex {
        writeln!(s, "{}", serde_json::json!({ "text": e.text }))?;
    }
    super::write_atomic(path, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_keeps_order_and_size() {
        let ex: Vec<Example> = (0..100)
            .map(|i| Example {
                text: i.to_string(),
                label: i,
                tier: None,
            })
            .collect();
        let s = sample(ex.clone(), 10, 1);
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0].label < w[1].label));
        assert_eq!(sample(ex.clone(), 1000, 1).len(), 100);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("test.jsonl");
        std::fs::write(&p, "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\"}\n").unwrap();
        let e = format!("{:#}", read_split(&p).unwrap_err());
        assert!(
            e.contains("test.jsonl: line 2") && e.contains("label"),
            "{e}"
        );
    }
}
