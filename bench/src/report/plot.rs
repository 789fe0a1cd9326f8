//! A latency-by-percentile plot (SVG), the picture HdrHistogram's `plotFiles.html` draws.
//!
//! x is the percentile on HdrHistogram's usual scale, `log10(1/(1-p))`, labelled 0%, 90%, 99%,
//! 99.9%, ...; y is the latency in milliseconds, linear from 0. Each series is the `.hgrm` table
//! of its histogram (5 ticks per half distance), one `<polyline>` in the series' colour, carried
//! flat at its maximum to the right edge (past its last finite row every percentile lies in the
//! top bucket, i.e. is the maximum). The legend gives each series' count and maximum; a series
//! without samples is listed as such and draws no line, and a plot with no samples at all says
//! "no samples".
//!
//! Drawn with `plotters` (SVG backend and line series only: plotters, plotters-backend,
//! plotters-svg, ~6 s to build from scratch, no font or image crates): it escapes text for XML,
//! lays out axes, ticks and legend, and its log axis takes our decade key points and percentile
//! labels, which would otherwise be ~150 lines of hand-written SVG to keep right.

use std::error::Error;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::hgrm::{percentile_rows, PERCENTILE_TICKS_PER_HALF_DISTANCE};
use super::MICROS_PER_MILLI;

/// Width and height of the SVG, in pixels.
const SIZE_PX: (u32, u32) = (960, 540);

/// Series colours as (red, green, blue), Tableau 10, reused in order when there are more series
/// than colours. The SVG writes them as `stroke="#1F77B4"`.
pub const SERIES_COLOURS: [(u8, u8, u8); 10] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0xd6, 0x27, 0x28),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
];

/// The x axis always reaches at least 1/(1-p) = 100, the 99th percentile.
const X_DECADES_MIN: u32 = 2;

/// One series, ready to draw: (1/(1-p), latency in ms) points of its finite-percentile rows.
struct Curve<'a> {
    name: &'a str,
    points: Vec<(f64, f64)>,
    max_ms: f64,
    count: u64,
}

impl<'a> Curve<'a> {
    fn of(name: &'a str, hist: &Histogram<u64>) -> Self {
        let points = percentile_rows(hist, PERCENTILE_TICKS_PER_HALF_DISTANCE)
            .iter()
            .filter(|row| !row.is_last())
            .map(|row| {
                (
                    1.0 / (1.0 - row.quantile()),
                    row.value as f64 / MICROS_PER_MILLI,
                )
            })
            .collect();
        Curve {
            name,
            points,
            max_ms: hist.max() as f64 / MICROS_PER_MILLI,
            count: hist.len(),
        }
    }

    fn legend(&self) -> String {
        if self.count == 0 {
            format!("{}: no samples", self.name)
        } else {
            format!("{}: n={}, max {:.3} ms", self.name, self.count, self.max_ms)
        }
    }
}

/// The SVG of `series` (name, histogram of µs) plotted together under `title`.
///
/// Never panics on its input: if plotters reports an error, the result is a small SVG that
/// shows it.
pub fn percentile_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let curves: Vec<Curve<'_>> = series
        .iter()
        .map(|(name, hist)| Curve::of(name, hist))
        .collect();
    let mut svg = String::new();
    match draw(&mut svg, title, &curves) {
        Ok(()) => svg,
        Err(e) => error_svg(&e.to_string()),
    }
}

fn draw(svg: &mut String, title: &str, curves: &[Curve<'_>]) -> Result<(), Box<dyn Error>> {
    let decades = x_decades(curves);
    let x_max = 10f64.powi(decades as i32);
    let y_max = y_axis_max(curves);
    let root = SVGBackend::with_string(svg, SIZE_PX).into_drawing_area();
    root.fill(&WHITE)?;
    let key_points: Vec<f64> = (0..=decades).map(|d| 10f64.powi(d as i32)).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        // Room for the last x label, which is centred on the right edge.
        .margin_right(48)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (1.0..x_max).log_scale().with_key_points(key_points),
            0.0..y_max,
        )?;
    chart
        .configure_mesh()
        .x_desc("Percentile")
        .y_desc("Latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .max_light_lines(4)
        .draw()?;

    for (curve, colour) in curves.iter().zip(SERIES_COLOURS.iter().cycle()) {
        let mut points = curve.points.clone();
        if curve.count > 0 {
            points.push((x_max, curve.max_ms));
        }
        let colour = RGBColor(colour.0, colour.1, colour.2);
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(curve.legend())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], colour.filled()));
    }
    if curves.iter().all(|c| c.count == 0) {
        let style = ("sans-serif", 28)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart.plotting_area().draw(&Text::new(
            "no samples",
            (10f64.powf(f64::from(decades) / 2.0), y_max / 2.0),
            style,
        ))?;
    }
    if !curves.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Decades on the x axis: enough for the highest finite percentile row of any series.
