//! The HdrHistogram percentile distribution text (`.hgrm`).
//!
//! The format is the one Java's `AbstractHistogram.outputPercentileDistribution(printStream,
//! percentileTicksPerHalfDistance, outputValueUnitScalingRatio)` prints (wrk2 prints the same
//! table), and the one HdrHistogram's `plotFiles.html` reads:
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!        0.521 0.000000000000          1           1.00
//!        ...                                                (%12.Nf %2.12f %10d %14.2f)
//!       41.023 1.000000000000     100000                    (%12.Nf %2.12f %10d)
//! #[Mean    =        1.234, StdDeviation   =        0.567]
//! #[Max     =       41.023, Total count    =       100000]
//! #[Buckets =           22, SubBuckets     =         2048]
//! ```
//!
//! `N` is the histogram's number of significant digits (3 for ours), as in Java. The last line,
//! at percentile 1.0, has no `1/(1-Percentile)` column (it would be infinite). An empty histogram
//! prints the header and the footer only.
//!
//! The rows follow Java's `PercentileIterator` exactly, including its arithmetic (levels are kept
//! in percent and the tick size halves with each half of the remaining distance to 100%).
//! `hdrhistogram`'s own `iter_quantiles` has the same semantics but keeps levels as fractions of
//! one, so its float rounding differs from Java's: a bucket whose percentile equals a level (3 of
//! 10 values at the 30% tick) is reported by Java and skipped by `iter_quantiles`. HdrHistogram_py
//! differs from both (it does not truncate the halving count), so it is no reference for rows.

use std::io::{self, Write};

use hdrhistogram::Histogram;

/// Java's default for `outputPercentileDistribution`: 5 rows per halving of the distance to 100%.
pub const PERCENTILE_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// One step of the percentile iteration: one row of a `.hgrm` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentileRow {
    /// The highest value equivalent to the bucket the step stopped in, in the histogram's unit.
    pub value: u64,
    /// The percentile level iterated to, in percent (0 to 100), as Java keeps it.
    pub percent: f64,
    /// The number of values recorded up to and including `value`'s bucket.
    pub total_count: u64,
}

impl PercentileRow {
    /// The level as a fraction of one: the `Percentile` column of a `.hgrm` file.
    pub fn quantile(&self) -> f64 {
        self.percent / 100.0
    }

    /// Whether this is the final row, at 100%, which has no `1/(1-Percentile)` column.
    pub fn is_last(&self) -> bool {
        self.percent >= 100.0
    }
}

/// The percentile iteration of `hist`, step by step as Java's `PercentileIterator` walks it.
///
/// The first row is at 0% (the lowest recorded bucket), the last at 100% (the highest); in between
/// there are `ticks_per_half_distance` levels per halving of the distance to 100%, each reported at
/// the first bucket whose cumulative percentile reaches it. Like Java, the bucket holding the
/// largest values yields one row at the level current when it is reached, then the 100% row. An
/// empty histogram has no rows.
pub fn percentile_rows(hist: &Histogram<u64>, ticks_per_half_distance: u32) -> Vec<PercentileRow> {
    assert!(
        ticks_per_half_distance > 0,
        "percentile ticks per half distance must be > 0"
    );
    let total = hist.len();
    let mut rows = Vec::new();
    if total == 0 {
        return rows;
    }
    let mut level = 0.0_f64;
    let mut levels_exhausted = false;
    let mut running = 0_u64;
    let mut last_value = 0_u64;
    for bucket in hist.iter_recorded() {
        running = running.saturating_add(bucket.count_at_value());
        last_value = bucket.value_iterated_to();
        // Java: `(100.0 * totalCountToCurrentIndex) / arrayTotalCount`.
        let bucket_percent = (100.0 * running as f64) / total as f64;
        while !levels_exhausted && bucket_percent >= level {
            rows.push(PercentileRow {
                value: last_value,
                percent: level,
                total_count: running,
            });
            if running >= total {
                // The last bucket: Java's iterator has no more buckets, so it jumps to 100%.
                levels_exhausted = true;
                break;
            }
            let next = next_level(level, ticks_per_half_distance);
            // Near 2^53 values the tick stops moving the level in f64 (Java would then repeat
            // this row without end): stop the intermediate rows there instead.
            if next <= level || next >= 100.0 {
                levels_exhausted = true;
            }
            level = next;
        }
    }
    rows.push(PercentileRow {
        value: last_value,
        percent: 100.0,
        total_count: running,
    });
    rows
}

