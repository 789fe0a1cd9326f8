//! The HdrHistogram interval log (`.hlog`) of a whole run.
//!
//! The layout is what Java's `HistogramLogWriter` writes in log format 1.3 (jHiccup, Cassandra's
//! stress tool and HdrHistogram's `HistogramLogProcessor` use it):
//!
//! ```text
//! #[Logged with strand-bench 0.1.0]
//! #[Histogram log format version 1.3]
//! #[StartTime: 1700000000.123 (seconds since epoch), Tue Nov 14 22:13:20 UTC 2023]
//! #[BaseTime: 1700000000.123 (seconds since epoch)]
//! #[Values are microseconds; Interval_Max is milliseconds (max / 1000.0)]
//! "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
//! 0.000,1.000,12.415,HISTFAAAA...
//! Tag=e2e,0.000,1.000,15.007,HISTFAAAA...
//! ```
//!
//! - `StartTimestamp` is seconds since `BaseTime` (both headers carry the run's start, so
//!   readers, Java's included, treat the timestamps as offsets rather than guess).
//! - `Interval_Max` is the interval's maximum divided by 1000, i.e. in milliseconds: Java writes
//!   `max / maxValueUnitRatio` and its readers only display it; the exact maximum is inside the
//!   histogram.
//! - The histogram is the V2 deflate encoding (cookie `0x1c849314`), base64 with padding, as
//!   Java's `encodeIntoCompressedByteBuffer` and `hdrhistogram`'s `V2DeflateSerializer` produce.
//! - Java prints the StartTime date in the local zone; we print it in UTC, which it also is.
//!
//! `hdrhistogram::serialization::interval_log::IntervalLogWriter` writes neither the format
//! version nor the legend, writes the StartTime without its date, and borrows its writer, so it
//! cannot live in a struct beside it: this writer formats the lines itself and uses the crate only
//! to encode the histograms.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::Tag;
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::MICROS_PER_MILLI;

/// The interval log format version written in the header (1.3 added tags).
pub const LOG_FORMAT_VERSION: &str = "1.3";

/// Writes one interval histogram per line to `out`, flushing after every line, so a run stopped
/// by Ctrl-C leaves a log that is complete up to its last interval.
pub struct HistogramLog<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
    /// Reused between intervals: the encoded histogram and the line being formatted.
    encoded: Vec<u8>,
    line: String,
    intervals_written: u64,
}

impl<W: Write> fmt::Debug for HistogramLog<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramLog")
            .field("intervals_written", &self.intervals_written)
            .finish_non_exhaustive()
    }
}

impl<W: Write> HistogramLog<W> {
    /// Writes the header (format version, `start_time` as both StartTime and BaseTime, units,
    /// legend) and flushes it.
    pub fn new(mut out: W, start_time: SystemTime) -> io::Result<Self> {
        let since_epoch = start_time.duration_since(UNIX_EPOCH).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "histogram log start time is before 1970",
            )
        })?;
        // Java keeps the start in whole milliseconds.
        let millis = since_epoch.as_millis();
        let (secs, ms) = (millis / 1000, millis % 1000);
        let header = format!(
            "#[Logged with strand-bench {version}]\n\
             #[Histogram log format version {LOG_FORMAT_VERSION}]\n\
             #[StartTime: {secs}.{ms:03} (seconds since epoch), {date}]\n\
             #[BaseTime: {secs}.{ms:03} (seconds since epoch)]\n\
             #[Values are microseconds; Interval_Max is milliseconds (max / {MICROS_PER_MILLI:.1})]\n\
             \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
            version = env!("CARGO_PKG_VERSION"),
            date = java_date_utc(since_epoch.as_secs()),
        );
        out.write_all(header.as_bytes())?;
        out.flush()?;
        Ok(HistogramLog {
            out,
            serializer: V2DeflateSerializer::new(),
            encoded: Vec::new(),
            line: String::new(),
            intervals_written: 0,
        })
    }

    /// Appends the interval that started `start_offset` after the log's start time and lasted
    /// `length`, and flushes it.
    ///
    /// Intervals should come in order of `start_offset` (readers stop at the first one past the
    /// range they look for). `tag` names the series when one log holds several (`produce`,
    /// `e2e`); it may not be empty nor contain `,`, a space or a line break.
    pub fn write_interval(
        &mut self,
        start_offset: Duration,
        length: Duration,
        hist: &Histogram<u64>,
        tag: Option<&str>,
    ) -> io::Result<()> {
        self.line.clear();
        if let Some(tag) = tag {
            if tag.is_empty() || Tag::new(tag).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "histogram log tag {tag:?} is empty or contains ',', ' ', '\\r' or '\\n'"
                    ),
                ));
            }
            self.line.push_str("Tag=");
            self.line.push_str(tag);
            self.line.push(',');
        }
        self.line.push_str(&format!(
            "{},{},{:.3},",
            SecondsToMillis(start_offset),
            SecondsToMillis(length),
            hist.max() as f64 / MICROS_PER_MILLI
        ));
        self.encoded.clear();
        self.serializer
            .serialize(hist, &mut self.encoded)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("encoding an interval histogram: {e}"),
                )
            })?;
        base64::engine::general_purpose::STANDARD.encode_string(&self.encoded, &mut self.line);
        self.line.push('\n');
        // One write per line, so a crash tears at most the line being written.
        self.out.write_all(self.line.as_bytes())?;
        self.out.flush()?;
        self.intervals_written += 1;
        Ok(())
    }

    /// How many interval lines this log holds.
    pub fn intervals_written(&self) -> u64 {
        self.intervals_written
    }

    /// The writer, with everything written so far flushed into it.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A duration printed as seconds with 3 decimals, rounded to the nearest millisecond (Java's
