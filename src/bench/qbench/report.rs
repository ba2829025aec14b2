//! The table as Markdown (one table for classifiers, one for LMs), CSV and JSON, and the
//! envelope memo.

use super::config::Kind;
use super::envelope::Envelope;
use super::rows::Row;
use anyhow::Result;
use serde_json::json;
use std::fmt::Write as _;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.1}", 100.0 * x))
}

/// Signed percentage points, e.g. "-1.2".
fn pp(x: f64) -> String {
    format!("{:+.1}", 100.0 * x)
}

fn engine_cell(r: &Row) -> String {
    if r.engine == "qgguf" {
        r.format.clone()
    } else {
        format!("{} ({})", r.format, r.engine)
    }
}

fn device_cell(r: &Row) -> String {
    match r.threads {
        Some(t) if r.device == "cpu" => format!("cpu ×{t}"),
        _ => r.device.clone(),
    }
}

fn status_cell(r: &Row) -> String {
    let mut s = Vec::new();
    if let Some(e) = &r.error {
        s.push(format!("error: {}", e.chars().take(80).collect::<String>()));
    }
    if let Some(n) = &r.note {
        s.push(n.clone());
    }
    s.join("; ").replace('|', "/")
}

/// The Markdown tables (only those with rows).
pub fn markdown(rows: &[Row], envelope: Option<&Envelope>) -> String {
    let mut out = String::new();
    let env = envelope.is_some();
    let cls: Vec<&Row> = rows.iter().filter(|r| r.kind != Some(Kind::Lm)).collect();
    let lms: Vec<&Row> = rows.iter().filter(|r| r.kind == Some(Kind::Lm)).collect();
    if !cls.is_empty() {
        out.push_str(
            "Classifiers: ms per example at batch 32 (texts cut to 128 tokens); memory = peak RSS (cpu) or VRAM (gpu); \
             acc, F1, agreement with F16 in %; ECE on half the validation set before / after temperature scaling fit on the other half; \
             Δacc vs F16 in points with paired-bootstrap 95% CI; flips = predictions that differ from F16's.\n\n",
        );
        out.push_str("| model | format | device | MiB | bpw | ms/ex | mem MiB | acc | F1 | agree | flips | ECE → T-scaled | Δacc [95% CI] | Δ head / mid / tail |");
        if env {
            out.push_str(" envelope |");
        }
        out.push_str(" notes |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|");
        if env {
            out.push_str("---|");
        }
        out.push_str("---|\n");
        for r in &cls {
            let ece = match (r.ece, r.ece_ts) {
                (Some(a), Some(b)) => format!("{a:.3} → {b:.3}"),
                _ => "–".into(),
            };
            let delta = r.delta.map_or("–".into(), |d| {
                format!("{} [{}, {}]", pp(d.delta), pp(d.lo), pp(d.hi))
            });
            let tiers = if r.tiers.is_empty() {
                "–".into()
            } else {
                r.tiers
                    .iter()
                    .map(|t| pp(t.ci.delta))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let (acc, f1) = if r.synthetic {
                ("synthetic".to_string(), "synthetic".to_string())
            } else {
                (pct(r.accuracy), pct(r.macro_f1))
            };
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.model,
                engine_cell(r),
                device_cell(r),
                opt(r.file_mib, 1),
                opt(r.bpw, 2),
                opt(r.ms_per_example, 2),
                opt(r.peak_mib, 0),
                acc,
                f1,
                pct(r.agree),
                r.flips.map_or("–".into(), |f| f.to_string()),
                ece,
                delta,
                tiers
            );
            if env {
                let _ = write!(out, " {} |", r.envelope.as_ref().map_or("–", |v| v.cell()));
            }
            let _ = writeln!(out, " {} |", status_cell(r));
        }
        out.push('\n');
    }
    if !lms.is_empty() {
        out.push_str(
            "LMs: pp / tg in tokens/s (llama-bench's tests); memory = peak RSS (cpu) or VRAM (gpu) of the speed run; \
             perplexity and KLD vs F16 (llama-perplexity's method); top-1 = % of positions whose top token equals F16's.\n\n",
        );
        let _ = write!(
            out,
            "| model | format | device | MiB | bpw | load ms | pp tok/s | tg tok/s | mem MiB | PPL | PPL ratio | KLD mean | KLD p99 | top-1 |"
        );
        if env {
            out.push_str(" envelope |");
        }
        out.push_str(
            " notes |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        );
        if env {
            out.push_str("---|");
        }
        out.push_str("---|\n");
        for r in &lms {
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.model,
                engine_cell(r),
                device_cell(r),
                opt(r.file_mib, 1),
                opt(r.bpw, 2),
                opt(r.load_ms, 0),
                opt(r.pp_tps, 1),
                opt(r.tg_tps, 1),
                opt(r.peak_mib, 0),
                opt(r.ppl, 3),
                opt(r.ppl_ratio, 4),
                opt(r.kld_mean, 5),
                opt(r.kld_p99, 4),
                pct(r.top1)
            );
            if env {
                let _ = write!(out, " {} |", r.envelope.as_ref().map_or("–", |v| v.cell()));
            }
            let _ = writeln!(out, " {} |", status_cell(r));
        }
        out.push('\n');
    }
    if let Some(e) = envelope {
        out.push_str(&memo(rows, e));
    }
    out
}

