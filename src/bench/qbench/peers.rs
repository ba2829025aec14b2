//! Peers in the same table: llama.cpp's own tools on the same GGUF files (`LLAMA_CPP_BIN`), and
//! rows measured elsewhere (`--peer-rows FILE.jsonl`, e.g. tools/gpu_hf_speed.py's HF
//! transformers / bitsandbytes rows).

use super::cache::file_identity;
use super::config::{Device, Kind, Settings};
use super::rows::{Measured, Row};
use super::runner::run_child;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct LlamaCpp {
    bench: PathBuf,
    perplexity: PathBuf,
}

/// Runs a child to completion while sampling its `VmHWM` (peak resident memory) from /proc, for
/// tools that do not report their own. The high-water mark only grows, so the last sample before
/// exit misses at most the last 50 ms of growth.
pub fn run_sampled(cmd: &mut Command, what: &str) -> Result<(String, String, Option<f64>)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut out = child.stdout.take().context("child stdout")?;
    let mut err = child.stderr.take().context("child stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut peak: Option<f64> = None;
    let status = loop {
        if let Some(hwm) = std::fs::read_to_string(&status_path)
            .ok()
            .and_then(|s| crate::bench::parse_vm_hwm(&s))
        {
            peak = Some(peak.map_or(hwm, |p: f64| p.max(hwm)));
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        bail!("{what}: {} ({status})", tail.join(" / "));
    }
    Ok((stdout, stderr, peak))
}

/// llama-bench's `-o json`: (pp tokens/s, tg tokens/s, load-free).
pub fn parse_llama_bench(json: &str) -> Result<(Option<f64>, Option<f64>)> {
    let v: Value = serde_json::from_str(json.trim()).context("llama-bench: output is not JSON")?;
    let arr = v
        .as_array()
        .context("llama-bench: output is not a JSON list")?;
    let mut pp = None;
    let mut tg = None;
    for t in arr {
        let np = t.get("n_prompt").and_then(Value::as_u64).unwrap_or(0);
        let ng = t.get("n_gen").and_then(Value::as_u64).unwrap_or(0);
        let ts = t.get("avg_ts").and_then(Value::as_f64);
        if np > 0 && ng == 0 {
            pp = ts;
        } else if ng > 0 && np == 0 {
            tg = ts;
        }
    }
    Ok((pp, tg))
}

/// The numbers llama-perplexity prints (log on stderr): PPL, mean and 99% KLD, same top p.
pub fn parse_llama_perplexity(log: &str) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
    let num = |prefix: &str| -> Option<f64> {
        log.lines().find_map(|l| {
            let rest = l.trim_start().strip_prefix(prefix)?;
            let rest = rest.trim_start_matches([' ', ':']);
            rest.split_whitespace()
                .next()?
                .trim_end_matches('%')
                .parse()
                .ok()
        })
    };
    let ppl = num("Mean PPL(Q)").or_else(|| {
        log.lines().find_map(|l| {
            l.split("Final estimate: PPL = ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    });
    (
        ppl,
        num("Mean    KLD"),
        num("99.0%   KLD"),
        num("Same top p"),
    )
}

impl LlamaCpp {
    pub fn locate(dir: &Path) -> Result<LlamaCpp> {
        let l = LlamaCpp {
            bench: dir.join("llama-bench"),
            perplexity: dir.join("llama-perplexity"),
        };
        for b in [&l.bench, &l.perplexity] {
            if !b.is_file() {
                bail!("{} not found (LLAMA_CPP_BIN)", b.display());
            }
        }
        Ok(l)
    }

    pub fn identity(&self) -> String {
        format!(
            "{}|{}",
            file_identity(&self.bench),
            file_identity(&self.perplexity)
        )
    }

    /// llama.cpp's speed and perplexity rows on the same file; KLD against qgguf's F16
    /// log-probabilities (the same file format).
    #[allow(clippy::too_many_arguments)]
    pub fn measure(
        &self,
        key: &str,
        model: &str,
        format: &str,
        gguf: &Path,
        device: Device,
        threads: usize,
        s: &Settings,
        text: Option<&Path>,
        base: Option<&Path>,
    ) -> Measured {
        let mut m = Measured {
            key: key.to_string(),
            model: model.to_string(),
            engine: "llama.cpp".into(),
            format: format.to_string(),
            device: Some(device),
            threads,
            file_bytes: std::fs::metadata(gguf).map_or(0, |m| m.len()),
            bpw: super::runner::bits_per_weight(gguf),
            ..Measured::default()
        };
        if format == "NF4" {
            m.error = Some("llama.cpp cannot read NF4 (qgguf's extension type)".into());
            return m;
        }
        if let Err(e) = self.run(&mut m, gguf, device, threads, s, text, base) {
            m.error = Some(format!("{e:#}"));
        }
        m
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        m: &mut Measured,
        gguf: &Path,
        device: Device,
        threads: usize,
        s: &Settings,
        text: Option<&Path>,
        base: Option<&Path>,
    ) -> Result<()> {
        let ngl = if device == Device::Gpu { "99" } else { "0" };
        let mut cmd = Command::new(&self.bench);
        cmd.arg("-m").arg(gguf).args([
            "-p",
            &s.n_prompt.to_string(),
            "-n",
            &s.n_gen.to_string(),
            "-r",
            &s.reps.to_string(),
            "-t",
            &threads.to_string(),
            "-ngl",
            ngl,
            "-o",
            "json",
        ]);
        let (stdout, _, peak) = run_sampled(&mut cmd, "llama-bench")?;
        let (pp, tg) = parse_llama_bench(&stdout)?;
        m.pp_tps = pp;
        m.tg_tps = tg;
        if device == Device::Cpu {
            m.peak_mib = peak;
        } else {
            m.note = Some("llama.cpp VRAM not measured".into());
        }
        let Some(text) = text else { return Ok(()) };
        let mut cmd = Command::new(&self.perplexity);
        cmd.arg("-m").arg(gguf).arg("-f").arg(text).args([
            "-c",
            &s.ppl_ctx.to_string(),
            "--chunks",
            &s.ppl_chunks.to_string(),
            "-t",
            &threads.to_string(),
            "-ngl",
            ngl,
        ]);
        if let Some(b) = base {
            cmd.arg("--kl-divergence-base")
                .arg(b)
                .arg("--kl-divergence");
        }
        let (stdout, stderr) = run_child(&mut cmd, "llama-perplexity")?;
        let (ppl, kld, k99, top) = parse_llama_perplexity(&format!("{stdout}\n{stderr}"));
        m.ppl = ppl;
        m.kld_mean = kld;
        m.kld_p99 = k99;
        m.top1_pct = top;
        Ok(())
    }
}

/// Rows from a JSONL file: qbench's own row objects, or tools/gpu_hf_speed.py's lines
/// (`peer`, `precision`, `kind` decoder|encoder, `load_s`, `pp512_tps`, `tg128_tps`,
/// `ms_per_example`, `vram_peak_mib`, `error`), which are GPU rows.
pub fn import_rows(path: &Path) -> Result<Vec<Row>> {
    let s = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut rows = Vec::new();
    for (i, line) in s.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}: line {}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).with_context(at)?;
        if v.get("precision").is_some() {
            rows.push(hf_row(&v, path).with_context(at)?);
        } else {
            let mut r: Row = serde_json::from_value(v).with_context(at)?;
            r.note
                .get_or_insert_with(|| format!("imported from {}", path.display()));
            rows.push(r);
        }
    }
    Ok(rows)
}

fn hf_row(v: &Value, path: &Path) -> Result<Row> {
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let kind = match v.get("kind").and_then(Value::as_str) {
        Some("decoder") => Kind::Lm,
        Some("encoder") => Kind::Classifier,
        other => bail!("\"kind\" is {other:?}, not decoder or encoder"),
    };
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            match kind {
                Kind::Lm => "decoder (HF)",
                Kind::Classifier => "encoder (HF)",
            }
            .to_string()
        });
    let error = v.get("error").map(|e| match e {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    });
    Ok(Row {
        model,
        kind: Some(kind),
        engine: v
            .get("peer")
            .and_then(Value::as_str)
            .unwrap_or("transformers")
            .to_string(),
        format: v
            .get("precision")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        device: "gpu".into(),
        load_ms: f("load_s").map(|s| s * 1000.0),
        ms_per_example: f("ms_per_example"),
        pp_tps: f("pp512_tps"),
        tg_tps: f("tg128_tps"),
        peak_mib: f("vram_peak_mib"),
        note: Some(format!(
            "imported from {} (tools/gpu_hf_speed.py: synthetic checkpoints, speed and memory only)",
            path.display()
        )),
        error,
        ..Row::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_outputs_parse() {
        let j = r#"[{"n_prompt":512,"n_gen":0,"avg_ts":100.5},{"n_prompt":0,"n_gen":128,"avg_ts":20.25}]"#;
        assert_eq!(parse_llama_bench(j).unwrap(), (Some(100.5), Some(20.25)));
        let log = "Final estimate: PPL = 12.3456 +/- 0.1\n====== KL divergence\n\
                   Mean PPL(Q)                   :  12.345600 ±   0.100000\n\
                   Mean    KLD:   0.012345 ±   0.000100\n\
                   99.0%   KLD:   0.150000\n\
                   Same top p:  97.500 ±  0.300 %\n";
        assert_eq!(
            parse_llama_perplexity(log),
            (Some(12.3456), Some(0.012345), Some(0.15), Some(97.5))
        );
    }

    #[test]
    fn hf_rows_import() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hf.jsonl");
        std::fs::write(
            &p,
            "{\"peer\":\"transformers\",\"precision\":\"nf4\",\"kind\":\"decoder\",\"load_s\":1.5,\"pp512_tps\":900.0,\"tg128_tps\":30.0,\"vram_peak_mib\":700.0}\n\
             {\"peer\":\"transformers\",\"precision\":\"int8\",\"kind\":\"encoder\",\"error\":[\"OOM\"]}\n",
        )
        .unwrap();
        let r = import_rows(&p).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].kind, r[0].format.as_str()), (Some(Kind::Lm), "nf4"));
        assert_eq!((r[0].load_ms, r[0].peak_mib), (Some(1500.0), Some(700.0)));
        assert_eq!(r[1].error.as_deref(), Some("OOM"));
        std::fs::write(&p, "{\"precision\":\"fp16\",\"kind\":\"gpu\"}\n").unwrap();
        let e = format!("{:#}", import_rows(&p).unwrap_err());
        assert!(e.contains("hf.jsonl: line 1") && e.contains("kind"), "{e}");
    }
}