/// `%.3f` of the seconds), computed in integers so that no float rounding shows.
/// (Named for what it prints: a duration as seconds to the millisecond.)
struct SecondsToMillis(Duration);

impl fmt::Display for SecondsToMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = (self.0.as_nanos() + 500_000) / 1_000_000;
        write!(f, "{}.{:03}", millis / 1000, millis % 1000)
    }
}

/// `secs` since the epoch the way Java's `Date.toString()` prints it in UTC:
/// `Tue Nov 14 22:13:20 UTC 2023`.
fn java_date_utc(secs: u64) -> String {
    // 1970-01-01 was a Thursday.
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let second_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        year
    )
}

/// The proleptic Gregorian (year, month 1-12, day 1-31) of a day count since 1970-01-01, after
/// Howard Hinnant's `civil_from_days`, for days on or after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    use super::*;

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
    }

    fn hist_of(values: &[u64]) -> Histogram<u64> {
        let mut hist = Histogram::<u64>::new(3).expect("3 significant digits are valid");
        for &v in values {
            hist.record(v)
                .expect("auto-resizing histogram records any value");
        }
        hist
    }

    fn text(log: HistogramLog<Vec<u8>>) -> String {
        String::from_utf8(log.into_inner()).expect("the log is ASCII")
    }

    #[test]
    fn header_is_java_layout() {
        let log = HistogramLog::new(Vec::new(), start()).expect("writing to a Vec cannot fail");
        let text = text(log);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("#[Logged with strand-bench {}]", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(lines[1], "#[Histogram log format version 1.3]");
        assert_eq!(
            lines[2],
            "#[StartTime: 1700000000.123 (seconds since epoch), Tue Nov 14 22:13:20 UTC 2023]"
        );
        assert_eq!(
            lines[3],
            "#[BaseTime: 1700000000.123 (seconds since epoch)]"
        );
        assert!(
            lines[4].starts_with("#[Values are microseconds"),
            "{}",
            lines[4]
        );
        assert_eq!(
            lines[5],
            r#""StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram""#
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn start_before_epoch_is_an_error() {
        let err = HistogramLog::new(Vec::new(), UNIX_EPOCH - Duration::from_secs(1))
            .expect_err("pre-1970 start");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn intervals_read_back_with_the_crate_parser() {
        let mut log = HistogramLog::new(Vec::new(), start()).expect("header");
        let first = hist_of(&[1_000, 2_000, 250_000]);
        let second = hist_of(&[]);
        let third = hist_of(&[u64::MAX / 4, 7]);
        log.write_interval(Duration::ZERO, Duration::from_secs(1), &first, None)
            .expect("interval");
        log.write_interval(
            Duration::from_millis(1_000),
            Duration::from_micros(999_999_700),
            &second,
            Some("e2e"),
        )
        .expect("interval");
        log.write_interval(
            Duration::from_secs(2),
            Duration::from_secs(1),
            &third,
            Some("produce"),
        )
        .expect("interval");
        assert_eq!(log.intervals_written(), 3);
        let text = text(log);

        let interval_lines: Vec<&str> = text.lines().skip(6).collect();
        assert!(
            interval_lines[0].starts_with("0.000,1.000,250.111,HISTF"),
            "{}",
            interval_lines[0]
        );
        // 999.9997 s rounds to 1000.000; an empty histogram's max is 0.
        assert!(
            interval_lines[1].starts_with("Tag=e2e,1.000,1000.000,0.000,HISTF"),
            "{}",
            interval_lines[1]
        );
        assert!(
            interval_lines[2].starts_with("Tag=produce,2.000,1.000,"),
            "{}",
            interval_lines[2]
        );

        let entries: Vec<LogEntry<'_>> = IntervalLogIterator::new(text.as_bytes())
            .collect::<Result<_, _>>()
            .expect("the crate's parser reads the log");
        assert_eq!(entries.len(), 5, "StartTime, BaseTime and three intervals");
        assert!(
            matches!(entries[0], LogEntry::StartTime(d) if d == Duration::from_millis(1_700_000_000_123))
        );
        assert!(
            matches!(entries[1], LogEntry::BaseTime(d) if d == Duration::from_millis(1_700_000_000_123))
        );
        let mut deserializer = Deserializer::new();
        for (entry, (hist, tag)) in entries[2..].iter().zip([
            (&first, None),
            (&second, Some("e2e")),
            (&third, Some("produce")),
        ]) {
            let LogEntry::Interval(interval) = entry else {
                panic!("expected an interval, got {entry:?}");
            };
            assert_eq!(interval.tag().map(|t| t.as_str()), tag);
            assert_eq!(interval.max(), hist.max() as f64 / 1000.0);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(interval.encoded_histogram())
                .expect("the histogram column is base64");
            let decoded: Histogram<u64> = deserializer
                .deserialize(&mut bytes.as_slice())
                .expect("the histogram column is V2 deflate");
            assert_eq!(&decoded, hist);
        }
    }

    #[test]
    fn bad_tags_are_rejected_and_nothing_is_written() {
        let mut log = HistogramLog::new(Vec::new(), start()).expect("header");
        for tag in ["", "a,b", "a b", "a\nb"] {
            let err = log.write_interval(
                Duration::ZERO,
                Duration::from_secs(1),
                &hist_of(&[1]),
                Some(tag),
            );
            assert!(
                matches!(err, Err(ref e) if e.kind() == io::ErrorKind::InvalidInput),
                "{tag:?}: {err:?}"
            );
        }
        assert_eq!(log.intervals_written(), 0);
        assert_eq!(text(log).lines().count(), 6);
    }

    /// A writer that counts flushes, to check that every line is flushed.
    #[derive(Debug, Default)]
    struct CountingWriter {
        bytes: Vec<u8>,
        flushes: usize,
    }

    impl Write for CountingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn every_line_is_flushed() {
        let mut log = HistogramLog::new(CountingWriter::default(), start()).expect("header");
        for second in 0..3 {
            log.write_interval(
                Duration::from_secs(second),
                Duration::from_secs(1),
                &hist_of(&[5]),
                None,
            )
            .expect("interval");
        }
        let out = log.into_inner();
        assert_eq!(out.flushes, 4, "the header and each of the three intervals");
        assert!(out.bytes.ends_with(b"\n"));
    }

    #[test]
    fn write_errors_are_returned() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = HistogramLog::new(Broken, start()).expect_err("the header write fails");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn dates_match_java_date_to_string_in_utc() {
        assert_eq!(java_date_utc(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date_utc(951_782_400), "Tue Feb 29 00:00:00 UTC 2000");
        assert_eq!(java_date_utc(1_700_000_000), "Tue Nov 14 22:13:20 UTC 2023");
        assert_eq!(java_date_utc(4_107_542_399), "Sun Feb 28 23:59:59 UTC 2100");
    }

    #[test]
    fn millis_round_to_nearest() {
        assert_eq!(
            SecondsToMillis(Duration::from_micros(1_499)).to_string(),
            "0.001"
        );
        assert_eq!(
            SecondsToMillis(Duration::from_micros(1_500)).to_string(),
            "0.002"
        );
        assert_eq!(
            SecondsToMillis(Duration::from_secs(3_600)).to_string(),
            "3600.000"
        );
    }
}
