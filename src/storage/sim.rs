//! A simulated disk for tests: volatile and durable bytes kept apart, power loss, and faults
//! at any call.
//!
//! The model, per file: `data` is what the page cache holds (every read sees it); `durable`
//! is what survives a power loss, updated to `data` by `sync_data`. Per directory, the names
//! (creations, renames, removals) since its last `sync_dir` are pending. At
//! [`SimDisk::power_loss`]:
//! - each directory keeps a random prefix of its pending operations (a journaling file system
//!   commits metadata in order), so an unsynced rename or creation may be undone;
//! - each file keeps its durable bytes, and each 4 KiB page written since its last sync may
//!   independently reach the disk or not (not just a clean prefix); its length is either the
//!   durable or the current one, and bytes that never reached the disk read as zeros.
//!
//! [`SimDisk::crash`] is a process crash: nothing is lost (the OS keeps its page cache), but
//! every open handle and lock dies. Faults: [`FaultRule`]s fail matching calls with EIO,
//! ENOSPC or EMFILE (after N matches, for M times, optionally writing half first), a capacity
//! makes writes beyond it fail with ENOSPC, and [`SimDisk::power_off_after`] fails every call
//! after the next N, as a machine losing power in the middle of any step would.
//! Simplifications: directories are durable once created; renames stay within a directory.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, FileHandle, Mapped, StorageBackend};

/// Size of the unit in which unsynced writes are lost or kept at a power loss.
pub const PAGE_BYTES: usize = 4096;

/// The call a [`FaultRule`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    CreateDir,
    List,
    Lock,
    Create,
    Open,
    Read,
    Write,
    SetLen,
    Sync,
    Rename,
    Link,
    Remove,
    SyncDir,
    Map,
}

/// The error a fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// EIO: the device failed.
    Eio,
    /// ENOSPC: the disk is full.
    Enospc,
    /// EMFILE: out of file handles (transient).
    Emfile,
}

impl Errno {
    pub fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Errno::Eio => 5,
            Errno::Enospc => 28,
            Errno::Emfile => 24,
        })
    }
}

/// Fails calls of one kind (or every kind), on paths containing a string, after `skip`
/// matching calls went through, `times` times.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub op: Option<FaultOp>,
    pub path_contains: Option<String>,
    pub skip: u64,
    pub times: u64,
    pub errno: Errno,
    /// Writes only: write the first half of the buffer before failing (a torn write).
    pub partial: bool,
}

impl FaultRule {
    /// Fails the next call of `op` once.
    pub fn new(op: FaultOp, errno: Errno) -> Self {
        FaultRule {
            op: Some(op),
            path_contains: None,
            skip: 0,
            times: 1,
            errno,
            partial: false,
        }
    }
    /// Fails the next call of any kind once.
    pub fn any(errno: Errno) -> Self {
        FaultRule {
            op: None,
            ..FaultRule::new(FaultOp::Write, errno)
        }
    }
    pub fn path(mut self, contains: &str) -> Self {
        self.path_contains = Some(contains.to_owned());
        self
    }
    pub fn skip(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }
    pub fn times(mut self, n: u64) -> Self {
        self.times = n;
        self
    }
    pub fn forever(self) -> Self {
        self.times(u64::MAX)
    }
    pub fn partial(mut self) -> Self {
        self.partial = true;
        self
    }
    fn matches(&self, op: FaultOp, path: &Path) -> bool {
        self.op.is_none_or(|o| o == op)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|s| path.to_string_lossy().contains(s))
    }
}

struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

enum DirOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf, u64),
}

struct ArmedRule {
    rule: FaultRule,
    seen: u64,
    failed: u64,
}

#[derive(Default)]
struct State {
    /// Bumped by every crash and power loss: handles and locks of an older generation are dead.
    generation: u64,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    pending: BTreeMap<PathBuf, Vec<DirOp>>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    rules: Vec<ArmedRule>,
    calls: u64,
    off_after: Option<u64>,
    off: bool,
    capacity_bytes: Option<u64>,
    injected: u64,
    injected_by_op: BTreeMap<String, u64>,
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file (simulated disk)", path.display()),
    )
}

