//! A partition log: an ordered set of segments, the write pipeline with group commit,
//! reads from the tail cache or the disk, truncation, retention and recovery.
//!
//! The write path (see ARCHITECTURE.md):
//! 1. `append` validates every batch (length, magic, CRC32C), assigns offsets by
//!    rewriting `baseOffset`, keeps the batch in the tail cache and copies it into the
//!    active DMA write buffer. That is the only copy.
//! 2. The flusher task writes full buffers as soon as they fill (several in flight),
//!    and whenever the disk is idle it writes the partial buffer too, so write sizes
//!    grow with load. The partial last page is rewritten by the next write (see
//!    docs/format.md, "The partial last page").
//! 3. A waiter for "durable >= offset" asks for a sync; one `fdatasync` covers every
//!    write completed before it started (group commit), and writes keep going while
//!    it runs.
//!
//! A `Log` lives on the shard that owns its partition and is never shared across
//! threads (it is `!Send`).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;
use glommio::Task;

use crate::batch::{self, BatchHeader};
use crate::config::LogConfig;
use crate::constants::{page_down, page_up, COLD_READ_BYTES_MIN, PAGE_BYTES, SEGMENT_HEADER_BYTES};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::segment::{
    index_file_name, parse_segment_file_name, scan, segment_file_name, BatchCursor, Next, ScanFrom,
    Segment, SegmentHeader,
};
use crate::signal::{Notify, WakerSet};
use crate::storage::{Storage, StorageFile, WriteBuffer};
use crate::tail_cache::{CachedBatch, TailCache};

/// Longest a wanted sync waits for writes in flight to land first.
const SYNC_DEFER_MAX: Duration = Duration::from_millis(4);

/// Milliseconds since the Unix epoch; injectable so tests control time.
pub type Clock = Rc<dyn Fn() -> i64>;

/// The system clock.
pub fn system_clock() -> Clock {
    Rc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub start_offset: u64,
}

/// Sizes and offsets of a log, for status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub start_offset: u64,
    pub end_offset: u64,
    pub durable_offset: u64,
    pub segments: usize,
    pub size_bytes: u64,
    pub tail_cache_bytes: usize,
}

/// A full or partial write buffer handed to the flusher.
struct Chunk<B> {
    segment: u64,
    buf: Rc<B>,
    pos: u64,
    /// File position after the last valid byte in the chunk.
    end_pos: u64,
    /// Offset after the last batch that ends inside the chunk.
    end_offset: u64,
    /// Ends inside a page that the next write rewrites.
    partial: bool,
    seq: u64,
}

struct InFlight {
    seq: u64,
    segment: u64,
    end_pos: u64,
    end_offset: u64,
    done: bool,
}

/// The active write buffer: bytes for file positions `[pos, pos + len)`, of which the
/// first `written_len` are already on disk (the rewritten partial page).
struct WriteBuf<B> {
    buf: Option<B>,
    pos: u64,
    len: usize,
    written_len: usize,
    /// Offset after the last whole batch in the buffer.
    end_offset: u64,
}

struct State<F: StorageFile> {
    segments: BTreeMap<u64, Segment<F>>,
    start_offset: u64,
    next_offset: u64,
    /// Every offset below this has been written (not necessarily synced).
    written_offset: u64,
    /// Every offset below this survives a crash.
    durable_offset: u64,
    /// Some waiter needs offsets below this durable.
    sync_wanted: u64,
    tail: TailCache,
    wbuf: WriteBuf<F::Buffer>,
    queue: VecDeque<Chunk<F::Buffer>>,
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// The last issued chunk was partial: the next one rewrites its last page, so it
    /// must not be in flight at the same time.
    overlap_guard: bool,
    sync_in_flight: bool,
    /// When a wanted sync was first held back for writes in flight.
    sync_deferred_since: Option<Instant>,
    /// Files with completed writes not yet covered by a sync.
    dirty: Vec<Rc<F>>,
    /// Segments rolled away from, waiting to be sealed once fully written.
    pending_seal: Vec<u64>,
    sealing: bool,
    /// A retryable write failure (disk full): appends are refused until a retry works.
    write_error: Option<Error>,
    /// A fatal failure (failed sync or I/O error): the log refuses writes until reopened.
    failure: Option<Error>,
    closed: bool,
}

struct Inner<S: Storage> {
    storage: Rc<S>,
    dir: PathBuf,
    config: LogConfig,
    clock: Clock,
    state: RefCell<State<S::File>>,
    flusher_wake: Notify,
    waiters: WakerSet,
    append_lock: Semaphore,
    /// (retention_bytes, retention_ms): changeable while the log is open.
    retention: std::cell::Cell<(Option<u64>, Option<u64>)>,
}

/// A partition log. See the module documentation.
pub struct Log<S: Storage> {
    inner: Rc<Inner<S>>,
    /// Dropping the log cancels the flusher: unwritten appends are lost, as in a crash.
    _flusher: Task<()>,
}

impl<S: Storage> std::fmt::Debug for Log<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("dir", &self.inner.dir).finish()
    }
}

impl<S: Storage> Log<S> {
    /// Open (recovering) or create the log in `dir`.
    pub async fn open(storage: Rc<S>, dir: &Path, config: LogConfig) -> Result<Self> {
        Self::open_with_clock(storage, dir, config, system_clock()).await
    }

