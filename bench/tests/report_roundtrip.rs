//! The report files, read back by an independent reader.
//!
//! `tests/tools/read_histograms.py` parses the `.hgrm` tables against the format Java's
//! `outputPercentileDistribution` prints, decodes the interval log with HdrHistogram_py
//! (`pip install hdrhistogram`) and parses the SVG as XML. This test writes the files from a
//! seeded latency distribution and compares what Python read with what `hdrhistogram` holds.
//! Without HdrHistogram_py it fails (a skipped check could never fail).

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::Value;
use strand_bench::report::hgrm::java_fixed;
use strand_bench::report::plot::SERIES_COLOURS;
use strand_bench::report::{
    percentile_rows, percentile_svg, write_hgrm, HistogramLog, MICROS_PER_MILLI,
    PERCENTILE_TICKS_PER_HALF_DISTANCE,
};

const SEED: u64 = 0x5742_414e_4442_454e;
const INTERVALS: u64 = 5;
const SAMPLES_PER_INTERVAL: usize = 20_000;
/// The interval in which the end-to-end series records nothing (an idle second).
const IDLE_INTERVAL: u64 = 3;

/// A log-normal-ish latency in µs: exp of a sum of uniforms (close to normal) around `median_us`,
/// with one sample in 2000 a slow outlier of 40 to 240 ms.
fn latency_us(rng: &mut fastrand::Rng, median_us: f64) -> u64 {
    if rng.u32(0..2000) == 0 {
        return 40_000 + rng.u64(0..200_000);
    }
    let normal = (0..4).map(|_| rng.f64() - 0.5).sum::<f64>();
    (median_us * (normal * 1.2).exp()) as u64 + 20
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tools/read_histograms.py")
}

/// Runs the Python reader on `dir` and returns its JSON.
fn read_with_python(dir: &Path) -> Value {
    let output = Command::new("python3")
        .arg(script())
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3, then `pip install hdrhistogram`")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "read_histograms.py failed ({}); if HdrHistogram_py is missing: `pip install hdrhistogram`\n{stderr}",
        output.status
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("read_histograms.py printed no JSON: {e}"))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot clear {}: {e}", dir.display()),
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn write_file(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) {
    let file =
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let mut out = BufWriter::new(file);
    write(&mut out).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    out.into_inner()
        .unwrap_or_else(|e| panic!("cannot flush {}: {e}", path.display()));
}

fn ms_text(value_us: u64) -> String {
    java_fixed(value_us as f64 / MICROS_PER_MILLI, 3)
}

/// The recorded series: per interval and merged over the run.
struct Series {
    tag: &'static str,
    intervals: Vec<Histogram<u64>>,
    total: Histogram<u64>,
}

fn record_run() -> [Series; 2] {
    let mut rng = fastrand::Rng::with_seed(SEED);
    // `produce` uses the fixed bounds a load generator would pick (1 µs to 60 s); `e2e`
    // auto-resizes, so its intervals carry different highest trackable values.
    let bounded = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let resizing = || Histogram::<u64>::new(3).expect("valid significant digits");
    let mut produce = Series {
        tag: "produce",
        intervals: Vec::new(),
        total: bounded(),
    };
    let mut e2e = Series {
        tag: "e2e",
        intervals: Vec::new(),
        total: resizing(),
    };
    for interval in 0..INTERVALS {
        let mut p = bounded();
        let mut e = resizing();
        for _ in 0..SAMPLES_PER_INTERVAL {
            p.record(latency_us(&mut rng, 900.0)).expect("below 60 s");
            if interval != IDLE_INTERVAL {
                e.record(latency_us(&mut rng, 3_500.0))
                    .expect("auto-resizing");
            }
        }
        produce.total.add(&p).expect("same bounds");
        e2e.total.add(&e).expect("auto-resizing");
        produce.intervals.push(p);
        e2e.intervals.push(e);
    }
    [produce, e2e]
}

fn start_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_714_000_000_250)
}

