//! `--html FILE`: the report as one self-contained page, with hand-written inline SVG line charts
//! of queue length, utilization and prices over virtual time (no scripts, no external files).

use std::fmt::Write;

use super::{engine::Sample, report::Report};

/// Most points drawn per series; longer runs are averaged (queue: maximum) into this many buckets.
const MAX_POINTS: usize = 600;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// One line of a chart: a name and (hours, value) points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// The page.
pub fn page(report: &Report, samples: &[Sample], classes: &[String]) -> String {
    let hours = |s: &Sample| s.at_ms as f64 / 3_600_000.0;
    let queue = Series {
        name: "jobs waiting".into(),
        points: bucket(samples.iter().map(|s| (hours(s), s.queued as f64)), true),
    };
    let running = Series {
        name: "jobs running".into(),
        points: bucket(samples.iter().map(|s| (hours(s), s.running as f64)), false),
    };
    let utilization = Series {
        name: "GPUs allocated".into(),
        points: bucket(
            samples.iter().map(|s| (hours(s), s.utilization * 100.0)),
            false,
        ),
    };
    let mut prices: Vec<Series> = classes
        .iter()
        .enumerate()
        .map(|(i, class)| Series {
            name: format!("base {class}"),
            points: bucket(
                samples.iter().map(|s| {
                    (
                        hours(s),
                        s.base_micros.get(i).copied().unwrap_or(0) as f64 / 1e6,
                    )
                }),
                false,
            ),
        })
        .collect();
    prices.push(Series {
        name: "paid (mean)".into(),
        points: bucket(
            samples
                .iter()
                .filter_map(|s| s.paid_micros.map(|p| (hours(s), p as f64 / 1e6))),
            false,
        ),
    });

    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    html.push_str("<title>agora simulate: simulated fleet report</title>\n");
    html.push_str("<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:960px;color:#222}table{border-collapse:collapse}td{padding:2px 12px 2px 0}td:first-child{color:#555}svg{display:block;margin:1em 0 2em}</style>\n");
    html.push_str("</head><body>\n<h1>agora simulate</h1>\n");
    html.push_str("<p><strong>Simulated fleet</strong>: the nodes, their network and the jobs' run times are simulated, in virtual time; placement and prices come from the hub's scheduler and market.</p>\n<table>\n");
    for line in report.summary().lines().skip(1) {
        let line = line.trim();
        let (key, value) = line.split_once("  ").unwrap_or((line, ""));
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(key),
            escape(value.trim())
        );
    }
    html.push_str("</table>\n");
    html.push_str(&chart("Queue length", "jobs", &[queue, running], |v| {
        format!("{v:.0}")
    }));
    html.push_str(&chart("Utilization", "% of GPUs", &[utilization], |v| {
        format!("{v:.0} %")
    }));
    html.push_str(&chart("Price per GPU-hour", "units", &prices, |v| {
        format!("{v:.2}")
    }));
    html.push_str("</body></html>\n");
    html
}

/// At most [`MAX_POINTS`] points: consecutive points averaged (or their maximum) per bucket.
fn bucket(points: impl Iterator<Item = (f64, f64)>, maximum: bool) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> = points.collect();
    let size = points.len().div_ceil(MAX_POINTS).max(1);
    points
        .chunks(size)
        .map(|chunk| {
            let x = chunk[0].0;
            let y = if maximum {
                chunk.iter().map(|p| p.1).fold(f64::MIN, f64::max)
            } else {
                chunk.iter().map(|p| p.1).sum::<f64>() / chunk.len() as f64
            };
            (x, y)
        })
        .collect()
}

/// One SVG line chart with axes, ticks and a legend.
fn chart(title: &str, unit: &str, series: &[Series], label: impl Fn(f64) -> String) -> String {
    let all = series.iter().flat_map(|s| &s.points);
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let y_max = nice(all.map(|p| p.1).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |v: f64| LEFT + v / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t}\">",
        t = escape(title)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"18\" font-size=\"15\" font-weight=\"bold\">{} ({})</text>",
        escape(title),
        escape(unit)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            y(v) + 4.0,
            escape(&label(v)),
            y = y(v)
        );
        let h = x_max * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{h:.1} h</text>",
            x(h),
            TOP + plot_h + 16.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">virtual time</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 4.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
        let ly = TOP + 4.0 + 14.0 * i as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"3\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            LEFT + plot_w + 10.0,
            LEFT + plot_w + 24.0,
            LEFT + plot_w + 28.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A round upper bound for an axis: 1, 2 or 5 times a power of ten, at least `v`.
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round_and_long_runs_are_bucketed() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(73.0), 100.0);
        assert_eq!(nice(1.2), 2.0);
        assert_eq!(nice(4.0), 5.0);
        let points = bucket((0..1800).map(|i| (i as f64, (i % 3) as f64)), true);
        assert_eq!(points.len(), 600);
        assert!(points.iter().all(|p| p.1 == 2.0));
        assert_eq!(bucket((0..3).map(|i| (i as f64, 1.0)), false).len(), 3);
    }

    #[test]
    fn a_chart_is_svg_with_one_line_per_series() {
        let svg = chart(
            "Queue <length>",
            "jobs",
            &[
                Series {
                    name: "a".into(),
                    points: vec![(0.0, 1.0), (1.0, 3.0)],
                },
                Series {
                    name: "b".into(),
                    points: vec![(0.0, 0.0)],
                },
            ],
            |v| format!("{v:.0}"),
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("Queue &lt;length&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
