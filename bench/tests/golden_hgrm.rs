//! strand-bench's `.hgrm` writer against the reference implementation: the files in
//! `tests/golden/` were written by Java's HdrHistogram 2.1.11
//! (`outputPercentileDistribution(out, 5, 1000.0)`, see `GoldenHgrm.java`) for the same
//! values; ours must match them byte for byte.

use strand_bench::recorder::new_histogram;
use strand_bench::report::hgrm::write_hgrm;

fn ours(values: impl Iterator<Item = u64>) -> String {
    let mut h = new_histogram();
    for v in values {
        h.record(v).expect("in range");
    }
    let mut out = Vec::new();
    write_hgrm(&h, &mut out, 1000.0).expect("write to memory");
    String::from_utf8(out).expect("utf-8")
}

fn golden(name: &str) -> String {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn one_to_ten_matches_java() {
    assert_eq!(ours(1..=10), golden("one-to-ten.hgrm"));
}

#[test]
fn a_wide_distribution_with_outliers_matches_java() {
    let values = (0u64..20_000).map(|i| {
        1 + (i * i) % 50_000
            + if i % 97 == 0 { 1_000_000 } else { 0 }
            + if i % 4999 == 0 { 900_000_000 } else { 0 }
    });
    let ours = ours(values);
    let golden = golden("mixed.hgrm");
    for (n, (a, b)) in ours.lines().zip(golden.lines()).enumerate() {
        assert_eq!(a, b, "line {}", n + 1);
    }
    assert_eq!(ours, golden);
}