impl State {
    /// Counts the call and decides its fate: Err to fail it before it does anything,
    /// Ok(Some(rule)) when a rule fires (the caller fails it, possibly after a partial write).
    fn call(&mut self, op: FaultOp, path: &Path) -> io::Result<Option<FaultRule>> {
        self.calls += 1;
        if let Some(n) = self.off_after.as_mut() {
            if *n == 0 {
                self.off = true;
            } else {
                *n -= 1;
            }
        }
        if self.off {
            return Err(io::Error::other("simulated power off"));
        }
        for r in &mut self.rules {
            if !r.rule.matches(op, path) {
                continue;
            }
            if r.seen < r.rule.skip {
                r.seen += 1;
                continue;
            }
            if r.failed < r.rule.times {
                r.failed += 1;
                self.injected += 1;
                *self
                    .injected_by_op
                    .entry(format!("{op:?} {:?}", r.rule.errno))
                    .or_default() += 1;
                return Ok(Some(r.rule.clone()));
            }
        }
        Ok(None)
    }

    fn used_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.data.len() as u64).sum()
    }

    fn link(&mut self, path: &Path) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                data: Vec::new(),
                durable: Vec::new(),
            },
        );
        self.names.insert(path.to_path_buf(), ino);
        self.pending
            .entry(parent(path))
            .or_default()
            .push(DirOp::Link(path.to_path_buf(), ino));
        ino
    }

    fn apply(names: &mut BTreeMap<PathBuf, u64>, op: &DirOp) {
        match op {
            DirOp::Link(p, ino) => {
                names.insert(p.clone(), *ino);
            }
            DirOp::Unlink(p) => {
                names.remove(p);
            }
            DirOp::Rename(from, to, ino) => {
                names.remove(from);
                names.insert(to.clone(), *ino);
            }
        }
    }

    fn forget_unreferenced(&mut self) {
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|ino, _| live.contains(ino));
    }

    fn restart(&mut self) {
        self.generation += 1;
        self.locks.clear();
        self.rules.clear();
        self.off = false;
        self.off_after = None;
    }
}