fn x_decades(curves: &[Curve<'_>]) -> u32 {
    let x_last = curves
        .iter()
        .filter_map(|c| c.points.last())
        .map(|p| p.0)
        .fold(1.0, f64::max);
    // A little slack so that 1/(1-0.999) = 1000.0000000000009 stays within 3 decades.
    let decades = (x_last.log10() - 1e-9).ceil().max(0.0) as u32;
    decades.max(X_DECADES_MIN)
}

/// The top of the y axis: 5% above the largest maximum, or 1 ms when nothing was recorded.
fn y_axis_max(curves: &[Curve<'_>]) -> f64 {
    let max = curves.iter().map(|c| c.max_ms).fold(0.0, f64::max);
    if max > 0.0 && max.is_finite() {
        max * 1.05
    } else {
        1.0
    }
}

/// The label of x = 1/(1-p) at a decade: 1 -> "0%", 10 -> "90%", 100 -> "99%", 1000 -> "99.9%".
fn percentile_label(x: f64) -> String {
    let decade = x.log10().round().max(0.0) as usize;
    match decade {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        _ => format!("99.{}%", "9".repeat(decade - 2)),
    }
}

/// The stand-in picture when plotters fails, so a report never loses its plot silently.
fn error_svg(message: &str) -> String {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">\
         <text x=\"16\" y=\"32\" font-family=\"sans-serif\">plot failed: {escaped}</text></svg>\n",
        SIZE_PX.0, SIZE_PX.1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut hist = Histogram::<u64>::new(3).expect("3 significant digits are valid");
        for v in values {
            hist.record(v)
                .expect("auto-resizing histogram records any value");
        }
        hist
    }

    fn colour_hex(c: (u8, u8, u8)) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// The `<polyline>` elements stroked in `colour`, with their point counts.
    fn polylines_in(svg: &str, colour: (u8, u8, u8)) -> Vec<usize> {
        let stroke = format!("stroke=\"{}\"", colour_hex(colour));
        svg.split("<polyline")
            .skip(1)
            .filter(|p| p.contains(&stroke))
            .map(|p| {
                let points = p
                    .split("points=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("");
                points.split_whitespace().count()
            })
            .collect()
    }

    /// A crude well-formedness check: tags balance and nothing is left unescaped.
    fn assert_balanced(svg: &str) {
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        let opens = svg.matches("<text").count();
        assert_eq!(opens, svg.matches("</text>").count());
    }

    #[test]
    fn one_line_per_series_with_legend() {
        let fast = hist_of((1..=10_000).map(|i| 100 + i % 900));
        let slow = hist_of((1..=10_000).map(|i| 1_000 + i * 3));
        let svg = percentile_svg(
            "produce vs e2e",
            &[("produce ack", &fast), ("end-to-end", &slow)],
        );
        assert_balanced(&svg);
        for colour in &SERIES_COLOURS[..2] {
            let lines = polylines_in(&svg, *colour);
            assert_eq!(lines.len(), 1, "one polyline in {}", colour_hex(*colour));
            assert!(
                lines[0] > 20,
                "the curve has its percentile points: {lines:?}"
            );
        }
        assert!(polylines_in(&svg, SERIES_COLOURS[2]).is_empty());
        assert!(svg.contains("produce ack: n=10000, max 0.999 ms"), "{svg}");
        assert!(svg.contains("end-to-end: n=10000, max"), "{svg}");
        assert!(svg.contains("produce vs e2e"));
        for label in ["0%", "90%", "99%", "99.9%", "99.99%"] {
            assert!(
                svg.contains(&format!(">\n{label}\n</text>"))
                    || svg.contains(&format!(">{label}</text>")),
                "{label}"
            );
        }
    }

    #[test]
    fn empty_histograms_say_no_samples() {
        let empty = hist_of([]);
        let svg = percentile_svg("nothing", &[("produce ack", &empty)]);
        assert_balanced(&svg);
        assert!(svg.contains("no samples"), "{svg}");
        assert!(!svg.contains("plot failed"), "{svg}");
        let svg = percentile_svg("no series", &[]);
        assert!(svg.contains("no samples"), "{svg}");
        assert!(!svg.contains("plot failed"), "{svg}");
    }

    #[test]
    fn an_empty_series_beside_a_full_one_is_listed_without_a_line() {
        let full = hist_of([500, 700, 900]);
        let empty = hist_of([]);
        let svg = percentile_svg("mixed", &[("full", &full), ("idle", &empty)]);
        assert_eq!(polylines_in(&svg, SERIES_COLOURS[0]).len(), 1);
        assert!(polylines_in(&svg, SERIES_COLOURS[1])
            .iter()
            .all(|&points| points == 0));
        assert!(svg.contains("idle: no samples"), "{svg}");
    }

    #[test]
    fn one_value_draws_a_flat_line_and_huge_values_do_not_break_the_axis() {
        let one = hist_of([1_234]);
        let svg = percentile_svg("one", &[("one", &one)]);
        assert_eq!(polylines_in(&svg, SERIES_COLOURS[0]), vec![2]);
        let huge = hist_of([1, u64::MAX / 4]);
        let svg = percentile_svg("huge", &[("huge", &huge)]);
        assert!(!svg.contains("plot failed"), "{svg}");
        assert_eq!(polylines_in(&svg, SERIES_COLOURS[0]).len(), 1);
    }

    #[test]
    fn titles_are_escaped() {
        let svg = percentile_svg("a < b & c", &[("x<y", &hist_of([1]))]);
        assert!(svg.contains("a &lt; b &amp; c"), "{svg}");
        assert!(svg.contains("x&lt;y"), "{svg}");
    }

    #[test]
    fn labels_and_decades() {
        let labels: Vec<String> = (0..6).map(|d| percentile_label(10f64.powi(d))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
        let curve = |last_x: f64| Curve {
            name: "c",
            points: vec![(1.0, 1.0), (last_x, 2.0)],
            max_ms: 2.0,
            count: 1,
        };
        assert_eq!(x_decades(&[curve(3.0)]), 2);
        assert_eq!(x_decades(&[curve(1.0 / (1.0 - 0.999))]), 3);
        assert_eq!(x_decades(&[curve(1001.0)]), 4);
        assert_eq!(error_svg("a<b").matches("&lt;").count(), 1);
    }
}
