//! Classification metrics of the qbench table: accuracy, macro F1, expected calibration error,
//! temperature scaling and a paired bootstrap of accuracy differences. Pure functions over
//! labels and logits, so they are tested against hand-computed values.

/// Fraction of `pred` equal to `gold` (0 when empty).
pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    let hits = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    hits as f64 / gold.len() as f64
}

/// Fraction of positions where two prediction lists agree.
pub fn agreement(a: &[usize], b: &[usize]) -> f64 {
    accuracy(a, b)
}

/// Number of positions where two prediction lists differ.
pub fn flips(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// Macro-averaged F1 over the classes that occur in `gold` or `pred` (scikit-learn's
/// `f1_score(average="macro")`): a class never seen and never predicted says nothing about the
/// model, and with 113 classes a test split rarely holds every one. A class with no true
/// positive scores 0.
pub fn macro_f1(pred: &[usize], gold: &[usize]) -> f64 {
    let n = pred.iter().chain(gold).copied().max().map_or(0, |m| m + 1);
    let (mut tp, mut fp, mut fneg) = (vec![0usize; n], vec![0usize; n], vec![0usize; n]);
    for (&p, &g) in pred.iter().zip(gold) {
        if p == g {
            tp[p] += 1;
        } else {
            fp[p] += 1;
            fneg[g] += 1;
        }
    }
    let mut sum = 0.0;
    let mut classes = 0usize;
    for c in 0..n {
        if tp[c] + fp[c] + fneg[c] == 0 {
            continue;
        }
        classes += 1;
        let denom = 2 * tp[c] + fp[c] + fneg[c];
        sum += 2.0 * tp[c] as f64 / denom as f64;
    }
    if classes == 0 {
        0.0
    } else {
        sum / classes as f64
    }
}

/// Softmax of `logits / t` in f64.
pub fn softmax_t(logits: &[f32], t: f64) -> Vec<f64> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&l| ((l as f64 - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Index of the largest logit (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Expected calibration error with `bins` equal-width confidence bins (Guo et al. 2017): the
/// confidence is the top class's probability, bin `b` holds confidences in (b/n, (b+1)/n], and
/// the ECE is the example-weighted mean |accuracy - confidence| over bins.
pub fn ece(confidence: &[f64], correct: &[bool], bins: usize) -> f64 {
    let n = confidence.len();
    if n == 0 || bins == 0 {
        return 0.0;
    }
    let mut conf_sum = vec![0.0f64; bins];
    let mut hit = vec![0usize; bins];
    let mut count = vec![0usize; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        conf_sum[b] += c;
        count[b] += 1;
        hit[b] += ok as usize;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (hit[b] as f64 - conf_sum[b]).abs() / n as f64)
        .sum()
}

/// ECE of logits at temperature `t`.
pub fn ece_logits(logits: &[Vec<f32>], gold: &[usize], t: f64, bins: usize) -> f64 {
    let (conf, ok): (Vec<f64>, Vec<bool>) = logits
        .iter()
        .zip(gold)
        .map(|(l, &g)| {
            let p = softmax_t(l, t);
            let top = argmax(l);
            (p[top], top == g)
        })
        .unzip();
    ece(&conf, &ok, bins)
}

/// Mean negative log-likelihood of `gold` under softmax(logits / t).
pub fn nll(logits: &[Vec<f32>], gold: &[usize], t: f64) -> f64 {
    if logits.is_empty() {
        return 0.0;
    }
    let mut sum = 0.0;
    for (l, &g) in logits.iter().zip(gold) {
        let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = l
            .iter()
            .map(|&x| ((x as f64 - m) / t).exp())
            .sum::<f64>()
            .ln();
        sum += lse - (l[g] as f64 - m) / t;
    }
    sum / logits.len() as f64
}

/// The temperature minimising the NLL (Guo et al.'s temperature scaling). The NLL is convex in
/// the inverse temperature (a log-sum-exp minus a linear term), so a golden-section search over
/// 1/T in [1/100, 100] finds the optimum without gradients.
pub fn fit_temperature(logits: &[Vec<f32>], gold: &[usize]) -> f64 {
    if logits.is_empty() {
        return 1.0;
    }
    let f = |beta: f64| nll(logits, gold, 1.0 / beta);
    let (mut a, mut b) = (0.01f64.ln(), 100.0f64.ln());
    // Search in log(beta): the optimum can sit anywhere over four decades.
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c.exp()), f(d.exp()));
    for _ in 0..80 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c.exp());
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d.exp());
        }
    }
    1.0 / ((a + b) / 2.0).exp()
}

/// SplitMix64: a small seeded generator, so that bootstrap intervals and validation splits are
/// the same on every run and machine.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n) (n > 0; the modulo bias is below 2^-40 for the sizes used here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Indices 0..n in a seeded random order (Fisher-Yates).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut r = SplitMix::new(seed);
    for i in (1..n).rev() {
        v.swap(i, r.below(i + 1));
    }
    v
}

/// A difference of accuracies with its bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeltaCi {
    pub delta: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

