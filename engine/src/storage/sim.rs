//! A simulated disk for deterministic tests, after turmoil's file-system model:
//! writes that were not followed by a completed `sync` may vanish or be torn (at
//! 512-byte sector granularity) on a crash; synced writes survive. It can also be
//! made to run out of space.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::{Storage, StorageFile, WriteBuffer};
use crate::constants::PAGE_BYTES;

const SECTOR_BYTES: usize = 512;

#[derive(Debug, Default)]
struct FileData {
    /// What reads see now.
    current: Vec<u8>,
    /// What a crash right now is guaranteed to leave.
    durable: Vec<u8>,
    /// Writes since the last completed sync, oldest first.
    unsynced: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct Disk {
    files: BTreeMap<PathBuf, Rc<RefCell<FileData>>>,
    dirs: Vec<PathBuf>,
    capacity_bytes: Option<u64>,
    /// Bumped by every crash; handles from before a crash fail.
    generation: u64,
    syncs: u64,
    read_bytes: u64,
}

impl Disk {
    fn used_bytes(&self) -> u64 {
        self.files
            .values()
            .map(|f| f.borrow().current.len() as u64)
            .sum()
    }

    fn check_space(&self, growth: u64) -> io::Result<()> {
        match self.capacity_bytes {
            Some(cap) if self.used_bytes() + growth > cap => {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            _ => Ok(()),
        }
    }
}

/// Handle to a simulated disk; clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    disk: Rc<RefCell<Disk>>,
}

impl SimStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Limit the total bytes of all files (None: unlimited). Growth past it fails
    /// with ENOSPC.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.disk.borrow_mut().capacity_bytes = capacity_bytes;
    }

    /// Total bytes of all files.
    pub fn used_bytes(&self) -> u64 {
        self.disk.borrow().used_bytes()
    }

    /// Number of completed syncs so far.
    pub fn sync_count(&self) -> u64 {
        self.disk.borrow().syncs
    }

    /// Bytes returned by reads so far.
    pub fn read_bytes(&self) -> u64 {
        self.disk.borrow().read_bytes
    }

    /// Simulate power loss: every write not covered by a completed sync is kept,
    /// dropped or torn, chosen by `seed`. Open handles become invalid.
    pub fn crash(&self, seed: u64) {
        let mut rng = fastrand_lite(seed);
        let mut disk = self.disk.borrow_mut();
        disk.generation += 1;
        for file in disk.files.values() {
            let mut f = file.borrow_mut();
            let mut content = f.durable.clone();
            for (pos, data) in std::mem::take(&mut f.unsynced) {
                let pos = pos as usize;
                match rng() % 3 {
                    0 => apply(&mut content, pos, &data),
                    1 => {}
                    _ => {
                        for (i, sector) in data.chunks(SECTOR_BYTES).enumerate() {
                            if rng().is_multiple_of(2) {
                                apply(&mut content, pos + i * SECTOR_BYTES, sector);
                            }
                        }
                    }
                }
            }
            f.current = content.clone();
            f.durable = content;
        }
    }

    /// Flip one byte of a file in place, durably (for corruption tests).
    pub fn corrupt(&self, path: &Path, position: usize) {
        let disk = self.disk.borrow();
        if let Some(file) = disk.files.get(path) {
            let mut f = file.borrow_mut();
            if position < f.current.len() {
                f.current[position] ^= 0xff;
                f.durable = f.current.clone();
            }
        }
    }

    /// Paths of every file, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.disk.borrow().files.keys().cloned().collect()
    }

    /// Size of one file, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<usize> {
        self.disk
            .borrow()
            .files
            .get(path)
            .map(|f| f.borrow().current.len())
    }
}

