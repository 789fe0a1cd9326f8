//! The narrow storage interface the log is written against, so that a simulated
//! disk ([`sim::SimStorage`]) can stand in for the real one ([`dma::DmaStorage`]).
//!
//! Contract, which both implementations keep:
//! - `write_at` and `read_at` positions and lengths are multiples of
//!   [`crate::constants::PAGE_BYTES`] (O_DIRECT rules).
//! - A completed `write_at` is visible to later reads, but survives a crash only
//!   once a later `sync` on the same file has completed.
//! - `allocate` and `truncate` change the file size durably (the simulated disk
//!   treats metadata as synced at once; the real one syncs it with the next `sync`).

use std::io;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;

pub mod dma;
pub mod sim;

/// A page-aligned buffer that a [`StorageFile`] can write without copying.
pub trait WriteBuffer: AsRef<[u8]> + AsMut<[u8]> + 'static {
    /// Shorten to `len` bytes (a multiple of the page) before writing.
    fn trim(&mut self, len: usize);
}

/// A directory tree of files. One instance per shard; not `Send`.
#[allow(async_fn_in_trait)]
pub trait Storage: 'static {
    type File: StorageFile;

    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Open for reading and writing; `create` makes it if missing.
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// Names of the files directly in `path`.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Make creations and removals in `path` durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// One open file.
#[allow(async_fn_in_trait)]
pub trait StorageFile: 'static {
    type Buffer: WriteBuffer;

    /// A page-aligned buffer of `len` bytes (a multiple of the page); its contents
    /// are unspecified.
    fn alloc_buffer(&self, len: usize) -> Self::Buffer;
    /// Write all of `buf` at `pos` (aligned). The buffer is shared so that a failed
    /// write can be retried with the same bytes.
    async fn write_at(&self, buf: Rc<Self::Buffer>, pos: u64) -> io::Result<()>;
    /// Read up to `len` bytes at `pos`; both aligned. Shorter only at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    /// fdatasync: every completed write before this call survives a crash.
    async fn sync(&self) -> io::Result<()>;
    /// Grow the file to at least `len` bytes with zeroes (fallocate).
    async fn allocate(&self, len: u64) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
}