/// Java's `PercentileIterator.incrementIterationLevel`, with its truncations.
fn next_level(level: f64, ticks_per_half_distance: u32) -> f64 {
    let halvings = ((100.0 / (100.0 - level)).ln() / 2.0_f64.ln()) as i64;
    // Java computes this in `long`; an f64 holds every value below 2^53 exactly, and beyond that
    // the increment no longer changes the level either way.
    let reporting_ticks = f64::from(ticks_per_half_distance) * 2.0_f64.powi((halvings + 1) as i32);
    level + 100.0 / reporting_ticks
}

/// Writes `hist` as a `.hgrm` percentile distribution with 5 ticks per half distance (Java's
/// default), dividing every value by `unit_ratio` (1000.0 turns our µs into ms).
///
/// The text is formatted in memory and handed to `out` in one `write_all`.
pub fn write_hgrm(hist: &Histogram<u64>, out: &mut impl Write, unit_ratio: f64) -> io::Result<()> {
    assert!(
        unit_ratio.is_finite() && unit_ratio > 0.0,
        "unit ratio must be > 0, got {unit_ratio}"
    );
    let digits = usize::from(hist.sigfig());
    let rows = percentile_rows(hist, PERCENTILE_TICKS_PER_HALF_DISTANCE);
    let mut text: Vec<u8> = Vec::with_capacity(64 * (rows.len() + 6));
    writeln!(
        text,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    for row in &rows {
        let value = java_fixed(row.value as f64 / unit_ratio, digits);
        let quantile = row.quantile();
        let percentile = java_fixed(quantile, 12);
        if row.is_last() {
            writeln!(text, "{value:>12} {percentile:>2} {:10}", row.total_count)?;
        } else {
            let inverse = java_fixed(1.0 / (1.0 - quantile), 2);
            writeln!(
                text,
                "{value:>12} {percentile:>2} {:10} {inverse:>14}",
                row.total_count
            )?;
        }
    }
    let (mean, stdev) = mean_and_stdev(hist);
    writeln!(
        text,
        "#[Mean    = {:>12}, StdDeviation   = {:>12}]",
        java_fixed(mean / unit_ratio, digits),
        java_fixed(stdev / unit_ratio, digits)
    )?;
    writeln!(
        text,
        "#[Max     = {:>12}, Total count    = {:12}]",
        java_fixed(hist.max() as f64 / unit_ratio, digits),
        hist.len()
    )?;
    writeln!(
        text,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        sub_bucket_count(hist)
    )?;
    out.write_all(&text)
}

/// `value` with `decimals` digits after the point, rounded as Java's `%.Nf` does: from
/// the shortest decimal that reads back as the same double, half up. Rust's `{:.N}`
/// rounds the exact binary value instead, so 0.0055 (really 0.00549999…) gives 0.005
/// where Java prints 0.006; the golden test against Java's output caught it.
pub fn java_fixed(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    // Shortest round-trip digits and exponent: "d.ddde±x".
    let sci = format!("{:e}", value.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    // The number is 0.DIGITS x 10^(exponent + 1); lay it out with `decimals` places.
    let point = exponent + 1; // digits before the decimal point
    let keep = point + decimals as i64; // digits kept, counted from the first
    let mut kept: Vec<u8> = (0..keep.max(0))
        .map(|i| digits.get(i as usize).copied().unwrap_or(0))
        .collect();
    let round_up = keep >= 0 && digits.get(keep as usize).is_some_and(|&d| d >= 5);
    let mut point = point;
    if round_up {
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                point += 1;
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    // Leading zeros for numbers below 1, so there is at least one integer digit.
    let lead = (1 - point).max(0) as usize;
    let mut all = vec![0u8; lead];
    all.extend(kept);
    let int_len = (point.max(1)) as usize;
    all.resize(int_len + decimals, 0);
    let mut out = String::with_capacity(all.len() + 2);
    if value.is_sign_negative() && all.iter().any(|&d| d != 0) {
        out.push('-');
    }
    for (i, d) in all.iter().enumerate() {
        if i == int_len {
            out.push('.');
        }
        out.push(char::from(b'0' + d));
    }
    out
}

/// Java's `getMean()` and `getStdDeviation()`: every value counts as the middle of its bucket.
///
/// `Histogram::mean` divides each term by the total before adding, Java adds first; the sums here
/// are Java's so the printed digits are too.
fn mean_and_stdev(hist: &Histogram<u64>) -> (f64, f64) {
    let total = hist.len();
    if total == 0 {
        return (0.0, 0.0);
    }
    let sum: f64 = hist
        .iter_recorded()
        .map(|v| hist.median_equivalent(v.value_iterated_to()) as f64 * v.count_at_value() as f64)
        .sum();
    let mean = sum / total as f64;
    let squares: f64 = hist
        .iter_recorded()
        .map(|v| {
            let deviation = hist.median_equivalent(v.value_iterated_to()) as f64 - mean;
            deviation * deviation * v.count_at_value() as f64
        })
        .sum();
    (mean, (squares / total as f64).sqrt())
}

/// The number of sub-buckets per bucket, which `hdrhistogram` does not expose: the smallest power
/// of two that holds `2 * 10^sigfig` values at unit resolution (Java's `subBucketCount`).
fn sub_bucket_count(hist: &Histogram<u64>) -> u64 {
    let single_unit_resolution_max = 2.0 * 10.0_f64.powi(i32::from(hist.sigfig()));
    let magnitude = single_unit_resolution_max.log2().ceil().max(1.0) as u32;
    let count = 1_u64 << magnitude;
    // The counts array holds `buckets + 1` halves of a bucket's sub-buckets: check the derivation
    // against the histogram's real layout.
    assert_eq!(
        hist.distinct_values() as u64,
        (u64::from(hist.buckets()) + 1) * (count / 2),
        "sub-bucket count derived for {} significant digits does not match the histogram layout",
        hist.sigfig()
    );
    count
}

#[cfg(test)]
mod java_fixed_tests {
    use super::java_fixed;

    #[test]
    fn rounds_the_shortest_decimal_half_up() {
        assert_eq!(java_fixed(0.0055, 3), "0.006");
        assert_eq!(java_fixed(0.999780273437_5, 12), "0.999780273438");
        assert_eq!(java_fixed(0.0, 3), "0.000");
        assert_eq!(java_fixed(1.0, 12), "1.000000000000");
        assert_eq!(java_fixed(9.9996, 3), "10.000");
        assert_eq!(java_fixed(0.0004, 3), "0.000");
        assert_eq!(java_fixed(0.0005, 3), "0.001");
        assert_eq!(java_fixed(123456.789, 2), "123456.79");
        assert_eq!(java_fixed(1e20, 1), "100000000000000000000.0");
        assert_eq!(java_fixed(-2.5, 0), "-3");
        assert_eq!(java_fixed(f64::INFINITY, 2), "inf");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hgrm(hist: &Histogram<u64>) -> String {
        let mut out = Vec::new();
        write_hgrm(hist, &mut out, 1000.0).expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("hgrm text is ASCII")
    }

    fn hist_of(values: &[u64]) -> Histogram<u64> {
        let mut hist = Histogram::<u64>::new(3).expect("3 significant digits are valid");
        for &v in values {
            hist.record(v)
                .expect("auto-resizing histogram records any value");
        }
        hist
    }

    /// The table rows (between the blank line and the footer), split into columns.
    fn table(text: &str) -> Vec<Vec<&str>> {
        text.lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect()
    }

    const HEADER: &str = "       Value     Percentile TotalCount 1/(1-Percentile)\n\n";

    #[test]
    fn header_and_footer_match_java() {
        let text = hgrm(&hist_of(&[1_000, 2_000, 3_000]));
        assert!(text.starts_with(HEADER), "{text}");
        let footer: Vec<&str> = text.lines().filter(|l| l.starts_with("#[")).collect();
        assert_eq!(footer.len(), 3, "{text}");
        // Java's mean uses bucket middles: 1000 and 2000 sit in unit-wide buckets (below 2048),
        // 3000 in a bucket of width 2 whose middle is 3001: mean 2000.33, deviation 816.9.
        assert_eq!(
            footer[0],
            "#[Mean    =        2.000, StdDeviation   =        0.817]"
        );
        assert_eq!(
            footer[1],
            "#[Max     =        3.001, Total count    =            3]"
        );
        assert!(footer[2].starts_with("#[Buckets = "), "{}", footer[2]);
        assert!(
            footer[2].ends_with(", SubBuckets     =         2048]"),
            "{}",
            footer[2]
        );
        assert!(text.ends_with("]\n"));
    }

    #[test]
    fn java_output_for_one_to_ten() {
        // 1..=10 printed with unit ratio 1.0, worked out by hand from Java's PercentileIterator:
        // a level equal to a bucket's percentile (30% at value 3) is reported at that bucket,
        // which `iter_quantiles` (0.1 + 0.1 + 0.1 > 0.3) would skip.
        let hist = hist_of(&(1..=10).collect::<Vec<_>>());
        let mut out = Vec::new();
        write_hgrm(&hist, &mut out, 1.0).expect("writing to a Vec cannot fail");
        let text = String::from_utf8(out).expect("ASCII");
        let rows: Vec<String> = text.lines().skip(2).take(12).map(str::to_owned).collect();
        let expected = [
            "       1.000 0.000000000000          1           1.00",
            "       1.000 0.100000000000          1           1.11",
            "       2.000 0.200000000000          2           1.25",
            "       3.000 0.300000000000          3           1.43",
            "       4.000 0.400000000000          4           1.67",
            "       5.000 0.500000000000          5           2.00",
            "       6.000 0.550000000000          6           2.22",
            "       6.000 0.600000000000          6           2.50",
            "       7.000 0.650000000000          7           2.86",
            "       7.000 0.700000000000          7           3.33",
            "       8.000 0.750000000000          8           4.00",
            "       8.000 0.775000000000          8           4.44",
        ];
        assert_eq!(rows, expected, "{text}");
        let table = table(&text);
        let last = table.last().expect("rows");
        assert_eq!(last, &["10.000", "1.000000000000", "10"]);
    }

    #[test]
    fn columns_are_monotonic_and_last_line_is_short() {
        let mut rng = fastrand::Rng::with_seed(7);
        let values: Vec<u64> = (0..50_000)
            .map(|_| 100 + rng.u64(0..2_000_000) / (1 + rng.u64(0..1000)))
            .collect();
        let hist = hist_of(&values);
        let text = hgrm(&hist);
        let table = table(&text);
        assert!(table.len() > 50, "{text}");
        let (last, body) = table.split_last().expect("rows");
        assert_eq!(
            last.len(),
            3,
            "the 100% line has no 1/(1-p) column: {last:?}"
        );
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "50000");
        assert_eq!(last[0], format!("{:.3}", hist.max() as f64 / 1000.0));
        let parse = |s: &str| s.parse::<f64>().expect("numeric column");
        let mut previous = [f64::MIN; 4];
        for row in body {
            assert_eq!(row.len(), 4, "{row:?}");
            for (column, (cell, prev)) in row.iter().zip(previous.iter_mut()).enumerate() {
                let v = parse(cell);
                // Percentile and 1/(1-p) strictly increase; value and count may repeat.
                if column == 1 || column == 3 {
                    assert!(v > *prev, "column {column} not increasing at {row:?}");
                } else {
                    assert!(v >= *prev, "column {column} decreasing at {row:?}");
                }
                *prev = v;
            }
        }
        // Every row's count is exactly the number of values up to its bucket.
        for row in percentile_rows(&hist, PERCENTILE_TICKS_PER_HALF_DISTANCE) {
            assert_eq!(row.total_count, hist.count_between(0, row.value), "{row:?}");
            assert_eq!(hist.highest_equivalent(row.value), row.value, "{row:?}");
        }
    }

    #[test]
    fn empty_histogram_has_header_and_footer_only() {
        let text = hgrm(&hist_of(&[]));
        let expected_start =
            format!("{HEADER}#[Mean    =        0.000, StdDeviation   =        0.000]\n");
        assert!(text.starts_with(&expected_start), "{text}");
        assert!(
            text.contains("#[Max     =        0.000, Total count    =            0]\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 5, "{text}");
    }

    #[test]
    fn one_value_gives_a_0_and_a_100_percent_row() {
        let text = hgrm(&hist_of(&[1_234]));
        let table = table(&text);
        assert_eq!(
            table,
            vec![
                vec!["1.234", "0.000000000000", "1", "1.00"],
                vec!["1.234", "1.000000000000", "1"]
            ]
        );
        assert!(
            text.contains("#[Max     =        1.234, Total count    =            1]"),
            "{text}"
        );
    }

    #[test]
    fn huge_values_keep_their_columns() {
        // An hour in µs and the largest value the histogram can track.
        let hist = hist_of(&[3_600_000_000, u64::MAX / 4, 1]);
        let text = hgrm(&hist);
        let table = table(&text);
        let last = table.last().expect("rows");
        assert_eq!(last[2], "3");
        let max_ms = hist.max() as f64 / 1000.0;
        assert!(max_ms > 4.6e15, "{max_ms}");
        assert_eq!(last[0], format!("{max_ms:.3}"));
        // Wider than 12 characters, the value pushes the line right, as Java's %12.3f does.
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{max_ms:.3} 0."))),
            "{text}"
        );
    }

    #[test]
    fn the_last_bucket_yields_one_row_then_100_percent() {
        // 9 values at 1 ms and one at 1 s: the 90% level lands in the first bucket, the next
        // level (91%) needs the last bucket, which reports once and then jumps to 100%.
        let mut values = vec![1_000; 9];
        values.push(1_000_000);
        let rows = percentile_rows(&hist_of(&values), 5);
        let tail: Vec<(u64, u64)> = rows
            .iter()
            .rev()
            .take(2)
            .map(|r| (r.value, r.total_count))
            .collect();
        let max = hist_of(&values).max();
        assert_eq!(tail, vec![(max, 10), (max, 10)]);
        assert!(rows[rows.len() - 2].percent < 100.0);
        assert!(rows.iter().filter(|r| r.is_last()).count() == 1);
    }

    #[test]
    fn levels_follow_java_ticks() {
        // Uniform 1..=100000: every level is hit, so the levels are Java's sequence itself:
        // 0, 10, ..., 50, then 55, 60, ... (5 ticks per half distance).
        let hist = hist_of(&(1..=100_000).collect::<Vec<_>>());
        let levels: Vec<f64> = percentile_rows(&hist, 5)
            .iter()
            .map(|r| r.percent)
            .take(14)
            .collect();
        let expected = [
            0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 77.5, 80.0, 82.5,
        ];
        for (got, want) in levels.iter().zip(expected) {
            assert!((got - want).abs() < 1e-9, "{levels:?}");
        }
    }
}
