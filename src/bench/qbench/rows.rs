//! Rows of the table. A `Measured` is what one child process run found (cached as is); a `Row`
//! is the reported line, derived from it and from the F16 row of the same model, device and
//! engine (agreement, deltas, KLD ratios), so metrics can change without re-measuring.

use super::config::{Device, Kind, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, ECE_BINS, SAMPLE_SEED};
use super::envelope::Verdict;
use super::metrics::{self, DeltaCi};
use serde::{Deserialize, Serialize};

/// The raw result of measuring one configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measured {
    pub key: String,
    pub model: String,
    pub engine: String,
    pub format: String,
    pub device: Option<Device>,
    pub threads: usize,
    pub file_bytes: u64,
    pub bpw: Option<f64>,
    pub load_ms: Option<f64>,
    /// Peak resident memory on CPU, peak VRAM held on GPU.
    pub peak_mib: Option<f64>,
    pub ms_per_example: Option<f64>,
    #[serde(default)]
    pub test_logits: Vec<Vec<f32>>,
    #[serde(default)]
    pub val_logits: Vec<Vec<f32>>,
    pub pp_tps: Option<f64>,
    pub tg_tps: Option<f64>,
    pub ppl: Option<f64>,
    pub kld_mean: Option<f64>,
    pub kld_p99: Option<f64>,
    /// Percent of positions whose top token equals F16's.
    pub top1_pct: Option<f64>,
    /// Why a part was not measured (missing text, format the engine cannot read...).
    pub note: Option<String>,
    pub error: Option<String>,
}

/// Accuracy change on one tier (or all examples) against F16.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TierDelta {
    pub tier: String,
    pub ci: DeltaCi,
    pub flips: usize,
}

/// One reported line.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Row {
    pub model: String,
    pub kind: Option<Kind>,
    pub engine: String,
    pub format: String,
    pub device: String,
    pub threads: Option<usize>,
    pub file_mib: Option<f64>,
    pub bpw: Option<f64>,
    pub load_ms: Option<f64>,
    pub ms_per_example: Option<f64>,
    pub pp_tps: Option<f64>,
    pub tg_tps: Option<f64>,
    /// RSS on CPU, VRAM on GPU.
    pub peak_mib: Option<f64>,
    pub n_test: Option<usize>,
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub agree: Option<f64>,
    pub flips: Option<usize>,
    pub ece: Option<f64>,
    pub ece_ts: Option<f64>,
    pub temperature: Option<f64>,
    pub delta: Option<DeltaCi>,
    #[serde(default)]
    pub tiers: Vec<TierDelta>,
    pub ppl: Option<f64>,
    pub ppl_ratio: Option<f64>,
    pub kld_mean: Option<f64>,
    pub kld_p99: Option<f64>,
    pub top1: Option<f64>,
    #[serde(default)]
    pub synthetic: bool,
    pub note: Option<String>,
    pub error: Option<String>,
    pub envelope: Option<Verdict>,
}

impl Row {
    /// Latency in ms of the unit users wait for: one example (classifiers), one generated token
    /// (LMs).
    pub fn latency_ms(&self) -> Option<f64> {
        match self.kind {
            Some(Kind::Lm) => self.tg_tps.filter(|t| *t > 0.0).map(|t| 1000.0 / t),
            _ => self.ms_per_example,
        }
    }
}

/// Gold labels and tiers of the examples a classifier row saw.
pub struct Gold<'a> {
    pub test: &'a [usize],
    pub tiers: &'a [Option<String>],
    pub val: &'a [usize],
}

const MIB: f64 = (1u64 << 20) as f64;

fn base_row(m: &Measured, kind: Kind, synthetic: bool, note: Option<String>) -> Row {
    let mut notes: Vec<String> = note.into_iter().chain(m.note.clone()).collect();
    if synthetic {
        notes.push("random weights: only agreement with F16 means anything".into());
    }
    Row {
        model: m.model.clone(),
        kind: Some(kind),
        engine: m.engine.clone(),
        format: m.format.clone(),
        device: m.device.map_or("?", Device::name).to_string(),
        threads: Some(m.threads),
        file_mib: (m.file_bytes > 0).then(|| m.file_bytes as f64 / MIB),
        bpw: m.bpw,
        load_ms: m.load_ms,
        ms_per_example: m.ms_per_example,
        pp_tps: m.pp_tps,
        tg_tps: m.tg_tps,
        peak_mib: m.peak_mib,
        synthetic,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        error: m.error.clone(),
        ..Row::default()
    }
}

fn preds(logits: &[Vec<f32>]) -> Vec<usize> {
    logits.iter().map(|l| metrics::argmax(l)).collect()
}

