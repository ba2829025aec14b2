//! The deployment envelope (`--envelope max_ms=10,min_f1=0.2,max_ece=0.05`): constraints every
//! acceptable configuration must meet, as the course's deployment memo states them. Each row
//! gets a verdict: pass, fail (naming the constraints it breaks) or pass with constraints that
//! could not be checked (the metric does not exist for that row, e.g. F1 of a synthetic model).

use super::config::Kind;
use super::rows::Row;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The known constraint names, their meaning, and which kind of model they apply to.
pub const KEYS: [(&str, &str); 16] = [
    (
        "max_ms",
        "latency ms: per example (classifiers), per generated token (LMs)",
    ),
    ("max_mib", "peak memory MiB (RSS on CPU, VRAM on GPU)"),
    ("max_file_mib", "file size MiB"),
    ("max_bpw", "bits per weight"),
    ("min_acc", "accuracy (fraction)"),
    ("min_f1", "macro F1 (fraction)"),
    ("min_agree", "agreement with F16 (fraction)"),
    ("max_flips", "predictions that differ from F16's"),
    ("max_ece", "ECE before temperature scaling"),
    ("max_ece_ts", "ECE after temperature scaling"),
    (
        "min_delta_acc",
        "accuracy minus F16's (fraction; e.g. -0.01)",
    ),
    ("max_ppl_ratio", "perplexity / F16's"),
    ("max_kld", "mean KL divergence from F16"),
    ("max_kld99", "99th percentile KL divergence from F16"),
    ("min_top1", "top-1 agreement with F16 (fraction)"),
    ("min_tg_tps", "generation tokens/s"),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub key: String,
    pub limit: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub constraints: Vec<Constraint>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    /// Constraints broken, as `key: value > limit`.
    pub failed: Vec<String>,
    /// Constraints with no value for this row.
    pub unchecked: Vec<String>,
}

impl Verdict {
    /// The table cell: yes, yes* (some constraints unchecked), no.
    pub fn cell(&self) -> &'static str {
        match (self.pass, self.unchecked.is_empty()) {
            (false, _) => "no",
            (true, true) => "yes",
            (true, false) => "yes*",
        }
    }
}