fn write_files(dir: &Path, run: &[Series; 2]) {
    write_file(&dir.join("run.hlog"), |out| {
        let mut log = HistogramLog::new(out, start_time())?;
        for interval in 0..INTERVALS as usize {
            for series in run {
                let start = Duration::from_secs(interval as u64);
                log.write_interval(
                    start,
                    Duration::from_secs(1),
                    &series.intervals[interval],
                    Some(series.tag),
                )?;
            }
        }
        Ok(())
    });
    for series in run {
        write_file(&dir.join(format!("{}.hgrm", series.tag)), |out| {
            write_hgrm(&series.total, out, MICROS_PER_MILLI)
        });
    }
    let empty = Histogram::<u64>::new(3).expect("valid");
    let mut one = Histogram::<u64>::new(3).expect("valid");
    one.record(1_234).expect("auto-resizing");
    write_file(&dir.join("empty.hgrm"), |out| {
        write_hgrm(&empty, out, MICROS_PER_MILLI)
    });
    write_file(&dir.join("one.hgrm"), |out| {
        write_hgrm(&one, out, MICROS_PER_MILLI)
    });
    let svg = percentile_svg(
        "produce ack & end-to-end",
        &[
            ("produce ack", &run[0].total),
            ("end-to-end", &run[1].total),
        ],
    );
    fs::write(dir.join("run.svg"), svg).expect("write run.svg");
    fs::write(
        dir.join("empty.svg"),
        percentile_svg("idle", &[("produce ack", &empty)]),
    )
    .expect("write empty.svg");
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an unsigned integer, got {v}"))
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

#[test]
fn report_files_read_back_with_hdrhistogram_py() {
    let dir = fresh_dir("report_roundtrip");
    let run = record_run();
    write_files(&dir, &run);
    let json = read_with_python(&dir);

    check_log(&json["run.hlog"], &run);
    for series in &run {
        let name = format!("{}.hgrm", series.tag);
        check_hgrm(&json[name.as_str()], &series.total);
        check_hgrm_against_python_rows(
            &json[name.as_str()],
            &json["run.hlog"]["merged"][series.tag],
        );
    }
    check_small_hgrms(&json);
    check_svgs(&json, &run);
}

fn check_log(log: &Value, run: &[Series; 2]) {
    let header = &log["header"];
    assert_eq!(str_of(&header["format_version"]), "1.3");
    assert_eq!(header["legend"], Value::Bool(true));
    assert_eq!(f64_of(&header["start_time"]), 1_714_000_000.25);
    assert_eq!(f64_of(&header["base_time"]), 1_714_000_000.25);
    assert!(
        str_of(&header["start_time_line"]).ends_with(", Wed Apr 24 23:06:40 UTC 2024]"),
        "{header}"
    );
    assert_eq!(f64_of(&log["reader_start_time"]), 1_714_000_000.25);

    let intervals = log["intervals"].as_array().expect("intervals");
    assert_eq!(intervals.len(), 2 * INTERVALS as usize);
    for (i, got) in intervals.iter().enumerate() {
        let series = &run[i % 2];
        let hist = &series.intervals[i / 2];
        let at = format!("interval {i} ({})", series.tag);
        assert_eq!(str_of(&got["reader_tag"]), series.tag, "{at}");
        assert_eq!(f64_of(&got["start_offset_s"]), (i / 2) as f64, "{at}");
        assert_eq!(f64_of(&got["length_s"]), 1.0, "{at}");
        assert_eq!(u64_of(&got["total_count"]), hist.len(), "{at}");
        assert_eq!(u64_of(&got["max"]), hist.max(), "{at}");
        assert_eq!(
            str_of(&got["interval_max_text"]),
            ms_text(hist.max()),
            "{at}"
        );
        assert_eq!(u64_of(&got["highest_trackable"]), hist.high(), "{at}");
        assert_eq!(u64_of(&got["significant_figures"]), 3, "{at}");
        if !hist.is_empty() {
            assert_eq!(
                u64_of(&got["min"]),
                hist.lowest_equivalent(hist.min()),
                "{at}"
            );
        }
    }
    assert_eq!(
        u64_of(&intervals[2 * IDLE_INTERVAL as usize + 1]["total_count"]),
        0,
        "the idle interval"
    );

    for series in run {
        let merged = &log["merged"][series.tag];
        let total = &series.total;
        assert_eq!(
            u64_of(&merged["total_count"]),
            total.len(),
            "{}",
            series.tag
        );
        assert_eq!(u64_of(&merged["max"]), total.max(), "{}", series.tag);
        for (key, percentile) in [
            ("50", 50.0),
            ("90", 90.0),
            ("99", 99.0),
            ("99.9", 99.9),
            ("100", 100.0),
        ] {
            let python = u64_of(&merged["percentiles"][key]);
            // HdrHistogram_py rounds the target count to nearest, Java and `hdrhistogram` round it
            // up: allow the values one count either side of ours.
            let n = total.len() as f64;
            let quantile = percentile / 100.0;
            let low = total.value_at_quantile(((quantile * n - 1.0) / n).max(0.0));
            let high = total.value_at_quantile(((quantile * n + 1.0) / n).min(1.0));
            assert!(
                low <= python && python <= high,
                "{} p{key}: HdrHistogram_py {python}, hdrhistogram {} (one count either side: {low}..={high})",
                series.tag,
                total.value_at_quantile(quantile)
            );
        }
    }
}

fn check_hgrm(hgrm: &Value, hist: &Histogram<u64>) {
    assert_eq!(hgrm["format_errors"], Value::Array(Vec::new()), "{hgrm}");
    let rows = hgrm["rows"].as_array().expect("rows");
    let ours = percentile_rows(hist, PERCENTILE_TICKS_PER_HALF_DISTANCE);
    assert_eq!(rows.len(), ours.len());
    assert!(
        rows.len() > 50,
        "a 100k-sample run has a long table: {}",
        rows.len()
    );
    for (got, want) in rows.iter().zip(&ours) {
        assert_eq!(str_of(&got["value_text"]), ms_text(want.value));
        assert_eq!(
            str_of(&got["percentile_text"]),
            java_fixed(want.quantile(), 12)
        );
        assert_eq!(u64_of(&got["total_count"]), want.total_count);
        // The count column is exactly the number of values up to the row's bucket.
        assert_eq!(want.total_count, hist.count_between(0, want.value));
    }
    assert_eq!(str_of(&hgrm["max_text"]), ms_text(hist.max()));
    assert_eq!(u64_of(&hgrm["total_count"]), hist.len());
    assert_eq!(u64_of(&hgrm["buckets"]), u64::from(hist.buckets()));
    assert_eq!(u64_of(&hgrm["sub_buckets"]), 2048);
    // The mean and deviation are printed to 3 decimals of a ms: within half a µs of the exact.
    assert!(
        (f64_of(&hgrm["mean"]) - hist.mean() / MICROS_PER_MILLI).abs() <= 0.000_501,
        "{}",
        hgrm["mean"]
    );
    assert!(
        (f64_of(&hgrm["stddev"]) - hist.stdev() / MICROS_PER_MILLI).abs() <= 0.000_501,
        "{}",
        hgrm["stddev"]
    );
}

/// The `.hgrm` rows against the rows Python derives, by Java's PercentileIterator, from the
/// histograms it decoded from the interval log: same values, levels and counts.
fn check_hgrm_against_python_rows(hgrm: &Value, merged: &Value) {
    let rows = hgrm["rows"].as_array().expect("rows");
    let spec = merged["spec_rows"].as_array().expect("spec_rows");
    assert_eq!(
        rows.len(),
        spec.len(),
        "row count: hgrm {} vs Python {}",
        rows.len(),
        spec.len()
    );
    for (got, want) in rows.iter().zip(spec) {
        assert_eq!(
            str_of(&got["value_text"]),
            ms_text(u64_of(&want[0])),
            "{got} vs {want}"
        );
        assert_eq!(
            str_of(&got["percentile_text"]),
            java_fixed(f64_of(&want[1]) / 100.0, 12),
            "{got} vs {want}"
        );
        assert_eq!(got["total_count"], want[2], "{got} vs {want}");
    }
    let python_mean_ms = f64_of(&merged["mean"]) / MICROS_PER_MILLI;
    assert!(
        (f64_of(&hgrm["mean"]) - python_mean_ms).abs() <= 0.000_501,
        "mean vs Python {python_mean_ms}"
    );
    let python_stddev_ms = f64_of(&merged["stddev"]) / MICROS_PER_MILLI;
    assert!(
        (f64_of(&hgrm["stddev"]) - python_stddev_ms).abs() <= 0.000_501,
        "stddev vs Python {python_stddev_ms}"
    );
    assert_eq!(hgrm["sub_buckets"], merged["sub_buckets"]);
}

fn check_small_hgrms(json: &Value) {
    let empty = &json["empty.hgrm"];
    assert_eq!(empty["format_errors"], Value::Array(Vec::new()), "{empty}");
    assert_eq!(empty["rows"], Value::Array(Vec::new()));
    assert_eq!(u64_of(&empty["total_count"]), 0);
    assert_eq!(str_of(&empty["max_text"]), "0.000");

    let one = &json["one.hgrm"];
    assert_eq!(one["format_errors"], Value::Array(Vec::new()), "{one}");
    let rows = one["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{one}");
    assert_eq!(str_of(&rows[0]["percentile_text"]), "0.000000000000");
    assert_eq!(str_of(&rows[1]["percentile_text"]), "1.000000000000");
    assert!(
        rows.iter().all(|r| str_of(&r["value_text"]) == "1.234"),
        "{one}"
    );
    assert_eq!(rows[1]["inverse"], Value::Null);
}

fn check_svgs(json: &Value, run: &[Series; 2]) {
    let svg = &json["run.svg"];
    assert_eq!(str_of(&svg["root"]), "{http://www.w3.org/2000/svg}svg");
    let polylines = svg["polylines"].as_array().expect("polylines");
    for (i, series) in run.iter().enumerate() {
        let (r, g, b) = SERIES_COLOURS[i];
        let stroke = format!("#{r:02X}{g:02X}{b:02X}");
        let lines: Vec<&Value> = polylines
            .iter()
            .filter(|p| str_of(&p["stroke"]) == stroke)
            .collect();
        assert_eq!(lines.len(), 1, "one polyline for {}: {lines:?}", series.tag);
        // A point per finite-percentile row, and the maximum carried to the right edge.
        let rows = percentile_rows(&series.total, PERCENTILE_TICKS_PER_HALF_DISTANCE).len();
        assert_eq!(
            u64_of(&lines[0]["points"]),
            rows as u64,
            "{}: {}",
            series.tag,
            lines[0]
        );
    }
    let texts: Vec<&str> = svg["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(str_of)
        .collect();
    assert!(texts.contains(&"produce ack & end-to-end"), "{texts:?}");
    for (series, name) in run.iter().zip(["produce ack", "end-to-end"]) {
        let legend = format!(
            "{name}: n={}, max {} ms",
            series.total.len(),
            ms_text(series.total.max())
        );
        assert!(texts.contains(&legend.as_str()), "{legend} in {texts:?}");
    }
    for label in ["0%", "90%", "99%", "99.9%", "99.99%"] {
        assert!(texts.contains(&label), "{label} in {texts:?}");
    }

    let empty = &json["empty.svg"];
    let texts: Vec<&str> = empty["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(str_of)
        .collect();
    assert!(texts.contains(&"no samples"), "{texts:?}");
    assert!(texts.contains(&"produce ack: no samples"), "{texts:?}");
}