/// Accuracy of `b` minus accuracy of `a` on the same examples, with a paired percentile
/// bootstrap 95% interval: each resample draws examples with replacement and keeps the pair
/// together, so the interval reflects how often the two models differ, not the two accuracies'
/// separate noise. `None` for no examples.
pub fn paired_bootstrap(a: &[bool], b: &[bool], resamples: usize, seed: u64) -> Option<DeltaCi> {
    let n = a.len().min(b.len());
    if n == 0 {
        return None;
    }
    // Per example the difference is -1, 0 or +1.
    let d: Vec<i32> = (0..n).map(|i| b[i] as i32 - a[i] as i32).collect();
    let delta = d.iter().sum::<i32>() as f64 / n as f64;
    let mut r = SplitMix::new(seed);
    let mut stats: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            let s: i64 = (0..n).map(|_| d[r.below(n)] as i64).sum();
            s as f64 / n as f64
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let q = |p: f64| stats[((stats.len() - 1) as f64 * p).round() as usize];
    Some(DeltaCi {
        delta,
        lo: q(0.025),
        hi: q(0.975),
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_by_hand() {
        // Class 0: tp 1, fp 1, fn 1 -> 2/4; class 1: tp 1, fp 0, fn 1 -> 2/3;
        // class 2: tp 1, fp 1, fn 0 -> 2/3. Mean 0.6111.
        let gold = [0, 0, 1, 1, 2];
        let pred = [0, 2, 0, 1, 2];
        let f = macro_f1(&pred, &gold);
        assert!(
            (f - (0.5 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12,
            "{f}"
        );
        assert_eq!(accuracy(&pred, &gold), 0.6);
        assert_eq!(flips(&pred, &gold), 2);
    }

    #[test]
    fn macro_f1_skips_absent_classes_and_scores_missed_ones_zero() {
        // Class 3 never appears: ignored. Class 1 is in gold but never predicted right: 0.
        assert_eq!(macro_f1(&[0, 0], &[0, 1]), (2.0 / 3.0 + 0.0) / 2.0);
        assert_eq!(macro_f1(&[], &[]), 0.0);
    }

    #[test]
    fn ece_by_hand() {
        // Bins of 0.5: (0, .5] holds 0.3 (wrong); (.5, 1] holds 0.9 (right), 0.6 (wrong).
        // |0 - 0.3| * 1/3 + |1 - 1.5| / 3 = 0.1 + 0.1667.
        let e = ece(&[0.3, 0.9, 0.6], &[false, true, false], 2);
        assert!((e - (0.3 + 0.5) / 3.0).abs() < 1e-12, "{e}");
        // A confidence of exactly 1 lands in the last bin, 0 in the first.
        assert!((ece(&[1.0, 0.0], &[true, false], 15)).abs() < 1e-12);
    }

    #[test]
    fn temperature_fit_recovers_a_known_temperature() {
        // Labels drawn from softmax(z / 2.5): the NLL-optimal temperature for the logits z is
        // 2.5, up to sampling noise.
        let t_true = 2.5;
        let mut r = SplitMix::new(7);
        let mut uni = || (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let (mut logits, mut gold) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let z: Vec<f32> = (0..5).map(|_| (uni() * 12.0 - 6.0) as f32).collect();
            let p = softmax_t(&z, t_true);
            let u = uni();
            let mut acc = 0.0;
            let mut y = p.len() - 1;
            for (i, &pi) in p.iter().enumerate() {
                acc += pi;
                if u < acc {
                    y = i;
                    break;
                }
            }
            logits.push(z);
            gold.push(y);
        }
        let t = fit_temperature(&logits, &gold);
        assert!((t - t_true).abs() < 0.15, "fitted {t}");
        // Scaling improves calibration on these overconfident logits.
        assert!(ece_logits(&logits, &gold, t, 15) < ece_logits(&logits, &gold, 1.0, 15));
    }

    #[test]
    fn bootstrap_interval_covers_the_true_delta() {
        // Model b fixes 60 of a's errors and breaks 20 of its hits on 1000 examples: the true
        // delta is +0.04. The interval must hold it and exclude 0 at this size.
        let mut a = vec![true; 1000];
        let mut b = vec![true; 1000];
        for x in a.iter_mut().take(300) {
            *x = false;
        }
        for x in b.iter_mut().take(240) {
            *x = false;
        }
        for x in b.iter_mut().skip(300).take(20) {
            *x = false;
        }
        let ci = paired_bootstrap(&a, &b, 1000, 42).unwrap();
        assert!((ci.delta - 0.04).abs() < 1e-12);
        assert!(ci.lo < 0.04 && 0.04 < ci.hi, "{ci:?}");
        assert!(ci.lo > 0.0, "{ci:?}");
        // Same seed, same interval.
        assert_eq!(paired_bootstrap(&a, &b, 1000, 42).unwrap(), ci);
        // Identical models: a zero-width interval at 0.
        let same = paired_bootstrap(&a, &a, 100, 1).unwrap();
        assert_eq!((same.lo, same.delta, same.hi), (0.0, 0.0, 0.0));
        assert!(paired_bootstrap(&[], &[], 10, 1).is_none());
    }

    #[test]
    fn permutation_is_a_seeded_shuffle() {
        let p = permutation(50, 3);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_eq!(p, permutation(50, 3));
        assert_ne!(p, permutation(50, 4));
    }
}