impl Envelope {
    /// Parses `key=value,key=value`.
    pub fn parse(s: &str) -> Result<Envelope> {
        let mut constraints: Vec<Constraint> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .with_context(|| format!("--envelope: '{part}' is not KEY=VALUE"))?;
            let k = k.trim();
            if !KEYS.iter().any(|(name, _)| *name == k) {
                let names: Vec<&str> = KEYS.iter().map(|(n, _)| *n).collect();
                bail!(
                    "--envelope: unknown key '{k}' (known: {})",
                    names.join(", ")
                );
            }
            let limit: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .with_context(|| format!("--envelope: {k}: '{}' is not a number", v.trim()))?;
            if constraints.iter().any(|c| c.key == k) {
                bail!("--envelope: {k} given twice");
            }
            constraints.push(Constraint {
                key: k.to_string(),
                limit,
            });
        }
        if constraints.is_empty() {
            bail!("--envelope: no constraints (e.g. max_ms=10,min_f1=0.2)");
        }
        Ok(Envelope { constraints })
    }

    /// The row's value for a key; outer `None` when the key does not apply to this kind of
    /// model (not counted at all), inner `None` when it applies but was not measured.
    fn value(row: &Row, key: &str) -> Option<Option<f64>> {
        let cls = row.kind != Some(Kind::Lm);
        // The F16 row is the reference: it agrees with itself by definition.
        let reference = row.format == "F16" && row.engine == "qgguf";
        let v = match key {
            "min_agree" if reference && cls => Some(1.0),
            "max_flips" | "min_delta_acc" if reference && cls => Some(0.0),
            "min_top1" if reference && !cls => Some(1.0),
            "max_kld" | "max_kld99" if reference && !cls => Some(0.0),
            "max_ms" => row.latency_ms(),
            "max_mib" => row.peak_mib,
            "max_file_mib" => row.file_mib,
            "max_bpw" => row.bpw,
            "min_acc" if cls => row.accuracy,
            "min_f1" if cls => row.macro_f1,
            "min_agree" if cls => row.agree,
            "max_flips" if cls => row.flips.map(|f| f as f64),
            "max_ece" if cls => row.ece,
            "max_ece_ts" if cls => row.ece_ts,
            "min_delta_acc" if cls => row.delta.map(|d| d.delta),
            "max_ppl_ratio" if !cls => row.ppl_ratio,
            "max_kld" if !cls => row.kld_mean,
            "max_kld99" if !cls => row.kld_p99,
            "min_top1" if !cls => row.top1,
            "min_tg_tps" if !cls => row.tg_tps,
            _ => return None,
        };
        Some(v)
    }

    pub fn judge(&self, row: &Row) -> Verdict {
        let mut v = Verdict {
            pass: row.error.is_none(),
            ..Verdict::default()
        };
        if row.error.is_some() {
            v.failed.push("the row failed".into());
        }
        for c in &self.constraints {
            match Self::value(row, &c.key) {
                None => {}
                Some(None) => v.unchecked.push(c.key.clone()),
                Some(Some(x)) => {
                    let ok = if c.key.starts_with("max_") {
                        x <= c.limit
                    } else {
                        x >= c.limit
                    };
                    if !ok {
                        v.pass = false;
                        let op = if c.key.starts_with("max_") { ">" } else { "<" };
                        v.failed.push(format!("{}: {x:.4} {op} {}", c.key, c.limit));
                    }
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_clearly() {
        let e = Envelope::parse("max_ms=10, min_f1=0.2,max_ece=0.05").unwrap();
        assert_eq!(e.constraints.len(), 3);
        assert_eq!(e.constraints[1].key, "min_f1");
        assert_eq!(e.constraints[1].limit, 0.2);
        let err = |s: &str| Envelope::parse(s).unwrap_err().to_string();
        assert!(err("max_speed=3").contains("unknown key 'max_speed'"));
        assert!(err("max_ms").contains("not KEY=VALUE"));
        assert!(err("max_ms=fast").contains("not a number"));
        assert!(err("max_ms=nan").contains("not a number"));
        assert!(err("max_ms=1,max_ms=2").contains("twice"));
        assert!(err("").contains("no constraints"));
    }

    #[test]
    fn judges_rows() {
        let e = Envelope::parse("max_ms=10,min_f1=0.2,max_ece=0.05,max_kld=0.1").unwrap();
        let mut r = Row {
            kind: Some(Kind::Classifier),
            ms_per_example: Some(8.0),
            macro_f1: Some(0.3),
            ece: Some(0.04),
            ..Row::default()
        };
        let v = e.judge(&r);
        assert!(v.pass && v.unchecked.is_empty(), "{v:?}");
        assert_eq!(v.cell(), "yes");
        r.ms_per_example = Some(12.0);
        let v = e.judge(&r);
        assert!(!v.pass && v.failed[0].starts_with("max_ms"), "{v:?}");
        r.ms_per_example = Some(1.0);
        r.macro_f1 = None;
        let v = e.judge(&r);
        assert_eq!((v.pass, v.cell()), (true, "yes*"));
        assert_eq!(v.unchecked, ["min_f1"]);
        // LM: max_ms is per generated token (5 ms here); F1/ECE do not apply.
        let lm = Row {
            kind: Some(Kind::Lm),
            tg_tps: Some(200.0),
            kld_mean: Some(0.2),
            ..Row::default()
        };
        let v = e.judge(&lm);
        assert!(!v.pass && v.failed.len() == 1 && v.failed[0].starts_with("max_kld"));
        assert!(v.unchecked.is_empty());
    }
}