/// The deployment memo: the envelope, and per model which configurations meet it.
pub fn memo(rows: &[Row], e: &Envelope) -> String {
    let mut out = String::from("Envelope: ");
    out.push_str(
        &e.constraints
            .iter()
            .map(|c| format!("{}={}", c.key, c.limit))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.push_str("\n\n");
    let mut models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    let mut seen = Vec::new();
    for m in models {
        if seen.contains(&m) {
            continue;
        }
        seen.push(m);
        let of: Vec<&Row> = rows.iter().filter(|r| r.model == m).collect();
        let label = |r: &Row| format!("{} {}", engine_cell(r), device_cell(r));
        let pass: Vec<String> = of
            .iter()
            .filter(|r| r.envelope.as_ref().is_some_and(|v| v.pass))
            .map(|r| {
                let v = r.envelope.as_ref().unwrap();
                if v.unchecked.is_empty() {
                    label(r)
                } else {
                    format!("{} (unchecked: {})", label(r), v.unchecked.join(", "))
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "- **{m}**: {}",
            if pass.is_empty() {
                "no configuration meets every constraint".to_string()
            } else {
                format!("meets it: {}", pass.join("; "))
            }
        );
        for r in of
            .iter()
            .filter(|r| r.envelope.as_ref().is_some_and(|v| !v.pass))
        {
            let _ = writeln!(
                out,
                "  - {}: fails {}",
                label(r),
                r.envelope.as_ref().unwrap().failed.join(", ")
            );
        }
    }
    out
}

const CSV_HEADER: [&str; 38] = [
    "model",
    "kind",
    "engine",
    "format",
    "device",
    "threads",
    "file_mib",
    "bpw",
    "load_ms",
    "ms_per_example",
    "pp_tps",
    "tg_tps",
    "peak_mib",
    "n_test",
    "accuracy",
    "macro_f1",
    "agree_f16",
    "flips",
    "ece",
    "ece_ts",
    "temperature",
    "delta_acc",
    "delta_lo",
    "delta_hi",
    "delta_head",
    "delta_mid",
    "delta_tail",
    "ppl",
    "ppl_ratio",
    "kld_mean",
    "kld_p99",
    "top1_agree",
    "synthetic",
    "envelope_pass",
    "envelope_failed",
    "note",
    "error",
    "tiers_json",
];

pub fn csv(rows: &[Row]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    let f = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
    for r in rows {
        let tier = |name: &str| f(r.tiers.iter().find(|t| t.tier == name).map(|t| t.ci.delta));
        let kind = match r.kind {
            Some(Kind::Lm) => "lm",
            _ => "classifier",
        };
        let rec: Vec<String> = vec![
            r.model.clone(),
            kind.into(),
            r.engine.clone(),
            r.format.clone(),
            r.device.clone(),
            r.threads.map_or(String::new(), |t| t.to_string()),
            f(r.file_mib),
            f(r.bpw),
            f(r.load_ms),
            f(r.ms_per_example),
            f(r.pp_tps),
            f(r.tg_tps),
            f(r.peak_mib),
            r.n_test.map_or(String::new(), |t| t.to_string()),
            f(r.accuracy),
            f(r.macro_f1),
            f(r.agree),
            r.flips.map_or(String::new(), |t| t.to_string()),
            f(r.ece),
            f(r.ece_ts),
            f(r.temperature),
            f(r.delta.map(|d| d.delta)),
            f(r.delta.map(|d| d.lo)),
            f(r.delta.map(|d| d.hi)),
            tier("head"),
            tier("mid"),
            tier("tail"),
            f(r.ppl),
            f(r.ppl_ratio),
            f(r.kld_mean),
            f(r.kld_p99),
            f(r.top1),
            r.synthetic.to_string(),
            r.envelope
                .as_ref()
                .map_or(String::new(), |v| v.pass.to_string()),
            r.envelope
                .as_ref()
                .map_or(String::new(), |v| v.failed.join("; ")),
            r.note.clone().unwrap_or_default(),
            r.error.clone().unwrap_or_default(),
            if r.tiers.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&r.tiers)?
            },
        ];
        w.write_record(&rec)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn json(rows: &[Row], envelope: Option<&Envelope>, meta: serde_json::Value) -> Result<Vec<u8>> {
    let doc = json!({
        "meta": meta,
        "envelope": envelope,
        "rows": rows,
    });
    serde_json::to_vec_pretty(&doc).map_err(Into::into)
}
