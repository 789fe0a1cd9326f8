//! `strand segment inspect FILE` and `strand segment verify DIR`: offline reads of
//! the engine's files. The one part of the CLI that knows Strand's on-disk format
//! (docs/format.md); everything else talks the Kafka protocol.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use strand_engine::batch::{self, BatchHeader};
use strand_engine::constants::SEGMENT_HEADER_BYTES;
use strand_engine::index::Index;
use strand_engine::segment::{parse_segment_file_name, SegmentHeader};

/// What a scan of one segment file found.
#[derive(Debug)]
pub struct SegmentScan {
    pub header: Result<SegmentHeader, &'static str>,
    pub batches: Vec<(u64, BatchHeader)>,
    /// Position after the last valid batch.
    pub end_pos: u64,
    pub file_bytes: u64,
    /// Why the scan stopped before the end of the file with non-zero bytes left.
    pub problem: Option<(u64, String)>,
}

impl SegmentScan {
    pub fn next_offset(&self, base: u64) -> u64 {
        self.batches
            .last()
            .map_or(base, |(_, h)| h.last_offset() as u64 + 1)
    }
}

/// Read a segment and check every batch: length, magic, CRC32C, offset continuity.
pub fn scan(path: &Path) -> Result<SegmentScan> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = SegmentHeader::decode(&bytes);
    let mut out = SegmentScan {
        header,
        batches: Vec::new(),
        end_pos: SEGMENT_HEADER_BYTES,
        file_bytes: bytes.len() as u64,
        problem: None,
    };
    let Ok(h) = out.header else {
        out.problem = Some((0, "bad segment header".into()));
        return Ok(out);
    };
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let mut expected = h.base_offset;
    while pos + batch::LOG_OVERHEAD_BYTES <= bytes.len() {
        let rest = &bytes[pos..];
        if rest[..batch::LOG_OVERHEAD_BYTES].iter().all(|&b| b == 0) {
            break; // zeroes: the preallocated end of the active segment
        }
        match batch::validate(rest) {
            Ok(b) if b.base_offset as u64 == expected => {
                out.batches.push((pos as u64, b));
                expected = b.last_offset() as u64 + 1;
                pos += b.size;
            }
            Ok(b) => {
                out.problem = Some((
                    pos as u64,
                    format!("base offset {} where {expected} was due", b.base_offset),
                ));
                break;
            }
            Err(e) => {
                out.problem = Some((pos as u64, e.to_string()));
                break;
            }
        }
    }
    out.end_pos = pos as u64;
    if out.problem.is_none() && bytes[pos..].iter().any(|&b| b != 0) && pos < bytes.len() {
        out.problem = Some((pos as u64, "non-zero bytes after the last batch".into()));
    }
    Ok(out)
}

fn codec(h: &BatchHeader) -> &'static str {
    ["none", "gzip", "snappy", "lz4", "zstd"]
        .get(usize::from(h.compression()))
        .copied()
        .unwrap_or("?")
}

/// Describe one segment or index file.
pub fn inspect(path: &Path, show_batches: bool) -> Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the path has no file name")?;
    let mut out = String::new();
    if let Some(stem) = name.strip_suffix(".index") {
        let base: u64 = stem
            .parse()
            .context("index files are named <base offset>.index")?;
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let Some(idx) = Index::decode(&bytes, base) else {
            anyhow::bail!(
                "{}: not a valid index for base offset {base}",
                path.display()
            );
        };
        let _ = writeln!(
            out,
            "index {name}: base offset {base}, segment bytes {}, next offset {}, max timestamp {}, {} entries",
            idx.segment_bytes,
            idx.next_offset,
            idx.max_timestamp,
            idx.index.entries().len()
        );
        for e in idx.index.entries() {
            let _ = writeln!(
                out,
                "  offset {:>12}  position {:>10}  max timestamp before {}",
                base + u64::from(e.relative_offset),
                e.position,
                e.max_timestamp_before
            );
        }
        return Ok(out);
    }
    let s = scan(path)?;
    match &s.header {
        Ok(h) => {
            let _ = writeln!(
                out,
                "segment {name}: base offset {}, created {} ms, {} bytes on disk",
                h.base_offset, h.created_ms, s.file_bytes
            );
        }
        Err(reason) => {
            let _ = writeln!(out, "segment {name}: {reason}");
        }
    }
    if show_batches {
        for (pos, b) in &s.batches {
            let _ = writeln!(
                out,
                "  offsets {:>10}..={:<10} pos {:>10} size {:>8} records {:>6} max ts {} codec {} producer {}/{}/{} crc ok",
                b.base_offset,
                b.last_offset(),
                pos,
                b.size,
                b.records_count,
                b.max_timestamp,
                codec(b),
                b.producer_id,
                b.producer_epoch,
                b.base_sequence
            );
        }
    }
    let base = s.header.map_or(0, |h| h.base_offset);
    let _ = writeln!(
        out,
        "{} batches, offsets {}..{}, data ends at byte {}",
        s.batches.len(),
        base,
        s.next_offset(base),
        s.end_pos
    );
    if let Some((pos, reason)) = &s.problem {
        let _ = writeln!(out, "PROBLEM at byte {pos}: {reason}");
    }
    Ok(out)
}