/// A classifier row: accuracy and F1 on the test sample, calibration on the validation sample's
/// second half with the temperature fitted on its first half, and the paired comparison with
/// F16 (`base`; `None` for the F16 row itself or when it failed).
pub fn classifier_row(
    m: &Measured,
    base: Option<&Measured>,
    gold: &Gold,
    synthetic: bool,
    note: Option<String>,
) -> Row {
    let mut r = base_row(m, Kind::Classifier, synthetic, note);
    if m.error.is_some() || m.test_logits.len() != gold.test.len() {
        return r;
    }
    let pred = preds(&m.test_logits);
    r.n_test = Some(pred.len());
    let base_pred = base
        .filter(|b| b.error.is_none() && b.test_logits.len() == gold.test.len())
        .map(|b| preds(&b.test_logits));
    if let Some(bp) = &base_pred {
        r.agree = Some(metrics::agreement(&pred, bp));
        r.flips = Some(metrics::flips(&pred, bp));
    }
    if synthetic {
        // Random weights: accuracy against real labels is noise; only agreement is kept.
        return r;
    }
    let n_classes = m.test_logits.first().map_or(0, Vec::len);
    let top_label = gold.test.iter().chain(gold.val).copied().max().unwrap_or(0);
    if top_label >= n_classes {
        r.error = Some(format!(
            "the model has {n_classes} classes, the dataset's labels go up to {top_label}: not this dataset's classifier"
        ));
        return r;
    }
    r.accuracy = Some(metrics::accuracy(&pred, gold.test));
    r.macro_f1 = Some(metrics::macro_f1(&pred, gold.test));
    if m.val_logits.len() == gold.val.len() && gold.val.len() >= 4 {
        let order = metrics::permutation(gold.val.len(), SAMPLE_SEED + 1);
        let (fit, eval) = order.split_at(gold.val.len() / 2);
        let pick = |idx: &[usize]| -> (Vec<Vec<f32>>, Vec<usize>) {
            idx.iter()
                .map(|&i| (m.val_logits[i].clone(), gold.val[i]))
                .unzip()
        };
        let (fl, fg) = pick(fit);
        let (el, eg) = pick(eval);
        let t = metrics::fit_temperature(&fl, &fg);
        r.temperature = Some(t);
        r.ece = Some(metrics::ece_logits(&el, &eg, 1.0, ECE_BINS));
        r.ece_ts = Some(metrics::ece_logits(&el, &eg, t, ECE_BINS));
    }
    if let (Some(bp), true) = (&base_pred, m.format != "F16" || m.engine != "qgguf") {
        let ok: Vec<bool> = pred.iter().zip(gold.test).map(|(p, g)| p == g).collect();
        let base_ok: Vec<bool> = bp.iter().zip(gold.test).map(|(p, g)| p == g).collect();
        r.delta = metrics::paired_bootstrap(&base_ok, &ok, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED);
        let mut tiers: Vec<String> = gold.tiers.iter().flatten().cloned().collect();
        tiers.sort();
        tiers.dedup();
        // head, mid, tail in that order when those are the names.
        let rank = |t: &str| ["head", "mid", "tail"].iter().position(|x| *x == t);
        tiers.sort_by_key(|t| (rank(t).unwrap_or(9), t.clone()));
        for t in tiers {
            let idx: Vec<usize> = (0..pred.len())
                .filter(|&i| gold.tiers[i].as_deref() == Some(t.as_str()))
                .collect();
            let a: Vec<bool> = idx.iter().map(|&i| base_ok[i]).collect();
            let b: Vec<bool> = idx.iter().map(|&i| ok[i]).collect();
            if let Some(ci) = metrics::paired_bootstrap(&a, &b, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
            {
                let flips = idx.iter().filter(|&&i| pred[i] != bp[i]).count();
                r.tiers.push(TierDelta { tier: t, ci, flips });
            }
        }
    }
    r
}

/// An LM row: speed, perplexity, and KLD / top-1 agreement against F16's log-probabilities.
pub fn lm_row(m: &Measured, base: Option<&Measured>, note: Option<String>) -> Row {
    let mut r = base_row(m, Kind::Lm, false, note);
    r.ppl = m.ppl;
    r.kld_mean = m.kld_mean;
    r.kld_p99 = m.kld_p99;
    r.top1 = m.top1_pct.map(|p| p / 100.0);
    if let (Some(p), Some(b)) = (m.ppl, base.and_then(|b| b.ppl)) {
        r.ppl_ratio = Some(p / b);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits_for(pred: &[usize], n: usize) -> Vec<Vec<f32>> {
        pred.iter()
            .map(|&p| (0..n).map(|c| if c == p { 3.0 } else { 0.0 }).collect())
            .collect()
    }

    #[test]
    fn classifier_row_against_f16() {
        let gold = [0, 1, 2, 0, 1, 2, 0, 1];
        let tiers: Vec<Option<String>> =
            ["head", "head", "tail", "head", "mid", "tail", "mid", "head"]
                .iter()
                .map(|s| Some(s.to_string()))
                .collect();
        let base = Measured {
            model: "m".into(),
            engine: "qgguf".into(),
            format: "F16".into(),
            test_logits: logits_for(&gold, 3),
            val_logits: logits_for(&gold, 3),
            ..Measured::default()
        };
        // One flip on a tail example (2 -> 0).
        let mut q = base.clone();
        q.format = "Q4_K_M".into();
        let mut p = gold.to_vec();
        p[2] = 0;
        q.test_logits = logits_for(&p, 3);
        let g = Gold {
            test: &gold,
            tiers: &tiers,
            val: &gold,
        };
        let r = classifier_row(&q, Some(&base), &g, false, None);
        assert_eq!(r.accuracy, Some(7.0 / 8.0));
        assert_eq!(r.flips, Some(1));
        assert_eq!(r.agree, Some(7.0 / 8.0));
        assert_eq!(r.delta.unwrap().delta, -1.0 / 8.0);
        let names: Vec<&str> = r.tiers.iter().map(|t| t.tier.as_str()).collect();
        assert_eq!(names, ["head", "mid", "tail"]);
        assert_eq!(r.tiers[2].ci.delta, -0.5);
        assert_eq!(r.tiers[2].flips, 1);
        assert!(r.ece.is_some() && r.temperature.is_some());
        // The F16 row has no delta; a synthetic row keeps only agreement.
        let f = classifier_row(&base, Some(&base), &g, false, None);
        assert!(f.delta.is_none() && f.agree == Some(1.0));
        let s = classifier_row(&q, Some(&base), &g, true, None);
        assert!(s.accuracy.is_none() && s.macro_f1.is_none() && s.agree.is_some());
    }
}