/// A tiny deterministic generator (splitmix64), so the simulated disk needs no
/// extra dependency.
fn fastrand_lite(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn apply(content: &mut Vec<u8>, pos: usize, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    if content.len() < pos + data.len() {
        content.resize(pos + data.len(), 0);
    }
    content[pos..pos + data.len()].copy_from_slice(data);
}

/// A page-aligned (by contract, not by address: nothing here does real DMA) buffer.
#[derive(Debug)]
pub struct SimBuf(Vec<u8>);

impl AsRef<[u8]> for SimBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
impl AsMut<[u8]> for SimBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}
impl WriteBuffer for SimBuf {
    fn trim(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

/// An open simulated file.
#[derive(Debug)]
pub struct SimFile {
    disk: Rc<RefCell<Disk>>,
    data: Rc<RefCell<FileData>>,
    generation: u64,
}

impl SimFile {
    fn check_alive(&self) -> io::Result<()> {
        if self.disk.borrow().generation != self.generation {
            return Err(io::Error::other(
                "simulated disk crashed: stale file handle",
            ));
        }
        Ok(())
    }
}

fn check_aligned(pos: u64, len: usize) -> io::Result<()> {
    if !pos.is_multiple_of(PAGE_BYTES as u64) || !len.is_multiple_of(PAGE_BYTES) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(())
}

impl Storage for SimStorage {
    type File = SimFile;

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        if !disk.dirs.iter().any(|d| d == path) {
            disk.dirs.push(path.to_path_buf());
        }
        Ok(())
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        let mut disk = self.disk.borrow_mut();
        let generation = disk.generation;
        let data = match disk.files.get(path) {
            Some(d) => d.clone(),
            None if create => {
                let d = Rc::new(RefCell::new(FileData::default()));
                disk.files.insert(path.to_path_buf(), d.clone());
                d
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        Ok(SimFile {
            disk: self.disk.clone(),
            data,
            generation,
        })
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let disk = self.disk.borrow();
        Ok(disk
            .files
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(String::from))
            .collect())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        match self.disk.borrow_mut().files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    async fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
}

impl StorageFile for SimFile {
    type Buffer = SimBuf;

    fn alloc_buffer(&self, len: usize) -> SimBuf {
        SimBuf(vec![0; len])
    }

    async fn write_at(&self, buf: Rc<SimBuf>, pos: u64) -> io::Result<()> {
        let len = buf.0.len();
        check_aligned(pos, len)?;
        // Let other tasks run, as a real submission would.
        futures_lite::future::yield_now().await;
        self.check_alive()?;
        let growth = {
            let f = self.data.borrow();
            (pos + len as u64).saturating_sub(f.current.len() as u64)
        };
        self.disk.borrow().check_space(growth)?;
        let mut f = self.data.borrow_mut();
        apply(&mut f.current, pos as usize, &buf.0[..len]);
        f.unsynced.push((pos, buf.0[..len].to_vec()));
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        check_aligned(pos, len)?;
        self.check_alive()?;
        let f = self.data.borrow();
        let start = (pos as usize).min(f.current.len());
        let end = (pos as usize + len).min(f.current.len());
        self.disk.borrow_mut().read_bytes += (end - start) as u64;
        Ok(Bytes::copy_from_slice(&f.current[start..end]))
    }

    async fn sync(&self) -> io::Result<()> {
        futures_lite::future::yield_now().await;
        self.check_alive()?;
        let mut f = self.data.borrow_mut();
        for (pos, data) in std::mem::take(&mut f.unsynced) {
            apply(&mut f.durable, pos as usize, &data);
        }
        debug_assert!(f.durable == f.current);
        self.disk.borrow_mut().syncs += 1;
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.check_alive()?;
        let growth = len.saturating_sub(self.data.borrow().current.len() as u64);
        self.disk.borrow().check_space(growth)?;
        let mut f = self.data.borrow_mut();
        if (f.current.len() as u64) < len {
            f.current.resize(len as usize, 0);
        }
        if (f.durable.len() as u64) < len {
            f.durable.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.check_alive()?;
        let len = len as usize;
        let mut f = self.data.borrow_mut();
        f.current.resize(len, 0);
        f.durable.resize(len, 0);
        for (pos, data) in f.unsynced.iter_mut() {
            let end = (*pos as usize + data.len()).min(len);
            data.truncate(end.saturating_sub(*pos as usize));
        }
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        self.check_alive()?;
        Ok(self.data.borrow().current.len() as u64)
    }
}