fn segment_files(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            segment_files(&path, found)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_segment_file_name)
            .is_some()
        {
            found.push(path);
        }
    }
    Ok(())
}

/// Check every segment (and its index) under `dir`. Returns the report and whether
/// everything was sound.
pub fn verify(dir: &Path) -> Result<(String, bool)> {
    let mut files = Vec::new();
    segment_files(dir, &mut files)?;
    files.sort();
    let mut out = String::new();
    let mut ok = true;
    let (mut batches, mut bytes) = (0usize, 0u64);
    for path in &files {
        let s = scan(path)?;
        batches += s.batches.len();
        bytes += s.end_pos;
        let name = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        if let Some((pos, reason)) = &s.problem {
            ok = false;
            let _ = writeln!(out, "BAD   {name}: at byte {pos}: {reason}");
            continue;
        }
        let base = s.header.map_or(0, |h| h.base_offset);
        let index_path = path.with_extension("index");
        let index_note = match std::fs::read(&index_path) {
            Err(_) => "no index (active segment, or rebuilt at open)".to_string(),
            Ok(raw) => match Index::decode(&raw, base) {
                None => {
                    ok = false;
                    "index is corrupt (rebuilt at open)".to_string()
                }
                Some(i)
                    if i.segment_bytes != s.file_bytes || i.next_offset != s.next_offset(base) =>
                {
                    ok = false;
                    format!(
                        "index disagrees: says {} bytes / next offset {}, segment has {} / {}",
                        i.segment_bytes,
                        i.next_offset,
                        s.file_bytes,
                        s.next_offset(base)
                    )
                }
                Some(_) => "index ok".to_string(),
            },
        };
        let _ = writeln!(
            out,
            "ok    {name}: {} batches, offsets {base}..{}, {index_note}",
            s.batches.len(),
            s.next_offset(base)
        );
    }
    let _ = writeln!(
        out,
        "{} segments, {batches} batches, {bytes} bytes checked: {}",
        files.len(),
        if ok {
            "every CRC verified"
        } else {
            "PROBLEMS FOUND"
        }
    );
    Ok((out, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_segment(dir: &Path, base: u64, batches: usize) -> PathBuf {
        let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        SegmentHeader {
            base_offset: base,
            created_ms: 1,
        }
        .encode_into(&mut bytes);
        let mut next = base;
        for i in 0..batches {
            let mut b = batch::build(1000 + i as i64, 2, b"value");
            batch::set_base_offset(&mut b, next as i64);
            next += 2;
            bytes.extend_from_slice(&b);
        }
        bytes.extend_from_slice(&[0u8; 8192]); // preallocated tail
        let path = dir.join(format!("{base:020}.log"));
        std::fs::write(&path, bytes).expect("write segment");
        path
    }

    #[test]
    fn verify_passes_sound_segments_and_names_a_flipped_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("topics").join("t-0");
        std::fs::create_dir_all(&part).expect("mkdir");
        let path = write_segment(&part, 0, 10);
        let (report, ok) = verify(dir.path()).expect("verify");
        assert!(ok, "{report}");
        assert!(report.contains("10 batches"), "{report}");
        let text = inspect(&path, true).expect("inspect");
        assert!(text.contains("offsets 0..20"), "{text}");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[SEGMENT_HEADER_BYTES as usize + 200] ^= 0x40;
        std::fs::write(&path, bytes).expect("write");
        let (report, ok) = verify(dir.path()).expect("verify");
        assert!(!ok);
        assert!(report.contains("BAD") && report.contains("CRC"), "{report}");
    }
}