/// A tiny deterministic generator (xorshift64*), so a power loss is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// The simulated disk. Cheap to clone; clones share one disk.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    pub fn new() -> Self {
        SimDisk::default()
    }

    /// The backend to put in [`crate::Options::backend`].
    pub fn backend(&self) -> Backend {
        Backend(Arc::new(self.clone()))
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_rule(&self, rule: FaultRule) {
        self.lock_state().rules.push(ArmedRule {
            rule,
            seen: 0,
            failed: 0,
        });
    }

    pub fn clear_rules(&self) {
        self.lock_state().rules.clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.lock_state().injected
    }

    /// Faults injected so far, by operation and error ("Sync Eio" -> 3).
    pub fn injected_by_op(&self) -> BTreeMap<String, u64> {
        self.lock_state().injected_by_op.clone()
    }

    /// Calls made so far (every operation, faulted or not).
    pub fn calls(&self) -> u64 {
        self.lock_state().calls
    }

    /// Lets `n` more calls through, then fails every call (the power is off) until
    /// [`SimDisk::power_loss`] or [`SimDisk::crash`].
    pub fn power_off_after(&self, n: u64) {
        self.lock_state().off_after = Some(n);
    }

    /// Writes that would make the files' total size exceed `bytes` fail with ENOSPC.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock_state().capacity_bytes = bytes;
    }

    /// A process crash: every handle and lock dies; no byte is lost.
    pub fn crash(&self) {
        self.lock_state().restart();
    }

    /// A power loss: unsynced pages and directory operations are kept or lost at random (from
    /// `seed`), then the machine restarts (handles, locks and fault rules are gone).
    pub fn power_loss(&self, seed: u64) {
        let mut s = self.lock_state();
        let mut rng = Rng(seed | 1);
        for (_, ops) in std::mem::take(&mut s.pending) {
            let keep = rng.below(ops.len() as u64 + 1) as usize;
            for op in ops.iter().take(keep) {
                State::apply(&mut s.durable_names, op);
            }
        }
        s.names = s.durable_names.clone();
        s.forget_unreferenced();
        for inode in s.inodes.values_mut() {
            let len = if rng.coin() {
                inode.data.len()
            } else {
                inode.durable.len()
            };
            let mut out = vec![0u8; len];
            for (page, chunk) in out.chunks_mut(PAGE_BYTES).enumerate() {
                let at = page * PAGE_BYTES;
                let cur = inode.data.get(at..at + chunk.len());
                let dur = inode.durable.get(at..at + chunk.len());
                let take_current = cur != dur && rng.coin();
                let src = if take_current {
                    &inode.data
                } else {
                    &inode.durable
                };
                for (i, b) in chunk.iter_mut().enumerate() {
                    *b = src.get(at + i).copied().unwrap_or(0);
                }
            }
            inode.durable.clone_from(&out);
            inode.data = out;
        }
        s.restart();
    }

    /// Current bytes of `path` (what a read sees), if it exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock_state();
        s.names
            .get(path)
            .and_then(|ino| s.inodes.get(ino))
            .map(|i| i.data.clone())
    }

    /// Overwrites `path` durably (tests damaging a file on purpose).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut s = self.lock_state();
        let ino = match s.names.get(path) {
            Some(i) => *i,
            None => s.link(path),
        };
        if let Some(i) = s.inodes.get_mut(&ino) {
            i.data = bytes.to_vec();
            i.durable = bytes.to_vec();
        }
        s.durable_names.insert(path.to_path_buf(), ino);
    }

    /// Names of the files in `dir`, sorted.
    pub fn files(&self, dir: &Path) -> Vec<String> {
        let s = self.lock_state();
        s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }

    fn handle(&self, path: &Path, ino: u64, writable: bool, s: &State) -> Arc<dyn FileHandle> {
        Arc::new(SimFile {
            disk: self.clone(),
            path: path.to_path_buf(),
            ino,
            generation: s.generation,
            writable,
        })
    }
}

impl StorageBackend for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        s.call(FaultOp::CreateDir, dir)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        for a in dir.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        {
            let mut s = self.lock_state();
            s.call(FaultOp::List, dir)?
                .map_or(Ok(()), |r| Err(r.errno.error()))?;
            if !s.dirs.contains(dir) {
                return Err(not_found(dir));
            }
        }
        Ok(self.files(dir))
    }

    fn lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let mut s = self.lock_state();
        s.call(FaultOp::Lock, path)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        if !s.dirs.contains(&parent(path)) {
            return Err(not_found(path));
        }
        if !s.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        if !s.names.contains_key(path) {
            s.link(path);
        }
        Ok(Some(Box::new(SimLock {
            disk: self.clone(),
            path: path.to_path_buf(),
            generation: s.generation,
        })))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let mut s = self.lock_state();
        s.call(FaultOp::Create, path)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        if !s.dirs.contains(&parent(path)) {
            return Err(not_found(path));
        }
        let ino = match s.names.get(path).copied() {
            Some(ino) => {
                if let Some(i) = s.inodes.get_mut(&ino) {
                    i.data.clear();
                }
                ino
            }
            None => s.link(path),
        };
        Ok(self.handle(path, ino, true, &s))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FileHandle>> {
        let mut s = self.lock_state();
        s.call(FaultOp::Open, path)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(self.handle(path, ino, writable, &s))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        s.call(FaultOp::Rename, to)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        let ino = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), ino);
        s.pending.entry(parent(to)).or_default().push(DirOp::Rename(
            from.to_path_buf(),
            to.to_path_buf(),
            ino,
        ));
        Ok(())
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        s.call(FaultOp::Link, to)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        if !s.dirs.contains(&parent(to)) {
            return Err(not_found(to));
        }
        if s.names.contains_key(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let ino = *s.names.get(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), ino);
        s.pending
            .entry(parent(to))
            .or_default()
            .push(DirOp::Link(to.to_path_buf(), ino));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        s.call(FaultOp::Remove, path)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        s.pending
            .entry(parent(path))
            .or_default()
            .push(DirOp::Unlink(path.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        s.call(FaultOp::SyncDir, dir)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        if let Some(ops) = s.pending.remove(dir) {
            for op in &ops {
                State::apply(&mut s.durable_names, op);
            }
        }
        Ok(())
    }

    fn map(&self, path: &Path) -> io::Result<Mapped> {
        let mut s = self.lock_state();
        s.call(FaultOp::Map, path)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        let data = s
            .inodes
            .get(&ino)
            .map(|i| i.data.clone())
            .unwrap_or_default();
        Ok(Box::new(data))
    }
}