    pub async fn open_with_clock(
        storage: Rc<S>,
        dir: &Path,
        config: LogConfig,
        clock: Clock,
    ) -> Result<Self> {
        config.validate()?;
        storage
            .create_dir_all(dir)
            .await
            .map_err(|e| Error::io("creating", dir, e))?;
        let state = recover(&*storage, dir, &config, &clock).await?;
        let retention = (config.retention_bytes, config.retention_ms);
        let inner = Rc::new(Inner {
            storage,
            dir: dir.to_path_buf(),
            config,
            clock,
            state: RefCell::new(state),
            flusher_wake: Notify::default(),
            waiters: WakerSet::default(),
            append_lock: Semaphore::new(1),
            retention: std::cell::Cell::new(retention),
        });
        let flusher = glommio::spawn_local(flusher(inner.clone()));
        Ok(Self {
            inner,
            _flusher: flusher,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// First offset still in the log.
    pub fn start_offset(&self) -> u64 {
        self.inner.state.borrow().start_offset
    }

    /// Offset the next append gets (the log end offset).
    pub fn end_offset(&self) -> u64 {
        self.inner.state.borrow().next_offset
    }

    /// Every offset below this survives a crash.
    pub fn durable_offset(&self) -> u64 {
        self.inner.state.borrow().durable_offset
    }

    /// Change the retention limits (applied by the next [`Self::apply_retention`]).
    pub fn set_retention(&self, retention_bytes: Option<u64>, retention_ms: Option<u64>) {
        self.inner.retention.set((retention_bytes, retention_ms));
    }

    /// Ask for everything appended so far to become durable, without waiting.
    pub fn request_durable(&self) {
        let mut st = self.inner.state.borrow_mut();
        if st.sync_wanted < st.next_offset {
            st.sync_wanted = st.next_offset;
            drop(st);
            self.inner.flusher_wake.notify();
        }
    }

    /// Base offset of the active segment: recovery scans from here.
    pub fn active_segment_base(&self) -> u64 {
        self.inner.state.borrow().active_base()
    }

    /// The base offset of the newest segments holding at least `bytes` of data (or
    /// the log start): where to read from to see the most recent `bytes`.
    pub fn recent_start(&self, bytes: u64) -> u64 {
        let st = self.inner.state.borrow();
        let mut total = 0;
        for seg in st.segments.values().rev() {
            total += seg.data_bytes();
            if total >= bytes {
                return seg.base_offset.max(st.start_offset);
            }
        }
        st.start_offset
    }

    /// Wait until the durable offset moves past `offset` or `deadline` passes.
    /// Returns the durable offset then.
    pub async fn wait_durable_past(&self, offset: u64, deadline: std::time::Instant) -> u64 {
        let inner = &self.inner;
        let timeout = async {
            glommio::timer::sleep(deadline.saturating_duration_since(std::time::Instant::now()))
                .await;
        };
        let wait = poll_fn(|cx| {
            let st = inner.state.borrow();
            if st.durable_offset > offset || st.failure.is_some() || st.closed {
                return Poll::Ready(());
            }
            inner.waiters.register(cx.waker());
            Poll::Pending
        });
        futures_lite::future::or(wait, timeout).await;
        self.durable_offset()
    }

    pub fn stats(&self) -> LogStats {
        let st = self.inner.state.borrow();
        LogStats {
            start_offset: st.start_offset,
            end_offset: st.next_offset,
            durable_offset: st.durable_offset,
            segments: st.segments.len(),
            size_bytes: st.segments.values().map(|s| s.end_pos).sum(),
            tail_cache_bytes: st.tail.bytes(),
        }
    }

    /// Append one or more concatenated RecordBatch v2 blobs. Every batch is validated
    /// before anything is written; offsets are assigned by rewriting `baseOffset`.
    /// Returns once the batches are readable (not yet durable: see [`Self::wait_durable`]).
    pub async fn append(&self, mut batches: BytesMut) -> Result<AppendOutcome> {
        let headers = batch::validate_all(&batches)
            .map_err(|(position, source)| Error::InvalidBatch { position, source })?;
        let total: usize = headers.iter().map(|h| h.size).sum();
        debug_assert_eq!(total, batches.len());
        let _permit = self
            .inner
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Closed)?;
        self.wait_for_queue_space().await?;
        if self.needs_roll(total) {
            self.roll().await?;
        }
        let mut st = self.inner.state.borrow_mut();
        st.check_writable()?;
        let base_offset = st.next_offset;
        let mut next = base_offset;
        let mut position = 0;
        for h in &headers {
            batch::set_base_offset(&mut batches[position..], next as i64);
            position += h.size;
            next += h.offset_count();
        }
        let frozen = batches.freeze();
        let mut position = 0;
        let mut max_timestamp = i64::MIN;
        let mut next = base_offset;
        for h in &headers {
            let header = BatchHeader {
                base_offset: next as i64,
                ..*h
            };
            let bytes = frozen.slice(position..position + h.size);
            st.put(&self.inner.config, header, bytes);
            position += h.size;
            next = header.last_offset() as u64 + 1;
            max_timestamp = max_timestamp.max(h.max_timestamp);
        }
        drop(st);
        self.inner.flusher_wake.notify();
        Ok(AppendOutcome {
            base_offset,
            last_offset: next - 1,
            max_timestamp,
        })
    }

    /// Wait until `offset` is durable (survives a crash). Asks for a sync if needed;
    /// concurrent waiters share one.
    pub async fn wait_durable(&self, offset: u64) -> Result<()> {
        self.wait_durable_below(offset + 1).await
    }

    /// Make everything appended so far durable.
    pub async fn flush(&self) -> Result<u64> {
        let end = self.end_offset();
        self.wait_durable_below(end).await?;
        Ok(end)
    }

    async fn wait_durable_below(&self, end: u64) -> Result<()> {
        let inner = &self.inner;
        poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            if st.durable_offset >= end {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = st.failure.as_ref().or(st.write_error.as_ref()) {
                return Poll::Ready(Err(e.duplicate()));
            }
            if end > st.next_offset {
                return Poll::Ready(Err(Error::OffsetOutOfRange {
                    offset: end - 1,
                    start: st.start_offset,
                    end: st.next_offset,
                }));
            }
            if st.sync_wanted < end {
                st.sync_wanted = end;
                inner.flusher_wake.notify();
            }
            inner.waiters.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    async fn wait_for_queue_space(&self) -> Result<()> {
        let inner = &self.inner;
        poll_fn(|cx| {
            let st = inner.state.borrow();
            if let Err(e) = st.check_writable() {
                return Poll::Ready(Err(e));
            }
            if st.queue.len() < inner.config.writes_in_flight_max {
                return Poll::Ready(Ok(()));
            }
            inner.waiters.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Wait until every appended byte is written and no sync or seal is running.
    async fn wait_idle(&self) -> Result<()> {
        let inner = &self.inner;
        poll_fn(|cx| {
            let st = inner.state.borrow();
            if let Some(e) = st.failure.as_ref().or(st.write_error.as_ref()) {
                return Poll::Ready(Err(e.duplicate()));
            }
            let idle = st.queue.is_empty()
                && st.in_flight.is_empty()
                && st.wbuf.len == st.wbuf.written_len
                && !st.sync_in_flight
                && !st.sealing
                && st.pending_seal.is_empty();
            if idle {
                return Poll::Ready(Ok(()));
            }
            inner.flusher_wake.notify();
            inner.waiters.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    fn needs_roll(&self, incoming: usize) -> bool {
        let st = self.inner.state.borrow();
        let Some(active) = st.segments.values().next_back() else {
            return true;
        };
        if active.is_empty() {
            return false;
        }
        // Index entries hold offsets relative to the segment base in a u32.
        let offsets_full = st.next_offset - active.base_offset > u64::from(u32::MAX / 2);
        let full =
            offsets_full || active.end_pos + incoming as u64 > self.inner.config.segment_bytes_max;
        let age = (self.inner.clock)() - active.created_ms;
        full || age >= self.inner.config.segment_age_ms_max as i64
    }

    /// Start a new segment at the log end. The old one is sealed by the flusher once
    /// all its bytes are written.
    async fn roll(&self) -> Result<()> {
        let inner = &self.inner;
        let base = inner.state.borrow().next_offset;
        let segment = create_segment(
            &*inner.storage,
            &inner.dir,
            base,
            (inner.clock)(),
            &inner.config,
        )
        .await?;
        let mut st = inner.state.borrow_mut();
        let old = st.active_base();
        st.seal_partial_buffer();
        st.pending_seal.push(old);
        st.segments.insert(base, segment);
        st.wbuf = WriteBuf {
            buf: None,
            pos: SEGMENT_HEADER_BYTES,
            len: 0,
            written_len: 0,
            end_offset: base,
        };
        drop(st);
        inner.flusher_wake.notify();
        Ok(())
    }

    /// Whole batches from the one holding `offset`, up to about `max_bytes` (always
    /// at least one batch), up to the log end.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>> {
        self.read_until(offset, max_bytes, u64::MAX).await
    }

    /// Like [`Self::read`], but no batch starting at or after `end_offset` (for the
    /// high watermark). Every batch returned from disk has had its CRC verified.
    pub async fn read_until(
        &self,
        offset: u64,
        max_bytes: usize,
        end_offset: u64,
    ) -> Result<Vec<Bytes>> {
        loop {
            let target = {
                let st = self.inner.state.borrow();
                if offset < st.start_offset || offset > st.next_offset {
                    return Err(Error::OffsetOutOfRange {
                        offset,
                        start: st.start_offset,
                        end: st.next_offset,
                    });
                }
                let end_offset = end_offset.min(st.next_offset);
                if offset >= end_offset {
                    return Ok(Vec::new());
                }
                if st.tail.first_offset().is_some_and(|first| first <= offset) {
                    return Ok(st.tail.read(offset, max_bytes, end_offset));
                }
                let Some((_, seg)) = st.segments.range(..=offset).next_back() else {
                    return Ok(Vec::new());
                };
                let floor = seg.index.floor_offset((offset - seg.base_offset) as u32);
                let at = ColdRead {
                    start_pos: floor.map_or(SEGMENT_HEADER_BYTES, |e| u64::from(e.position)),
                    start_offset: floor.map_or(seg.base_offset, |e| {
                        seg.base_offset + u64::from(e.relative_offset)
                    }),
                    limit_pos: seg.written_pos,
                    sealed: seg.sealed,
                };
                (
                    seg.file.clone(),
                    seg.path.clone(),
                    at,
                    seg.next_offset,
                    end_offset,
                )
            };
            let (file, path, at, seg_next, end_offset) = target;
            let batches = read_from_disk(&*file, &path, at, offset, max_bytes, end_offset).await?;
            if !batches.is_empty() {
                // A truncation may have raced this read: never return what it removed.
                let st = self.inner.state.borrow();
                let keep = batches
                    .into_iter()
                    .filter(|b| {
                        batch::parse_header(b)
                            .map(|h| (h.base_offset as u64) < st.next_offset)
                            .unwrap_or(false)
                    })
                    .collect();
                return Ok(keep);
            }
            if offset < seg_next {
                return Ok(Vec::new());
            }
            // `offset` is exactly where this segment ends: read on in the next one.
        }
    }

    /// The first batch holding a record with timestamp >= `ts`, judged by the batch
    /// `maxTimestamp` (the caller finds the record inside). None when every batch is
    /// older.
    pub async fn find_by_timestamp(&self, ts: i64) -> Result<Option<(u64, Bytes)>> {
        let candidates: Vec<_> = {
            let st = self.inner.state.borrow();
            st.segments
                .values()
                .filter(|s| s.max_timestamp >= ts)
                .map(|s| {
                    let pos = s
                        .index
                        .floor_timestamp(ts)
                        .map_or(SEGMENT_HEADER_BYTES, |e| u64::from(e.position));
                    (
                        s.file.clone(),
                        s.path.clone(),
                        pos,
                        s.written_pos.min(s.end_pos),
                    )
                })
                .collect()
        };
        for (file, path, pos, limit) in candidates {
            let mut cursor = BatchCursor::new(&*file, &path, pos, limit);
            loop {
                match cursor.next_batch(COLD_READ_BYTES_MIN).await? {
                    Next::Batch(h, bytes) if h.max_timestamp >= ts => {
                        return Ok(Some((h.base_offset as u64, bytes)));
                    }
                    Next::Batch(..) => continue,
                    Next::End | Next::Incomplete { .. } => break,
                    Next::Invalid(reason) => {
                        return Err(Error::Corrupt {
                            path: path.clone(),
                            position: cursor.pos,
                            reason,
                        })
                    }
                }
            }
        }
        // Not yet written: look in the tail cache.
        let st = self.inner.state.borrow();
        let from = st.tail.first_offset().unwrap_or(st.next_offset);
        let found = st
            .tail
            .iter_from(from)
            .find(|b| b.max_timestamp >= ts)
            .map(|b| (b.base_offset, b.bytes.clone()));
        Ok(found)
    }

    /// Remove every batch at or after `offset`, which must be a batch boundary in
    /// `[start_offset, end_offset]`. Durable once this returns.
    pub async fn truncate_to(&self, offset: u64) -> Result<()> {
        let inner = &self.inner;
        let _permit = inner
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Closed)?;
        {
            let st = inner.state.borrow();
            if offset < st.start_offset || offset > st.next_offset {
                return Err(Error::InvalidTruncation {
                    offset,
                    reason: "offset is outside the log",
                });
            }
            if offset == st.next_offset {
                return Ok(());
            }
        }
        self.wait_idle().await?;
        // Find the batch boundary before changing anything.
        let (base, file, path, pos, max_ts) = {
            let st = inner.state.borrow();
            let (&base, seg) =
                st.segments
                    .range(..=offset)
                    .next_back()
                    .ok_or(Error::InvalidTruncation {
                        offset,
                        reason: "no segment holds it",
                    })?;
            let floor = seg.index.floor_offset((offset - base) as u32);
            (
                base,
                seg.file.clone(),
                seg.path.clone(),
                floor.map_or(SEGMENT_HEADER_BYTES, |e| u64::from(e.position)),
                floor.map_or(i64::MIN, |e| e.max_timestamp_before),
            )
        };
        let (cut_pos, max_ts) = if offset == base {
            (SEGMENT_HEADER_BYTES, i64::MIN)
        } else {
            let limit = inner.state.borrow().segments[&base].end_pos;
            let mut cursor = BatchCursor::new(&*file, &path, pos, limit);
            let mut max_ts = max_ts;
            loop {
                let at = cursor.pos;
                match cursor.next_batch(COLD_READ_BYTES_MIN).await? {
                    Next::Batch(h, _) if h.base_offset as u64 == offset => break (at, max_ts),
                    Next::Batch(h, _) if (h.base_offset as u64) < offset => {
                        max_ts = max_ts.max(h.max_timestamp);
                    }
                    Next::Batch(..) | Next::End | Next::Incomplete { .. } => {
                        return Err(Error::InvalidTruncation {
                            offset,
                            reason: "not a batch boundary",
                        })
                    }
                    Next::Invalid(reason) => {
                        return Err(Error::Corrupt {
                            path,
                            position: at,
                            reason,
                        })
                    }
                }
            }
        };
        // Remove the later segments.
        let later: Vec<u64> = inner
            .state
            .borrow()
            .segments
            .range(base + 1..)
            .map(|(&b, _)| b)
            .collect();
        for b in later {
            let seg = inner.state.borrow_mut().segments.remove(&b);
            if let Some(seg) = seg {
                remove_segment_files(&*inner.storage, &seg).await?;
            }
        }
        // Cut the file: stale bytes past the cut must read back as zeroes, or a
        // later recovery could mistake them for a continuation.
        let io = |op, e| Error::io(op, &path, e);
        file.truncate(cut_pos)
            .await
            .map_err(|e| io("truncating", e))?;
        let alloc = page_up(cut_pos) + inner.config.preallocate_bytes;
        file.allocate(alloc)
            .await
            .map_err(|e| io("preallocating", e))?;
        file.sync().await.map_err(|e| io("syncing", e))?;
        let was_sealed = inner.state.borrow().segments[&base].sealed;
        if was_sealed {
            let index_path = inner.dir.join(index_file_name(base));
            let _ = inner.storage.remove(&index_path).await;
        }
        inner
            .storage
            .sync_dir(&inner.dir)
            .await
            .map_err(|e| Error::io("syncing", &inner.dir, e))?;
        let carry = load_carry(&*file, &path, cut_pos, inner.config.write_buffer_bytes).await?;
        let mut st = inner.state.borrow_mut();
        let seg = st.segments.get_mut(&base).ok_or(Error::InvalidTruncation {
            offset,
            reason: "segment vanished",
        })?;
        seg.end_pos = cut_pos;
        seg.written_pos = cut_pos;
        seg.next_offset = offset;
        seg.max_timestamp = max_ts;
        seg.index.truncate((offset - base) as u32);
        seg.allocated_bytes = alloc;
        seg.sealed = false;
        st.next_offset = offset;
        st.written_offset = offset;
        st.durable_offset = st.durable_offset.min(offset);
        st.sync_wanted = st.sync_wanted.min(offset);
        st.tail.truncate(offset);
        st.overlap_guard = false;
        st.wbuf = carry.into_write_buf(offset);
        Ok(())
    }

    /// Delete whole closed segments past the retention limits; never the active one.
    pub async fn apply_retention(&self) -> Result<RetentionOutcome> {
        let inner = &self.inner;
        let now = (inner.clock)();
        let doomed: Vec<u64> = {
            let st = inner.state.borrow();
            let mut total: u64 = st.segments.values().map(|s| s.end_pos).sum();
            let mut doomed = Vec::new();
            let closed = st
                .segments
                .values()
                .take(st.segments.len().saturating_sub(1));
            for seg in closed {
                if !seg.sealed {
                    break;
                }
                let newest = if seg.max_timestamp < 0 {
                    seg.created_ms
                } else {
                    seg.max_timestamp
                };
                let (retention_bytes, retention_ms) = inner.retention.get();
                let too_old = retention_ms.is_some_and(|ms| now - newest > ms as i64);
                let too_big = retention_bytes.is_some_and(|max| total - seg.end_pos >= max);
                if !(too_old || too_big) {
                    break;
                }
                total -= seg.end_pos;
                doomed.push(seg.base_offset);
            }
            doomed
        };
        let mut outcome = RetentionOutcome::default();
        for base in doomed {
            let seg = {
                let mut st = inner.state.borrow_mut();
                let Some(seg) = st.segments.remove(&base) else {
                    continue;
                };
                let start = st.segments.keys().next().copied().unwrap_or(st.next_offset);
                assert!(start <= st.next_offset);
                st.start_offset = start;
                st.tail.drop_before(start);
                seg
            };
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += seg.end_pos;
            remove_segment_files(&*inner.storage, &seg).await?;
        }
        if outcome.segments_deleted > 0 {
            inner
                .storage
                .sync_dir(&inner.dir)
                .await
                .map_err(|e| Error::io("syncing", &inner.dir, e))?;
        }
        outcome.start_offset = self.start_offset();
        Ok(outcome)
    }

    /// Make everything durable and stop. Segments stay as they are; the next open
    /// recovers the active one by a scan.
    pub async fn close(self) -> Result<()> {
        let result = self.flush().await.map(|_| ());
        self.inner.state.borrow_mut().closed = true;
        self.inner.append_lock.close();
        self.inner.flusher_wake.notify();
        result
    }
}

impl<F: StorageFile> State<F> {
    fn check_writable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if let Some(e) = self.failure.as_ref().or(self.write_error.as_ref()) {
            return Err(e.duplicate());
        }
        Ok(())
    }

    fn active_base(&self) -> u64 {
        *self
            .segments
            .keys()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active(&mut self) -> &mut Segment<F> {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Account for one batch (offset already assigned) and copy it into the buffer.
    fn put(&mut self, config: &LogConfig, header: BatchHeader, bytes: Bytes) {
        assert_eq!(
            header.base_offset as u64, self.next_offset,
            "offsets are assigned in order"
        );
        let next = header.last_offset() as u64 + 1;
        self.active().on_append(&header);
        self.tail.push(CachedBatch {
            base_offset: header.base_offset as u64,
            last_offset: next - 1,
            max_timestamp: header.max_timestamp,
            bytes: bytes.clone(),
        });
        self.next_offset = next;
        let mut src: &[u8] = &bytes;
        while !src.is_empty() {
            if self.wbuf.buf.is_none() {
                let file = self.active().file.clone();
                self.wbuf.buf = Some(file.alloc_buffer(config.write_buffer_bytes));
            }
            let Some(buf) = self.wbuf.buf.as_mut() else {
                unreachable!("allocated just above");
            };
            let n = (config.write_buffer_bytes - self.wbuf.len).min(src.len());
            buf.as_mut()[self.wbuf.len..self.wbuf.len + n].copy_from_slice(&src[..n]);
            self.wbuf.len += n;
            src = &src[n..];
            if src.is_empty() {
                self.wbuf.end_offset = next;
            }
            if self.wbuf.len == config.write_buffer_bytes {
                self.seal_buffer();
            }
        }
    }

    /// Queue the whole buffer as a chunk; the next buffer starts after it, carrying
    /// the partial last page if there is one.
    fn seal_buffer(&mut self) {
        let Some(mut buf) = self.wbuf.buf.take() else {
            return;
        };
        let len = self.wbuf.len;
        let keep = page_down(len as u64) as usize;
        let carry_len = len - keep;
        let aligned = page_up(len as u64) as usize;
        let mut next_buf = None;
        if carry_len > 0 {
            let file = self.active().file.clone();
            let mut nb = file.alloc_buffer(buf.as_ref().len());
            nb.as_mut()[..carry_len].copy_from_slice(&buf.as_ref()[keep..len]);
            next_buf = Some(nb);
            buf.as_mut()[len..aligned].fill(0);
        }
        buf.trim(aligned);
        let seq = self.next_seq;
        self.next_seq += 1;
        let segment = self.active_base();
        self.queue.push_back(Chunk {
            segment,
            buf: Rc::new(buf),
            pos: self.wbuf.pos,
            end_pos: self.wbuf.pos + len as u64,
            end_offset: self.wbuf.end_offset,
            partial: carry_len > 0,
            seq,
        });
        self.wbuf.buf = next_buf;
        self.wbuf.pos += keep as u64;
        self.wbuf.len = carry_len;
        self.wbuf.written_len = carry_len;
    }

    /// Queue the buffer if it holds bytes not yet on disk.
    fn seal_partial_buffer(&mut self) {
        if self.wbuf.len > self.wbuf.written_len {
            self.seal_buffer();
        }
    }

    /// Record a completed write and advance `written_offset` over the contiguous
    /// prefix of completed writes.
    fn on_write_done(&mut self, seq: u64, file: Rc<F>) {
        if let Some(w) = self.in_flight.iter_mut().find(|w| w.seq == seq) {
            w.done = true;
        }
        if !self.dirty.iter().any(|f| Rc::ptr_eq(f, &file)) {
            self.dirty.push(file);
        }
        while self.in_flight.front().is_some_and(|w| w.done) {
            let Some(w) = self.in_flight.pop_front() else {
                break;
            };
            assert!(
                w.end_offset >= self.written_offset,
                "written offset is monotonic"
            );
            self.written_offset = w.end_offset;
            if let Some(seg) = self.segments.get_mut(&w.segment) {
                seg.written_pos = seg.written_pos.max(w.end_pos);
            }
        }
        let written = self.written_offset;
        self.tail.evict(written);
    }

    fn segment_ready_to_seal(&self) -> Option<u64> {
        let base = *self.pending_seal.first()?;
        let seg = self.segments.get(&base)?;
        (seg.written_pos >= seg.end_pos).then_some(base)
    }
}

/// What the flusher does next.
enum Step<B> {
    Issue(Chunk<B>),
    Seal(u64),
    Sync,
    Backoff,
    Wait,
}

async fn flusher<S: Storage>(inner: Rc<Inner<S>>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let step = next_step(&inner);
        match step {
            Step::Issue(chunk) => {
                if let Err(e) = ensure_allocated(&inner, &chunk).await {
                    requeue(&inner, chunk, e);
                    continue;
                }
                glommio::spawn_local(write_chunk(inner.clone(), chunk)).detach();
            }
            Step::Seal(base) => seal_segment(&inner, base).await,
            Step::Sync => {
                glommio::spawn_local(sync_files(inner.clone())).detach();
            }
            Step::Backoff => {
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                inner.state.borrow_mut().write_error = None;
                inner.waiters.wake_all();
            }
            Step::Wait => {
                inner.flusher_wake.wait().await;
                if inner.state.borrow().write_error.is_none() {
                    backoff = Duration::from_millis(10);
                }
            }
        }
    }
}

fn next_step<S: Storage>(inner: &Inner<S>) -> Step<<S::File as StorageFile>::Buffer> {
    let mut st = inner.state.borrow_mut();
    if st.failure.is_some() {
        return Step::Wait;
    }
    if st.write_error.is_some() {
        return if st.in_flight.is_empty() {
            Step::Backoff
        } else {
            Step::Wait
        };
    }
    if !st.sealing {
        if let Some(base) = st.segment_ready_to_seal() {
            st.pending_seal.retain(|&b| b != base);
            st.sealing = true;
            return Step::Seal(base);
        }
    }
    let can_issue = st.in_flight.len() < inner.config.writes_in_flight_max
        && (!st.overlap_guard || st.in_flight.is_empty());
    if can_issue {
        let issued_end = st
            .queue
            .back()
            .map(|c| c.end_offset)
            .or(st.in_flight.back().map(|w| w.end_offset))
            .unwrap_or(st.written_offset);
        let idle = st.queue.is_empty() && st.in_flight.is_empty();
        // Write what there is when the disk is idle (adaptive batching), or when a
        // waiter needs bytes that sit in the buffer behind the writes in flight.
        if idle || (st.queue.is_empty() && st.sync_wanted > issued_end) {
            st.seal_partial_buffer();
        }
        if let Some(chunk) = st.queue.pop_front() {
            st.overlap_guard = chunk.partial;
            st.in_flight.push_back(InFlight {
                seq: chunk.seq,
                segment: chunk.segment,
                end_pos: chunk.end_pos,
                end_offset: chunk.end_offset,
                done: false,
            });
            inner.waiters.wake_all(); // queue space for appenders
            return Step::Issue(chunk);
        }
    }
    if !st.sync_in_flight
        && st.sync_wanted > st.durable_offset
        && st.written_offset > st.durable_offset
    {
        // Writes in flight will cover more of what waiters want: let them land so
        // one sync covers them (a device flush waits for in-flight writes anyway).
        // Bounded, so a steady stream of writes cannot starve syncs.
        if st.written_offset < st.sync_wanted && !st.in_flight.is_empty() {
            let since = *st.sync_deferred_since.get_or_insert_with(Instant::now);
            if since.elapsed() < SYNC_DEFER_MAX {
                return Step::Wait;
            }
        }
        st.sync_deferred_since = None;
        st.sync_in_flight = true;
        return Step::Sync;
    }
    Step::Wait
}

async fn ensure_allocated<S: Storage>(
    inner: &Inner<S>,
    chunk: &Chunk<<S::File as StorageFile>::Buffer>,
) -> Result<()> {
    let end = chunk.pos + chunk.buf.as_ref().as_ref().len() as u64;
    let (file, path, allocated) = {
        let st = inner.state.borrow();
        let Some(seg) = st.segments.get(&chunk.segment) else {
            return Ok(());
        };
        (seg.file.clone(), seg.path.clone(), seg.allocated_bytes)
    };
    if end <= allocated || inner.config.preallocate_bytes == 0 {
        return Ok(());
    }
    let target = end.max(allocated + inner.config.preallocate_bytes);
    file.allocate(target)
        .await
        .map_err(|e| Error::io("preallocating", &path, e))?;
    if let Some(seg) = inner.state.borrow_mut().segments.get_mut(&chunk.segment) {
        seg.allocated_bytes = target;
    }
    Ok(())
}

/// Put a chunk whose write failed back at the front of the queue, to retry later.
fn requeue<S: Storage>(
    inner: &Inner<S>,
    chunk: Chunk<<S::File as StorageFile>::Buffer>,
    error: Error,
) {
    let mut st = inner.state.borrow_mut();
    st.in_flight.retain(|w| w.seq != chunk.seq);
    let at = st.queue.partition_point(|c| c.seq < chunk.seq);
    st.queue.insert(at, chunk);
    st.overlap_guard = false;
    if error.is_disk_full() {
        tracing::warn!(%error, "write failed: disk full; will retry");
        st.write_error = Some(error);
    } else {
        tracing::error!(%error, "write failed; the log refuses writes until reopened");
        st.failure = Some(error);
    }
    drop(st);
    // The flusher first: glommio runs woken tasks in order, and the disk should get
    // its next write or sync before woken appenders spend CPU on new batches.
    inner.flusher_wake.notify();
    inner.waiters.wake_all();
}

async fn write_chunk<S: Storage>(
    inner: Rc<Inner<S>>,
    chunk: Chunk<<S::File as StorageFile>::Buffer>,
) {
    let (file, path) = {
        let st = inner.state.borrow();
        match st.segments.get(&chunk.segment) {
            Some(seg) => (seg.file.clone(), seg.path.clone()),
            None => return,
        }
    };
    match file.write_at(chunk.buf.clone(), chunk.pos).await {
        Ok(()) => {
            inner.state.borrow_mut().on_write_done(chunk.seq, file);
            inner.flusher_wake.notify();
            inner.waiters.wake_all();
        }
        Err(e) => requeue(&inner, chunk, Error::io("writing", &path, e)),
    }
}

async fn sync_files<S: Storage>(inner: Rc<Inner<S>>) {
    let (target, files) = {
        let mut st = inner.state.borrow_mut();
        (st.written_offset, std::mem::take(&mut st.dirty))
    };
    let mut failed = None;
    for f in &files {
        if let Err(e) = f.sync().await {
            failed = Some(Error::io("syncing", &inner.dir, e));
            break;
        }
    }
    {
        let mut st = inner.state.borrow_mut();
        st.sync_in_flight = false;
        match failed {
            // After a failed fdatasync the kernel may have dropped the dirty data and
            // cleared the error; retrying could falsely succeed. Stop writing.
            Some(e) => {
                tracing::error!(error = %e, "fdatasync failed; the log refuses writes until reopened");
                st.failure = Some(e);
            }
            None => {
                let target = target.min(st.next_offset);
                assert!(target <= st.written_offset, "durable never passes written");
                st.durable_offset = st.durable_offset.max(target);
            }
        }
    }
    // The flusher first: glommio runs woken tasks in order, and the disk should get
    // its next write or sync before woken appenders spend CPU on new batches.
    inner.flusher_wake.notify();
    inner.waiters.wake_all();
}

/// Seal a fully written segment: cut the preallocated tail, sync, persist its index.
/// Failures here only cost a rebuild at the next open, so they are logged.
async fn seal_segment<S: Storage>(inner: &Inner<S>, base: u64) {
    let snapshot = {
        let st = inner.state.borrow();
        st.segments.get(&base).map(|seg| {
            (
                seg.file.clone(),
                seg.path.clone(),
                seg.index_path.clone(),
                seg.end_pos,
                seg.index.encode(
                    base,
                    seg.end_pos,
                    seg.next_offset,
                    seg.max_timestamp,
                    seg.created_ms,
                ),
            )
        })
    };
    if let Some((file, path, index_path, end_pos, index_bytes)) = snapshot {
        let result = async {
            file.truncate(end_pos)
                .await
                .map_err(|e| Error::io("truncating", &path, e))?;
            file.sync()
                .await
                .map_err(|e| Error::io("syncing", &path, e))?;
            write_small_file(&*inner.storage, &index_path, &index_bytes).await?;
            inner
                .storage
                .sync_dir(&inner.dir)
                .await
                .map_err(|e| Error::io("syncing", &inner.dir, e))
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, segment = base, "sealing a segment failed; its index will be rebuilt at the next open");
        }
        if let Some(seg) = inner.state.borrow_mut().segments.get_mut(&base) {
            seg.sealed = true;
            seg.allocated_bytes = end_pos;
        }
    }
    inner.state.borrow_mut().sealing = false;
    // The flusher first: glommio runs woken tasks in order, and the disk should get
    // its next write or sync before woken appenders spend CPU on new batches.
    inner.flusher_wake.notify();
    inner.waiters.wake_all();
}

/// Write a small file through the page-aligned interface, cut to its exact length.
async fn write_small_file<S: Storage>(storage: &S, path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |op, e| Error::io(op, path, e);
    let file = storage
        .open(path, true)
        .await
        .map_err(|e| io("creating", e))?;
    file.truncate(0).await.map_err(|e| io("truncating", e))?;
    let aligned = page_up(bytes.len() as u64) as usize;
    let mut buf = file.alloc_buffer(aligned.max(PAGE_BYTES));
    buf.as_mut()[..bytes.len()].copy_from_slice(bytes);
    buf.as_mut()[bytes.len()..].fill(0);
    file.write_at(Rc::new(buf), 0)
        .await
        .map_err(|e| io("writing", e))?;
    file.truncate(bytes.len() as u64)
        .await
        .map_err(|e| io("truncating", e))?;
    file.sync().await.map_err(|e| io("syncing", e))
}

async fn read_small_file<S: Storage>(storage: &S, path: &Path) -> Option<Bytes> {
    let file = storage.open(path, false).await.ok()?;
    let size = file.size().await.ok()?;
    let bytes = file.read_at(0, page_up(size) as usize).await.ok()?;
    Some(bytes.slice(..(size as usize).min(bytes.len())))
}

async fn remove_segment_files<S: Storage>(storage: &S, seg: &Segment<S::File>) -> Result<()> {
    storage
        .remove(&seg.path)
        .await
        .map_err(|e| Error::io("removing", &seg.path, e))?;
    match storage.remove(&seg.index_path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", &seg.index_path, e)),
    }
}

/// Read whole, verified batches from a segment file.
/// Where a cold read starts and stops within one segment.
struct ColdRead {
    /// A batch boundary at or before the wanted offset (from the index).
    start_pos: u64,
    /// Base offset of the batch at `start_pos`.
    start_offset: u64,
    /// Readable end of the segment.
    limit_pos: u64,
    /// The segment is sealed: its data must run exactly to `limit_pos`.
    sealed: bool,
}

/// Read whole, verified batches from a segment file: each batch's CRC is checked and
/// its base offset must continue the previous one (the CRC does not cover it).
async fn read_from_disk<F: StorageFile>(
    file: &F,
    path: &Path,
    at: ColdRead,
    offset: u64,
    max_bytes: usize,
    end_offset: u64,
) -> Result<Vec<Bytes>> {
    let hint = page_up(max_bytes.max(COLD_READ_BYTES_MIN) as u64) as usize;
    let mut cursor = BatchCursor::new(file, path, at.start_pos, at.limit_pos);
    let mut expected = at.start_offset;
    let mut out = Vec::new();
    let mut total = 0;
    let corrupt = |position, reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        position,
        reason,
    };
    loop {
        let at_pos = cursor.pos;
        match cursor.next_batch(hint).await? {
            Next::Batch(h, bytes) => {
                if h.base_offset as u64 != expected {
                    return Err(corrupt(
                        at_pos,
                        format!(
                            "batch base offset {} where {expected} was due",
                            h.base_offset
                        ),
                    ));
                }
                expected = h.last_offset() as u64 + 1;
                if (h.last_offset() as u64) < offset {
                    continue;
                }
                if h.base_offset as u64 >= end_offset
                    || (!out.is_empty() && total + bytes.len() > max_bytes)
                {
                    break;
                }
                total += bytes.len();
                out.push(bytes);
            }
            // The end of what is written so far; the rest is in the tail cache.
            Next::End | Next::Incomplete { .. } if !at.sealed => break,
            Next::End if at_pos >= at.limit_pos => break,
            Next::End | Next::Incomplete { .. } => {
                return Err(corrupt(at_pos, "sealed segment data ends early".into()))
            }
            Next::Invalid(reason) => return Err(corrupt(at_pos, reason)),
        }
    }
    Ok(out)
}

/// The partial last page of a segment, read back so the next write can rewrite it.
struct Carry<B> {
    buf: Option<B>,
    pos: u64,
    len: usize,
}

impl<B> Carry<B> {
    fn into_write_buf(self, end_offset: u64) -> WriteBuf<B> {
        WriteBuf {
            buf: self.buf,
            pos: self.pos,
            len: self.len,
            written_len: self.len,
            end_offset,
        }
    }
}

async fn load_carry<F: StorageFile>(
    file: &F,
    path: &Path,
    end_pos: u64,
    buffer_bytes: usize,
) -> Result<Carry<F::Buffer>> {
    let pos = page_down(end_pos);
    let len = (end_pos - pos) as usize;
    if len == 0 {
        return Ok(Carry {
            buf: None,
            pos,
            len,
        });
    }
    let page = file
        .read_at(pos, PAGE_BYTES)
        .await
        .map_err(|e| Error::io("reading", path, e))?;
    if page.len() < len {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            position: pos,
            reason: "last page shorter than the data it holds".into(),
        });
    }
    let mut buf = file.alloc_buffer(buffer_bytes);
    buf.as_mut()[..len].copy_from_slice(&page[..len]);
    Ok(Carry {
        buf: Some(buf),
        pos,
        len,
    })
}

/// Create a new segment file: header page written and synced, space preallocated,
/// directory entry synced, before any batch goes in.
async fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base_offset: u64,
    created_ms: i64,
    config: &LogConfig,
) -> Result<Segment<S::File>> {
    let path = dir.join(segment_file_name(base_offset));
    let io = |op, e| Error::io(op, &path, e);
    let file = storage
        .open(&path, true)
        .await
        .map_err(|e| io("creating", e))?;
    let result = async {
        file.truncate(0).await.map_err(|e| io("truncating", e))?;
        let allocated = SEGMENT_HEADER_BYTES + config.preallocate_bytes;
        file.allocate(allocated)
            .await
            .map_err(|e| io("preallocating", e))?;
        let mut page = file.alloc_buffer(PAGE_BYTES);
        SegmentHeader {
            base_offset,
            created_ms,
        }
        .encode_into(page.as_mut());
        file.write_at(Rc::new(page), 0)
            .await
            .map_err(|e| io("writing", e))?;
        file.sync().await.map_err(|e| io("syncing", e))?;
        storage
            .sync_dir(dir)
            .await
            .map_err(|e| Error::io("syncing", dir, e))?;
        Ok(allocated)
    }
    .await;
    let allocated = match result {
        Ok(a) => a,
        Err(e) => {
            let _ = storage.remove(&path).await;
            return Err(e);
        }
    };
    Ok(Segment {
        base_offset,
        index_path: dir.join(index_file_name(base_offset)),
        path,
        file: Rc::new(file),
        created_ms,
        end_pos: SEGMENT_HEADER_BYTES,
        written_pos: SEGMENT_HEADER_BYTES,
        next_offset: base_offset,
        max_timestamp: i64::MIN,
        index: Index::new(config.index_interval_bytes),
        allocated_bytes: allocated,
        sealed: false,
    })
}

/// Recovery on open. Closed segments are trusted when their index file is valid and
/// matches the file size, and scanned (and re-indexed) otherwise. The last segment is
/// always scanned from its start: it is the only one that can hold a torn write, and
/// its size is bounded by `segment_bytes_max`, so recovery time does not grow with
/// the log. The log is cut at the first torn or corrupt batch.
async fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &LogConfig,
    clock: &Clock,
) -> Result<State<S::File>> {
    let names = storage
        .list_dir(dir)
        .map_err(|e| Error::io("listing", dir, e))?;
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    bases.sort_unstable();
    let mut segments: BTreeMap<u64, Segment<S::File>> = BTreeMap::new();
    let mut cut = false;
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(segment_file_name(base));
        if cut {
            tracing::warn!(path = %path.display(), "removing a segment past a cut in the log");
            storage
                .remove(&path)
                .await
                .map_err(|e| Error::io("removing", &path, e))?;
            let _ = storage.remove(&dir.join(index_file_name(base))).await;
            continue;
        }
        let expected_base = segments.values().next_back().map(|s| s.next_offset);
        let is_last = i + 1 == bases.len();
        match open_segment(storage, dir, base, is_last, config).await? {
            Some(seg) if expected_base.is_none_or(|e| e == seg.base_offset) => {
                // A closed segment that did not come back whole ends the log.
                cut = !seg.sealed && !is_last;
                segments.insert(base, seg);
            }
            _ => {
                tracing::warn!(path = %path.display(), "segment is unreadable or does not continue the log; cutting the log here");
                storage
                    .remove(&path)
                    .await
                    .map_err(|e| Error::io("removing", &path, e))?;
                let _ = storage.remove(&dir.join(index_file_name(base))).await;
                cut = true;
                if segments.is_empty() {
                    // Keep the offsets continuous for whoever replicates to us.
                    let seg = create_segment(storage, dir, base, clock(), config).await?;
                    segments.insert(base, seg);
                }
            }
        }
    }
    if segments.is_empty() {
        let seg = create_segment(storage, dir, 0, clock(), config).await?;
        segments.insert(0, seg);
    }
    // The last segment becomes the active one.
    let last_base = *segments.keys().next_back().unwrap_or(&0);
    let (start_offset, next_offset) = (
        *segments.keys().next().unwrap_or(&0),
        segments[&last_base].next_offset,
    );
    let active = segments.get_mut(&last_base).ok_or(Error::Closed)?;
    if active.sealed {
        // A cut made a sealed segment the last one: reopen it for appends.
        let _ = storage.remove(&active.index_path).await;
        active.sealed = false;
    }
    let carry = load_carry(
        &*active.file,
        &active.path,
        active.end_pos,
        config.write_buffer_bytes,
    )
    .await?;
    let state = State {
        segments,
        start_offset,
        next_offset,
        written_offset: next_offset,
        durable_offset: next_offset,
        sync_wanted: next_offset,
        tail: TailCache::new(config.tail_cache_bytes),
        wbuf: carry.into_write_buf(next_offset),
        queue: VecDeque::new(),
        in_flight: VecDeque::new(),
        next_seq: 0,
        overlap_guard: false,
        sync_in_flight: false,
        sync_deferred_since: None,
        dirty: Vec::new(),
        pending_seal: Vec::new(),
        sealing: false,
        write_error: None,
        failure: None,
        closed: false,
    };
    Ok(state)
}

/// Open one segment during recovery. Returns None when its header is unreadable.
/// A closed segment comes back `sealed` when it is whole (valid index, or a scan that
/// reached the end of the file); the last segment comes back unsealed, cut after its
/// last valid batch.
async fn open_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base: u64,
    is_last: bool,
    config: &LogConfig,
) -> Result<Option<Segment<S::File>>> {
    let path = dir.join(segment_file_name(base));
    let index_path = dir.join(index_file_name(base));
    let io = |op, e| Error::io(op, &path, e);
    let file = Rc::new(
        storage
            .open(&path, false)
            .await
            .map_err(|e| io("opening", e))?,
    );
    let size = file.size().await.map_err(|e| io("sizing", e))?;
    let blank = |created_ms| Segment {
        base_offset: base,
        path: path.clone(),
        index_path: index_path.clone(),
        file: file.clone(),
        created_ms,
        end_pos: SEGMENT_HEADER_BYTES,
        written_pos: SEGMENT_HEADER_BYTES,
        next_offset: base,
        max_timestamp: i64::MIN,
        index: Index::new(config.index_interval_bytes),
        allocated_bytes: size,
        sealed: false,
    };
    if !is_last {
        // A sealed segment with a valid index is trusted without reading the segment:
        // this keeps recovery independent of the log's size.
        if let Some(bytes) = read_small_file(storage, &index_path).await {
            match Index::decode(&bytes, base) {
                Some(sealed) if sealed.segment_bytes == size => {
                    let mut seg = blank(sealed.created_ms);
                    seg.index = sealed.index;
                    seg.end_pos = size;
                    seg.written_pos = size;
                    seg.next_offset = sealed.next_offset;
                    seg.max_timestamp = sealed.max_timestamp;
                    seg.sealed = true;
                    return Ok(Some(seg));
                }
                _ => {
                    tracing::warn!(path = %index_path.display(), "index is invalid; rebuilding it")
                }
            }
        }
    }
    let head = file
        .read_at(0, PAGE_BYTES)
        .await
        .map_err(|e| io("reading", e))?;
    let header = match SegmentHeader::decode(&head) {
        Ok(h) if h.base_offset == base => h,
        Ok(_) => return Ok(None),
        Err(reason) => {
            tracing::warn!(path = %path.display(), reason, "bad segment header");
            return Ok(None);
        }
    };
    let mut seg = blank(header.created_ms);
    let from = ScanFrom {
        pos: SEGMENT_HEADER_BYTES,
        next_offset: base,
        base_offset: base,
        max_timestamp: i64::MIN,
    };
    let outcome = scan(&*seg.file, &path, from, size, &mut seg.index).await?;
    seg.end_pos = outcome.end_pos;
    seg.written_pos = outcome.end_pos;
    seg.next_offset = outcome.next_offset;
    seg.max_timestamp = outcome.max_timestamp;
    if let Some(reason) = &outcome.stopped_because {
        tracing::warn!(path = %path.display(), position = outcome.end_pos, reason = %reason, "torn or corrupt batch: truncating the log here");
    }
    // A closed segment whose scan ended cleanly is whole even when its file is
    // longer (a seal that failed to cut the preallocated zeroes); one that ended at
    // a torn or corrupt batch ends the log.
    if is_last || outcome.stopped_because.is_some() {
        // Cut stale or torn bytes so they read back as zeroes, then re-preallocate.
        seg.file
            .truncate(outcome.end_pos)
            .await
            .map_err(|e| io("truncating", e))?;
        let alloc = page_up(outcome.end_pos) + config.preallocate_bytes;
        seg.file
            .allocate(alloc)
            .await
            .map_err(|e| io("preallocating", e))?;
        seg.file.sync().await.map_err(|e| io("syncing", e))?;
        seg.allocated_bytes = alloc;
        let _ = storage.remove(&index_path).await;
        return Ok(Some(seg));
    }
    // A whole closed segment whose index was missing or bad: finish its seal.
    if outcome.end_pos < size {
        seg.file
            .truncate(outcome.end_pos)
            .await
            .map_err(|e| io("truncating", e))?;
        seg.file.sync().await.map_err(|e| io("syncing", e))?;
        seg.allocated_bytes = outcome.end_pos;
    }
    let bytes = seg.index.encode(
        base,
        seg.end_pos,
        seg.next_offset,
        seg.max_timestamp,
        seg.created_ms,
    );
    if let Err(e) = write_small_file(storage, &index_path, &bytes).await {
        tracing::warn!(error = %e, "could not rewrite an index; it will be rebuilt again next time");
    }
    seg.sealed = true;
    Ok(Some(seg))
}
