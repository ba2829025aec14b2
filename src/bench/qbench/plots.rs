//! SVG Pareto plots (plotters): quality against latency and against memory, one pair per kind
//! of model. Each (model, device, engine) is a series; its Pareto frontier (no other point of the
//! series is both cheaper and at least as good) is drawn as a line through the points.

use super::config::Kind;
use super::rows::Row;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

struct Axis {
    name: &'static str,
    get: fn(&Row) -> Option<f64>,
}

struct Quality {
    name: &'static str,
    get: fn(&Row) -> Option<f64>,
    higher_is_better: bool,
}

/// Points of one series: (x, y, label).
type Series = (String, Vec<(f64, f64, String)>);

fn series(rows: &[&Row], x: &Axis, q: &Quality) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in rows {
        let (Some(xv), Some(yv)) = ((x.get)(r), (q.get)(r)) else {
            continue;
        };
        if !(xv.is_finite() && yv.is_finite()) {
            continue;
        }
        let name = if r.engine == "qgguf" {
            format!("{} {}", r.model, r.device)
        } else {
            format!("{} {} ({})", r.model, r.device, r.engine)
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push((xv, yv, r.format.clone())),
            None => out.push((name, vec![(xv, yv, r.format.clone())])),
        }
    }
    out
}

/// The non-dominated points, by increasing cost.
pub fn pareto(points: &[(f64, f64)], higher_is_better: bool) -> Vec<(f64, f64)> {
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let mut p: Vec<(f64, f64)> = points.to_vec();
    p.sort_by(|a, b| {
        a.0.total_cmp(&b.0).then(if higher_is_better {
            b.1.total_cmp(&a.1)
        } else {
            a.1.total_cmp(&b.1)
        })
    });
    let mut front: Vec<(f64, f64)> = Vec::new();
    for pt in p {
        if front.last().is_none_or(|l| better(pt.1, l.1)) {
            front.push(pt);
        }
    }
    front
}

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in v {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        lo.abs().max(1e-3) * 0.1
    };
    (lo - pad, hi + pad)
}

fn draw(path: &Path, title: &str, data: &[Series], x: &Axis, q: &Quality) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("{}: {e}", path.display());
        root.fill(&WHITE).map_err(e)?;
        let (x0, x1) = range(data.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
        let (y0, y1) = range(data.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(x.name)
            .y_desc(q.name)
            .draw()
            .map_err(e)?;
        for (i, (name, pts)) in data.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(
                    pts.iter()
                        .map(|(a, b, _)| Circle::new((*a, *b), 5, color.filled())),
                )
                .map_err(e)?
                .label(name.as_str())
                .legend(move |(a, b)| Circle::new((a, b), 5, color.filled()));
            chart
                .draw_series(pts.iter().map(|(a, b, l)| {
                    Text::new(l.clone(), (*a, *b), ("sans-serif", 12).into_font())
                }))
                .map_err(e)?;
            let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
            chart
                .draw_series(LineSeries::new(
                    pareto(&xy, q.higher_is_better),
                    color.stroke_width(2),
                ))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    super::write_atomic(path, svg.as_bytes())
}

/// Writes the plots that have data; returns their paths.
pub fn write_plots(rows: &[Row], dir: &Path) -> Result<Vec<PathBuf>> {
    let latency = Axis {
        name: "latency (ms per example / per generated token)",
        get: Row::latency_ms,
    };
    let memory = Axis {
        name: "peak memory MiB (RSS on CPU, VRAM on GPU)",
        get: |r| r.peak_mib,
    };
    let f1 = Quality {
        name: "macro F1 (%)",
        get: |r| r.macro_f1.map(|x| 100.0 * x),
        higher_is_better: true,
    };
    let agree = Quality {
        name: "agreement with F16 (%)",
        get: |r| r.agree.map(|x| 100.0 * x),
        higher_is_better: true,
    };
    let kld = Quality {
        name: "mean KLD vs F16 (lower is better)",
        get: |r| {
            r.kld_mean.or(if r.format == "F16" && r.ppl.is_some() {
                Some(0.0)
            } else {
                None
            })
        },
        higher_is_better: false,
    };
    let mut written = Vec::new();
    let cls: Vec<&Row> = rows
        .iter()
        .filter(|r| r.kind == Some(Kind::Classifier))
        .collect();
    let real: Vec<&Row> = cls.iter().copied().filter(|r| !r.synthetic).collect();
    let lms: Vec<&Row> = rows.iter().filter(|r| r.kind == Some(Kind::Lm)).collect();
    let jobs: [(&str, &[&Row], &Quality, &str); 3] = [
        ("classifier", &real, &f1, "Classifiers: macro F1"),
        (
            "classifier-agreement",
            &cls,
            &agree,
            "Classifiers: agreement with F16",
        ),
        ("lm", &lms, &kld, "LMs: KL divergence from F16"),
    ];
    for (stem, rs, q, title) in jobs {
        for (suffix, x) in [("latency", &latency), ("memory", &memory)] {
            let data = series(rs, x, q);
            if data.is_empty() {
                continue;
            }
            let path = dir.join(format!("pareto-{stem}-{suffix}.svg"));
            draw(&path, &format!("{title} vs {suffix}"), &data, x, q)?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front() {
        // (cost, quality): (2, 0.5) is dominated by (1, 0.6).
        let p = [(1.0, 0.6), (2.0, 0.5), (3.0, 0.9), (0.5, 0.1)];
        assert_eq!(pareto(&p, true), [(0.5, 0.1), (1.0, 0.6), (3.0, 0.9)]);
        // Lower is better: only the cheapest with the lowest value survive.
        let p = [(1.0, 0.3), (2.0, 0.1), (3.0, 0.2)];
        assert_eq!(pareto(&p, false), [(1.0, 0.3), (2.0, 0.1)]);
    }
}
