//! The real disk: glommio DMA files (O_DIRECT through io_uring).

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::{Storage, StorageFile, WriteBuffer};
use crate::constants::PAGE_BYTES;
use crate::error::Error;

/// Name of the small non-empty file read first by every executor, see [`DmaStorage::open`].
pub const IO_PROBE_FILE: &str = ".strand-io-probe";

/// Storage on a real file system through glommio DMA files.
///
/// Lives on one shard (one executor thread); every shard opens its own.
pub struct DmaStorage {
    buffered: bool,
    observer: Option<Rc<dyn IoObserver>>,
}

impl std::fmt::Debug for DmaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaStorage")
            .field("buffered", &self.buffered)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

/// Told of every completed DMA write and fdatasync (their latency, for metrics).
/// Called on the shard's thread, after the operation completed.
pub trait IoObserver {
    fn write_done(&self, bytes: usize, elapsed: std::time::Duration);
    fn sync_done(&self, elapsed: std::time::Duration);
}

impl DmaStorage {
    /// Prepare DMA I/O for files under `root` on this executor thread.
    ///
    /// Two facts about glommio 0.9 are handled here:
    /// - It decides whether a device supports polled I/O from the first file an
    ///   executor reads, by reading that file's first block. On a new, empty file the
    ///   read "succeeds" with 0 bytes, glommio concludes the device is pollable, and
    ///   every later read fails with EOPNOTSUPP (os error 95); glommio issues #605 and
    ///   #670. So we first open and read a non-empty probe file on the same device.
    /// - On tmpfs glommio silently opens without O_DIRECT; there is no durable disk
    ///   behind it. We refuse, naming the path, unless `allow_buffered_fallback`.
    pub async fn open(root: &Path, allow_buffered_fallback: bool) -> Result<Self, Error> {
        std::fs::create_dir_all(root).map_err(|e| Error::io("creating", root, e))?;
        let on_tmpfs = is_tmpfs(root).map_err(|e| Error::io("statfs of", root, e))?;
        if on_tmpfs {
            if !allow_buffered_fallback {
                return Err(Error::Tmpfs {
                    path: root.to_path_buf(),
                });
            }
            tracing::warn!(
                path = %root.display(),
                "data directory is on tmpfs: O_DIRECT is unavailable, falling back to buffered \
                 I/O; nothing written here survives a reboot"
            );
        }
        let probe = root.join(IO_PROBE_FILE);
        let needs_write = std::fs::metadata(&probe)
            .map(|m| m.len() < PAGE_BYTES as u64)
            .unwrap_or(true);
        if needs_write {
            // Every shard opens its storage at the same time: write a private file
            // and rename it into place, so no shard ever reads a probe another one
            // has just truncated (it read 0 bytes and refused to start).
            let tmp = root.join(format!(
                "{IO_PROBE_FILE}.{}.{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&tmp, vec![0x5a; PAGE_BYTES])
                .map_err(|e| Error::io("writing", &tmp, e))?;
            std::fs::rename(&tmp, &probe).map_err(|e| Error::io("renaming", &tmp, e))?;
        }
        let file = DmaFile::open(&probe)
            .await
            .map_err(|e| Error::io("opening", &probe, glommio_io(e)))?;
        let read = file
            .read_at_aligned(0, PAGE_BYTES)
            .await
            .map_err(|e| Error::io("reading", &probe, glommio_io(e)))?;
        if read.len() != PAGE_BYTES {
            return Err(Error::Corrupt {
                path: probe,
                position: 0,
                reason: format!("probe file read returned {} bytes", read.len()),
            });
        }
        let _ = file.close().await;
        Ok(Self {
            buffered: on_tmpfs,
            observer: None,
        })
    }

    /// Report the latency of every write and sync of files opened from now on.
    pub fn observe(&mut self, observer: Rc<dyn IoObserver>) {
        self.observer = Some(observer);
    }

    /// True when the files are not opened with O_DIRECT (tmpfs fallback).
    pub fn is_buffered(&self) -> bool {
        self.buffered
    }
}

/// True when `path` is on tmpfs (no O_DIRECT).
pub fn is_tmpfs(path: &Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a properly sized out-param.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statfs only writes into `st`.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == libc::TMPFS_MAGIC)
}

/// glommio wraps OS errors with context; keep the OS error so ENOSPC stays visible.
pub(crate) fn glommio_io(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => other.into(),
    }
}

impl WriteBuffer for DmaBuffer {
    fn trim(&mut self, len: usize) {
        self.trim_to_size(len);
    }
}

/// An open DMA file.
pub struct DmaSegmentFile {
    file: DmaFile,
    path: PathBuf,
    observer: Option<Rc<dyn IoObserver>>,
}

impl std::fmt::Debug for DmaSegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaSegmentFile")
            .field("path", &self.path)
            .finish()
    }
}

impl Storage for DmaStorage {
    type File = DmaSegmentFile;

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<DmaSegmentFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(glommio_io)?;
        Ok(DmaSegmentFile {
            file,
            path: path.to_path_buf(),
            observer: self.observer.clone(),
        })
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // glommio opens directories with openat(-1, ..), which takes only absolute
        // paths (a relative one gives EBADF).
        let path = std::path::absolute(path)?;
        let dir = glommio::io::Directory::open(&path)
            .await
            .map_err(glommio_io)?;
        dir.sync().await.map_err(glommio_io)?;
        dir.close().await.map_err(glommio_io)
    }
}

impl StorageFile for DmaSegmentFile {
    type Buffer = DmaBuffer;

    fn alloc_buffer(&self, len: usize) -> DmaBuffer {
        debug_assert!(len.is_multiple_of(PAGE_BYTES));
        self.file.alloc_dma_buffer(len)
    }

    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        let len = buf.len();
        debug_assert!(len.is_multiple_of(PAGE_BYTES) && pos.is_multiple_of(PAGE_BYTES as u64));
        let started = std::time::Instant::now();
        let written = self.file.write_rc_at(buf, pos).await.map_err(glommio_io)?;
        if let Some(o) = &self.observer {
            o.write_done(written, started.elapsed());
        }
        if written != len {
            // O_DIRECT writes to a regular file are all-or-nothing unless the disk
            // filled up in the middle.
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        debug_assert!(len.is_multiple_of(PAGE_BYTES) && pos.is_multiple_of(PAGE_BYTES as u64));
        let read = self
            .file
            .read_at_aligned(pos, len)
            .await
            .map_err(glommio_io)?;
        Ok(Bytes::copy_from_slice(&read))
    }

    async fn sync(&self) -> io::Result<()> {
        let started = std::time::Instant::now();
        self.file.fdatasync().await.map_err(glommio_io)?;
        if let Some(o) = &self.observer {
            o.sync_done(started.elapsed());
        }
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.file.pre_allocate(len, false).await.map_err(glommio_io)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(glommio_io)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(glommio_io)
    }
}

impl DmaSegmentFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}