struct SimLock {
    disk: SimDisk,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.disk.lock_state();
        if s.generation == self.generation {
            s.locks.remove(&self.path);
        }
    }
}

struct SimFile {
    disk: SimDisk,
    path: PathBuf,
    ino: u64,
    generation: u64,
    writable: bool,
}

impl SimFile {
    /// The disk state, after checking that this handle outlived no crash.
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let s = self.disk.lock_state();
        if s.generation != self.generation {
            return Err(io::Error::other("handle from before a simulated crash"));
        }
        Ok(s)
    }
}

fn inode<'a>(s: &'a mut State, ino: u64, path: &Path) -> io::Result<&'a mut Inode> {
    s.inodes.get_mut(&ino).ok_or_else(|| not_found(path))
}

impl FileHandle for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut s = self.state()?;
        s.call(FaultOp::Read, &self.path)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        let i = inode(&mut s, self.ino, &self.path)?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = i
            .data
            .get(start..start.saturating_add(buf.len()))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state()?;
        if !self.writable {
            return Err(io::Error::from_raw_os_error(9));
        }
        let fault = s.call(FaultOp::Write, &self.path)?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let (mut n, mut err) = match &fault {
            Some(r) if r.partial => (buf.len() / 2, Some(r.errno.error())),
            Some(r) => (0, Some(r.errno.error())),
            None => (buf.len(), None),
        };
        let used = s.used_bytes();
        let cur_len = inode(&mut s, self.ino, &self.path)?.data.len() as u64;
        if let Some(cap) = s.capacity_bytes {
            let growth = (offset + n as u64).saturating_sub(cur_len);
            if used + growth > cap {
                let room = cap.saturating_sub(used);
                let fits = (cur_len + room).saturating_sub(offset);
                n = n.min(fits as usize);
                err = Some(Errno::Enospc.error());
            }
        }
        let i = inode(&mut s, self.ino, &self.path)?;
        if n > 0 {
            if i.data.len() < start + n {
                i.data.resize(start + n, 0);
            }
            i.data[start..start + n].copy_from_slice(&buf[..n]);
        }
        err.map_or(Ok(()), Err)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state()?;
        s.call(FaultOp::SetLen, &self.path)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        inode(&mut s, self.ino, &self.path)?.data.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.state()?;
        s.call(FaultOp::Sync, &self.path)?
            .map_or(Ok(()), |r| Err(r.errno.error()))?;
        let i = inode(&mut s, self.ino, &self.path)?;
        let Inode { data, durable } = i;
        durable.clone_from(data);
        Ok(())
    }

    fn size_bytes(&self) -> io::Result<u64> {
        let mut s = self.state()?;
        Ok(inode(&mut s, self.ino, &self.path)?.data.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> (SimDisk, PathBuf) {
        let d = SimDisk::new();
        let dir = PathBuf::from("/sim");
        d.create_dir_all(&dir).unwrap();
        (d, dir)
    }

    #[test]
    fn synced_bytes_survive_power_loss_and_unsynced_pages_may_not() {
        let (d, dir) = disk();
        let p = dir.join("f");
        let f = d.create(&p).unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all_at(&[1u8; PAGE_BYTES], 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(&[2u8; 3 * PAGE_BYTES], PAGE_BYTES as u64)
            .unwrap();
        let mut outcomes = BTreeSet::new();
        for seed in 0..64 {
            let d2 = SimDisk::new();
            d2.create_dir_all(&dir).unwrap();
            let f2 = d2.create(&p).unwrap();
            d2.sync_dir(&dir).unwrap();
            f2.write_all_at(&[1u8; PAGE_BYTES], 0).unwrap();
            f2.sync_data().unwrap();
            f2.write_all_at(&[2u8; 3 * PAGE_BYTES], PAGE_BYTES as u64)
                .unwrap();
            d2.power_loss(seed);
            let after = d2.read_file(&p).unwrap();
            assert!(after.len() == PAGE_BYTES || after.len() == 4 * PAGE_BYTES);
            assert_eq!(
                &after[..PAGE_BYTES],
                &[1u8; PAGE_BYTES][..],
                "synced page kept"
            );
            let pages: Vec<u8> = after[PAGE_BYTES..]
                .chunks(PAGE_BYTES)
                .map(|c| c[0])
                .collect();
            outcomes.insert(pages);
        }
        // Not only prefixes: some run keeps a later page and loses an earlier one.
        assert!(outcomes.contains(&vec![0, 2, 0]) || outcomes.contains(&vec![0, 0, 2]));
        assert!(outcomes.contains(&vec![]) && outcomes.contains(&vec![2, 2, 2]));
        drop(f);
    }

    #[test]
    fn an_unsynced_rename_can_be_undone_and_a_synced_one_cannot() {
        let mut undone = false;
        for seed in 0..32 {
            let (d, dir) = disk();
            let (a, b) = (dir.join("a.tmp"), dir.join("a"));
            d.create(&a).unwrap();
            d.sync_dir(&dir).unwrap();
            d.rename(&a, &b).unwrap();
            d.power_loss(seed);
            undone |= d.read_file(&b).is_none() && d.read_file(&a).is_some();
            let (d, _) = disk();
            d.create(&a).unwrap();
            d.rename(&a, &b).unwrap();
            d.sync_dir(&dir).unwrap();
            d.power_loss(seed);
            assert!(d.read_file(&b).is_some() && d.read_file(&a).is_none());
        }
        assert!(undone);
    }

    #[test]
    fn rules_fail_matching_calls_and_power_off_fails_everything() {
        let (d, dir) = disk();
        let f = d.create(&dir.join("x.seg")).unwrap();
        d.add_rule(
            FaultRule::new(FaultOp::Sync, Errno::Eio)
                .path(".seg")
                .skip(1),
        );
        f.sync_data().unwrap();
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
        f.sync_data().unwrap();
        d.add_rule(FaultRule::new(FaultOp::Write, Errno::Enospc).partial());
        assert_eq!(
            f.write_all_at(&[7; 10], 0).unwrap_err().raw_os_error(),
            Some(28)
        );
        assert_eq!(d.read_file(&dir.join("x.seg")).unwrap(), vec![7; 5]);
        d.power_off_after(1);
        f.write_all_at(&[1], 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(d.create(&dir.join("y")).is_err());
        d.crash();
        assert!(f.size_bytes().is_err(), "handles die with the process");
        assert_eq!(
            d.read_file(&dir.join("x.seg")).unwrap()[0],
            1,
            "a crash loses nothing"
        );
    }

    #[test]
    fn capacity_makes_writes_fail_with_enospc_after_what_fits() {
        let (d, dir) = disk();
        d.set_capacity(Some(100));
        let f = d.create(&dir.join("f")).unwrap();
        f.write_all_at(&[1; 80], 0).unwrap();
        let e = f.write_all_at(&[2; 40], 80).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(f.size_bytes().unwrap(), 100);
        f.set_len(80).unwrap();
        f.write_all_at(&[3; 20], 80).unwrap();
    }
}
