//! Applying one layer tar to an empty directory, in overlayfs lowerdir form.
//!
//! The stream may be gzip, zstd or plain; the format is found from its
//! first bytes. A second thread decompresses, hashes (the `diff_id`) and
//! counts bytes against the budget while this one creates files, so given a
//! second core neither decompression nor sha256 adds to the unpack time.
//! A plain layer whose blob an import has just staged and hashed
//! ([`apply_staged_layer`]) is mapped instead: file content is written straight
//! from the mapping, and the blob's digest is its diff_id.
//! Every entry is created relative to the layer's directory fd: the parent
//! is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so
//! `..`, absolute paths and symlinks (however they point) resolve inside
//! the layer, and the final component is made with an `*at()` call that
//! never follows a symlink. Resolved directories stay open for the entries
//! that follow until anything is removed (see `DirCache`). Paths are also
//! cleaned lexically first (as containerd does), but safety does not rest
//! on that.
//!
//! Whiteouts follow the OCI image-spec and overlayfs: `.wh.NAME` becomes a
//! 0:0 character device named NAME, `.wh..wh..opq` sets
//! `trusted.overlay.opaque=y` on its directory, other `.wh..wh.` names
//! (AUFS bookkeeping) are skipped as Docker skips them. Device nodes and
//! FIFOs are created as Docker creates them when running as root, and
//! skipped when not permitted (as Docker does in a user namespace); the
//! store mounts images `nodev`, so a device node in an image never opens a
//! host device. tar has no socket type, so there is nothing to do for them.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::digest::{Digest, Hasher};
use crate::sys;

/// Stops for hostile layers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of decompressed tar stream, and separately most bytes of
    /// file content written (sparse files count at their full size).
    pub max_bytes: u64,
    /// Most tar entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What applying a layer produced.
#[derive(Debug, Clone)]
pub struct LayerStats {
    /// sha256 of the whole decompressed stream: the layer's diff_id.
    pub diff_id: Digest,
    /// Decompressed bytes read.
    pub tar_bytes: u64,
    pub entries: u64,
    /// Device/FIFO entries not created for lack of privilege.
    pub skipped_nodes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer is compressed with {0}, which is not supported (gzip, zstd or plain tar only)")]
    UnsupportedCompression(&'static str),
    #[error("starting {format} decompression")]
    Decompress {
        format: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer tar")]
    Read(#[source] io::Error),
    #[error("the layer is truncated")]
    Truncated(#[source] io::Error),
    #[error("layer exceeds the budget of {limit} {what}")]
    Budget { what: &'static str, limit: u64 },
    #[error("{path}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("{path}: creating parent directories")]
    Parent {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: removing the existing entry")]
    Remove {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: creating")]
    Create {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: writing content")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: linking to {target}")]
    Link {
        path: String,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: setting owner")]
    Owner {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: setting mode")]
    Mode {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: setting xattr {name}")]
    Xattr {
        path: String,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: setting mtime")]
    Mtime {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("uncompressed layer is {actual}, but the image says {expected}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
}

/// Compression detected from the first bytes of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Sniff the compression of a buffered stream without consuming it.
pub fn detect(r: &mut impl BufRead) -> Result<Compression, LayerError> {
    let head = r.fill_buf().map_err(LayerError::Read)?;
    Ok(match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [b'B', b'Z', b'h', ..] => return Err(LayerError::UnsupportedCompression("bzip2")),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => {
            return Err(LayerError::UnsupportedCompression("xz"))
        }
        _ => Compression::None,
    })
}

/// Open a decompressing reader over a (possibly compressed) tar stream.
pub fn decompress<'a, R: Read + 'a>(r: R) -> Result<(Compression, Box<dyn Read + 'a>), LayerError> {
    let mut buf = BufReader::with_capacity(256 << 10, r);
    let c = detect(&mut buf)?;
    let out: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf).map_err(
            |source| LayerError::Decompress {
                format: "zstd",
                source,
            },
        )?),
    };
    Ok((c, out))
}

/// Size of the chunks the decompressing thread hands over.
const CHUNK: usize = 256 << 10;
/// Chunks in flight between the threads.
const CHUNKS_IN_FLIGHT: usize = 8;

/// A filled buffer handed from the producer to the applier: `buf[..len]`
/// holds stream bytes. Buffers go back to the producer when used up (see
/// [`Chunks`]), so the stream is read into the same few allocations over
/// and over instead of a fresh zeroed one per chunk.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

/// The reading half of the pipeline: decompress, count against the
/// budget and hash, then hand chunks to the applying thread. Hashing and
/// decompression thus overlap the filesystem work (which is where
/// unpacking spends its time) instead of adding to it.
///
/// Empty buffers come back on `recycled`; a new one is allocated only when
/// none is waiting there, so no more exist than the chunks in flight and the
/// one each thread holds.
fn produce(
    src: impl Read,
    limit: u64,
    tripped: &AtomicBool,
    tx: mpsc::SyncSender<io::Result<Chunk>>,
    recycled: mpsc::Receiver<Vec<u8>>,
) -> Result<Hasher, LayerError> {
    let (_, mut plain) = decompress(src)?;
    let mut hasher = Hasher::new();
    loop {
        let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        // Fill the chunk (fewer, fuller hand-overs), hashing each read while it is
        // still in the CPU's cache.
        let mut len = 0;
        let mut eof = false;
        while let Some(space) = buf.get_mut(len..).filter(|s| !s.is_empty()) {
            let n = match plain.read(space) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => n.min(space.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(hasher);
                }
            };
            hasher.update(space.get(..n).unwrap_or_default());
            len += n;
            if hasher.len() > limit {
                tripped.store(true, Ordering::Relaxed);
                let _ = tx.send(Err(io::Error::other("decompressed size budget exceeded")));
                return Ok(hasher);
            }
        }
        if len > 0 && tx.send(Ok(Chunk { buf, len })).is_err() {
            return Ok(hasher); // the applier stopped
        }
        if eof {
            return Ok(hasher);
        }
    }
}

/// The applying half: a `Read` over the chunks.
struct Chunks {
    rx: mpsc::Receiver<io::Result<Chunk>>,
    /// Used-up buffers go back to the producer here.
    recycle: mpsc::SyncSender<Vec<u8>>,
    cur: Chunk,
    pos: usize,
    /// Stream offset of `cur`'s first byte.
    base: u64,
    /// A read asked for more after the stream's last byte.
    hit_end: bool,
}

impl Chunks {
    /// The unread bytes of the current chunk, receiving the next one when it is
    /// used up; empty at the end of the stream.
    fn fill(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.cur.len {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let used = std::mem::replace(&mut self.cur, next);
                    self.base += used.len as u64;
                    self.pos = 0;
                    // If the producer is gone or has enough, the buffer is just freed
                    // (as is the empty one this reader starts with).
                    if used.buf.len() == CHUNK {
                        let _ = self.recycle.try_send(used.buf);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => {
                    self.hit_end = true;
                    return Ok(&[]);
                }
            }
        }
        Ok(self.cur.buf.get(self.pos..self.cur.len).unwrap_or_default())
    }
}

/// Forward skips only, which is all the tar reader asks for (with
/// `entries_with_seek` it skips the padding after each entry's data with
/// `SeekFrom::Current`): moving through the chunks instead of reading the
/// skipped bytes into a freshly zeroed 32 KiB buffer each time.
impl Seek for Chunks {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let SeekFrom::Current(delta) = to else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the layer stream only skips forward",
            ));
        };
        let mut left = u64::try_from(delta).map_err(|_| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the layer stream only skips forward",
            )
        })?;
        while left > 0 {
            let avail = self.fill()?.len();
            if avail == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = usize::try_from(left).map_or(avail, |l| l.min(avail));
            self.pos += n;
            left -= n as u64;
        }
        Ok(self.base + self.pos as u64)
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill()?;
        let n = buf.len().min(avail.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}

/// Apply a layer stream (compressed or not) onto `root`, an empty directory.
/// `progress` is called with the decompressed byte count as it grows.
///
/// On error the directory is left partly filled; the caller (the store)
/// unpacks into staging and removes it.
pub fn apply_layer(
    src: impl Read + Send,
    root: BorrowedFd<'_>,
    limits: &Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<LayerStats, LayerError> {
    let tripped = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    let (recycle, recycled) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| produce(src, limits.max_bytes, &tripped, tx, recycled));
        let chunks = Chunks {
            rx,
            recycle,
            cur: Chunk {
                buf: Vec::new(),
                len: 0,
            },
            pos: 0,
            base: 0,
            hit_end: false,
        };
        let applied = apply_stream(chunks, root, limits, &tripped, progress);
        // If the applier stopped early, dropping its receiver (inside
        // `applied`'s error path it is already gone) ends the producer.
        let hashed = producer.join().unwrap_or_else(|_| {
            Err(LayerError::Read(io::Error::other(
                "decompression thread panicked",
            )))
        });
        let hasher = hashed?;
        let (entries, skipped_nodes) = applied?;
        let tar_bytes = hasher.len();
        progress(tar_bytes);
        Ok(LayerStats {
            diff_id: hasher.finish(),
            tar_bytes,
            entries,
            skipped_nodes,
        })
    })
}

fn apply_stream(
    chunks: Chunks,
    root: BorrowedFd<'_>,
    limits: &Limits,
    tripped: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<(u64, u64), LayerError> {
    let mut archive = tar::Archive::new(chunks);
    let mut a = Applier::new(root, limits, None);
    if let Err(e) = apply_entries(&mut archive, &mut a, tripped, progress) {
        return Err(truncation(e, archive.into_inner().hit_end));
    }
    // The diff_id covers the whole stream, including the end-of-archive
    // blocks and any padding after them that the tar reader did not need:
    // read to the end so the producer hashes all of it.
    let budget_err = read_error(limits, tripped);
    let mut rest = archive.into_inner();
    while !rest
        .fill()
        .map_err(|e| truncation(budget_err(e), false))?
        .is_empty()
    {
        rest.pos = rest.cur.len;
    }
    Ok((a.entries, a.skipped_nodes))
}

/// A read error of a stream that ended early is a truncated layer: the decompressors
/// and the content reads say so with `UnexpectedEof`; the tar reader, cut inside a
/// header, says only that it could not read a whole block, so `hit_end` (a read
/// found the end of the stream) tells that case.
fn truncation(e: LayerError, hit_end: bool) -> LayerError {
    match e {
        LayerError::Read(e) if hit_end || e.kind() == io::ErrorKind::UnexpectedEof => {
            LayerError::Truncated(e)
        }
        other => other,
    }
}

/// What a failed read of the layer stream means: the producer's budget
/// stop when it tripped, a read error otherwise.
fn read_error<'a>(
    limits: &'a Limits,
    tripped: &'a AtomicBool,
) -> impl Fn(io::Error) -> LayerError + 'a {
    move |e| {
        if tripped.load(Ordering::Relaxed) {
            LayerError::Budget {
                what: "decompressed bytes",
                limit: limits.max_bytes,
            }
        } else {
            LayerError::Read(e)
        }
    }
}

/// Applies every entry of `archive`, then the saved directory mtimes.
fn apply_entries<R: Read + Seek>(
    archive: &mut tar::Archive<R>,
    a: &mut Applier<'_>,
    tripped: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<(), LayerError> {
    let limits = a.limits;
    let budget_err = read_error(&limits, tripped);
    let mut last_progress = 0u64;
    for entry in archive.entries_with_seek().map_err(&budget_err)? {
        let mut entry = entry.map_err(&budget_err)?;
        a.entry(&mut entry).map_err(|e| match e {
            LayerError::Write { .. } | LayerError::Read(_) if tripped.load(Ordering::Relaxed) => {
                budget_err(io::Error::other("budget"))
            }
            other => other,
        })?;
        let pos = entry.raw_file_position();
        if pos - last_progress >= 4 << 20 {
            last_progress = pos;
            progress(pos);
        }
    }
    a.finish_dir_times()
}

/// Apply the layer blob in `file`, which the caller has just written into
/// staging and hashed to `digest` while writing it, onto `root`, an empty
/// directory.
///
/// For a plain tar that digest is the diff_id, so the layer is applied from
/// the file mapped into memory: file content is written straight from the
/// mapping (GNU tar writes from its read buffer; here there is no read at
/// all) and nothing is hashed a second time. A compressed blob, or one that
/// cannot be mapped, goes through [`apply_layer`], which hashes what it
/// decompresses. A blob that has been on disk (already stored, or being
/// verified) is not for this function: it must be hashed as it is now, so
/// it goes through [`apply_layer`] too.
///
/// `file` must not change while it is applied (see [`sys::Mapping`]), which a
/// staged blob does not. A read error of the just-written blob would show as
/// SIGBUS rather than as an error.
pub fn apply_staged_layer(
    file: &File,
    digest: Digest,
    root: BorrowedFd<'_>,
    limits: &Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<LayerStats, LayerError> {
    let stream = |progress: &mut dyn FnMut(u64)| {
        let mut f = file;
        f.seek(SeekFrom::Start(0)).map_err(LayerError::Read)?;
        apply_layer(f, root, limits, progress)
    };
    let mapping = match sys::Mapping::of(file) {
        Ok(Some(m)) => m,
        Ok(None) | Err(_) => return stream(progress),
    };
    let bytes = mapping.bytes();
    if detect(&mut &bytes[..])? != Compression::None {
        drop(mapping);
        return stream(progress);
    }
    let tar_bytes = bytes.len() as u64;
    if tar_bytes > limits.max_bytes {
        return Err(LayerError::Budget {
            what: "decompressed bytes",
            limit: limits.max_bytes,
        });
    }
    let mut archive = tar::Archive::new(InMemory {
        bytes,
        pos: 0,
        hit_end: false,
    });
    let mut a = Applier::new(root, limits, Some(bytes));
    if let Err(e) = apply_entries(&mut archive, &mut a, &AtomicBool::new(false), progress) {
        return Err(truncation(e, archive.into_inner().hit_end));
    }
    progress(tar_bytes);
    Ok(LayerStats {
        diff_id: digest,
        tar_bytes,
        entries: a.entries,
        skipped_nodes: a.skipped_nodes,
    })
}

/// A tar stream held in memory, read and skipped like [`Chunks`]: a skip past
/// the end is an error (`Cursor` would allow it, and the tar reader would then
/// take the missing bytes for a clean end of the archive).
struct InMemory<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// A read asked for more after the last byte.
    hit_end: bool,
}

impl Read for InMemory<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if rest.is_empty() && !buf.is_empty() {
            self.hit_end = true;
        }
        let n = buf.len().min(rest.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}

impl Seek for InMemory<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let to = match to {
            SeekFrom::Current(delta) => i64::try_from(self.pos)
                .ok()
                .and_then(|p| p.checked_add(delta))
                .and_then(|p| usize::try_from(p).ok()),
            _ => None,
        };
        match to {
            Some(p) if p <= self.bytes.len() => {
                self.pos = p;
                Ok(p as u64)
            }
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// A cleaned tar path: `/`-separated components, none of them `""`, `.` or
/// `..`; empty for the layer root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanPath(Vec<u8>);

impl CleanPath {
    /// Clean lexically the way containerd does (`filepath.Join("/", p)`):
    /// leading `/` dropped, `.` dropped, `..` pops and stops at the root.
    pub fn new(raw: &[u8]) -> CleanPath {
        let mut out = Vec::with_capacity(raw.len());
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                    out.truncate(cut);
                }
                c => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c);
                }
            }
        }
        CleanPath(out)
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
    /// The parent directory's path and the last component, `None` for the root.
    fn split_last(&self) -> Option<(&[u8], &[u8])> {
        split_last(&self.0)
    }
    /// The path relative to the root, `.` for the root itself.
    pub fn to_cstring(&self) -> CString {
        rel_cstring(&self.0)
    }
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// Split a cleaned path (see [`CleanPath`]) into its parent and last component.
fn split_last(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.is_empty() {
        return None;
    }
    Some(match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (
            path.get(..i).unwrap_or_default(),
            path.get(i + 1..).unwrap_or_default(),
        ),
        None => (&[], path),
    })
}

/// A cleaned path (see [`CleanPath`]) for `*at()` calls: `.` for the root.
fn rel_cstring(path: &[u8]) -> CString {
    if path.is_empty() {
        return c".".to_owned();
    }
    // A NUL cannot appear in a tar name we parsed (CString::new would refuse
    // it, and `cstr` refuses the entry before its path is used).
    CString::new(path).unwrap_or_else(|_| c".".to_owned())
}

/// The stream ended before an entry's content did.
fn truncated(shown: &str) -> LayerError {
    LayerError::Read(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the layer ends inside the content of {shown}"),
    ))
}

fn cstr(bytes: &[u8], path: &str) -> Result<CString, LayerError> {
    CString::new(bytes).map_err(|_| LayerError::BadEntry {
        path: path.into(),
        reason: "name contains a NUL byte".into(),
    })
}

/// Open a directory inside `root`, resolving strictly inside it.
pub fn open_dir_in_root(root: BorrowedFd<'_>, rel: &CStr) -> io::Result<OwnedFd> {
    sys::openat2(
        root,
        rel,
        sys::O_RDONLY | sys::O_DIRECTORY,
        0,
        sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
    )
}

/// Remove `name` in `dir`, recursing into directories without following
/// symlinks.
pub fn remove_entry(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let st = sys::fstatat(dir, name, true)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = sys::openat(
            dir,
            name,
            sys::O_RDONLY | sys::O_DIRECTORY | sys::O_NOFOLLOW,
            0,
        )?;
        for child in sys::list_dir(sub.as_fd())? {
            remove_entry(sub.as_fd(), &child)?;
        }
        sys::unlinkat(dir, name, true)
    } else {
        sys::unlinkat(dir, name, false)
    }
}

/// Most directory fds [`DirCache`] keeps open; when full it starts over.
const DIR_CACHE_MAX: usize = 64;

/// Directory fds of the layer by cleaned path, so that an entry whose parent
/// was seen before is created without resolving the parent again (an
/// `openat2` and a `close` per entry otherwise).
///
/// Why a cached fd is the directory its path names now: each fd is what
/// resolving the path inside the root gave ([`Applier::ensure_dir`]), or the
/// directory an entry just made at that path, opened without following
/// symlinks. A path resolves differently later only if something it went
/// through (a directory, or a symlink on the way) is removed or replaced;
/// creating a new name cannot change a lookup that succeeded, since every
/// name it looked up existed. The applier removes things only in
/// [`replacing`] and for whiteouts, and both empty the cache first. Renames
/// never happen. And even a stale fd could not lead outside the layer: it is
/// a directory of the layer, and the kernel refuses to create entries in a
/// deleted one, so such an entry would fail loudly.
#[derive(Default)]
struct DirCache(HashMap<Vec<u8>, OwnedFd>);

impl DirCache {
    /// Take the fd of `path` out of the cache (with its key, for [`DirCache::put`]).
    fn take(&mut self, path: &[u8]) -> Option<(Vec<u8>, OwnedFd)> {
        self.0.remove_entry(path)
    }
    fn put(&mut self, path: Vec<u8>, fd: OwnedFd) {
        if self.0.len() >= DIR_CACHE_MAX {
            self.0.clear();
        }
        self.0.insert(path, fd);
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

struct Applier<'a> {
    root: BorrowedFd<'a>,
    /// The whole tar stream when it is in memory (a mapped plain layer):
    /// file content is then written straight from it.
    whole: Option<&'a [u8]>,
    limits: Limits,
    entries: u64,
    written: u64,
    skipped_nodes: u64,
    dir_times: Vec<(CleanPath, i64, i64)>,
    privileged: bool,
    buf: Vec<u8>,
    /// Directories already opened, so that most entries are created without
    /// resolving their parent again.
    dirs: DirCache,
}

/// Metadata gathered from the header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Runs `make`, which creates `name` in `dir`; if something is already there (an
/// earlier entry of the layer), removes it, a directory with all it holds, and runs
/// `make` once more. Creating first and replacing only on `EEXIST` spares the common
/// case, where nothing is there, a `stat` per entry. `O_EXCL`, `mkdirat`, `symlinkat`,
/// `linkat` and `mknodat` never follow a symlink at `name`, so what is replaced is the
/// entry itself. Removing may change where cached directory paths lead, so it empties
/// `dirs`.
fn replacing<T>(
    dirs: &mut DirCache,
    dir: BorrowedFd<'_>,
    name: &CStr,
    shown: &str,
    mut make: impl FnMut() -> io::Result<T>,
) -> Result<io::Result<T>, LayerError> {
    match make() {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            dirs.clear();
            remove_entry(dir, name).map_err(|source| LayerError::Remove {
                path: shown.into(),
                source,
            })?;
            Ok(make())
        }
        other => Ok(other),
    }
}

/// xattrs kept from layers: user data, file capabilities and ACLs.
/// `trusted.*` (overlayfs' own namespace among others) and other
/// `security.*` labels from an image are dropped.
fn xattr_allowed(name: &str) -> bool {
    name.starts_with("user.")
        || name == "security.capability"
        || name == "system.posix_acl_access"
        || name == "system.posix_acl_default"
}

impl<'a> Applier<'a> {
    fn new(root: BorrowedFd<'a>, limits: &Limits, whole: Option<&'a [u8]>) -> Self {
        Applier {
            root,
            whole,
            limits: *limits,
            entries: 0,
            written: 0,
            skipped_nodes: 0,
            dir_times: Vec::new(),
            privileged: sys::geteuid_is_root(),
            buf: Vec::new(),
            dirs: DirCache::default(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), LayerError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(LayerError::Budget {
                what: "entries",
                limit: self.limits.max_entries,
            });
        }
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let (path, shown) = {
            let raw = entry.path_bytes();
            (
                CleanPath::new(&raw),
                crate::text::printable_bytes(&raw, crate::text::MAX_SHOWN),
            )
        };
        let meta = self.meta(entry, &shown)?;

        let Some((parent, name)) = path.split_last() else {
            // The layer root itself: only a directory may describe it.
            if kind.is_dir() {
                let fd = self
                    .root
                    .try_clone_to_owned()
                    .map_err(|source| LayerError::Create {
                        path: shown.clone(),
                        source,
                    })?;
                self.set_meta_fd(fd.as_fd(), &meta, &shown)?;
                self.dir_times.push((path, meta.mtime.0, meta.mtime.1));
                return Ok(());
            }
            return Err(LayerError::BadEntry {
                path: shown,
                reason: "a non-directory entry names the layer root".into(),
            });
        };
        if let Some(target) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent, target, &meta, &shown);
        }

        let cname = cstr(name, &shown)?;
        // Taken out of the cache while the entry is made, and put back after.
        let (key, parent_fd) = match self.dirs.take(parent) {
            Some(hit) => hit,
            None => (parent.to_vec(), self.ensure_dir(parent, &shown)?),
        };
        let created = self.create(entry, parent_fd.as_fd(), &cname, &meta, &shown, &path);
        // Still valid even if the entry replaced something: it changed only
        // `parent/name`, which is not on the way to `parent`.
        self.dirs.put(key, parent_fd);
        created
    }

    /// Creates the entry `cname` in the directory `pfd`, replacing what is there unless
    /// both old and new are directories.
    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pfd: BorrowedFd<'_>,
        cname: &CStr,
        meta: &Meta,
        shown: &str,
        path: &CleanPath,
    ) -> Result<(), LayerError> {
        let kind = entry.header().entry_type();

        // An entry replaces whatever an earlier one left at its name, unless both old
        // and new are directories. Each kind tries to create first and replaces only on
        // EEXIST (see `replacing`); a directory over a directory keeps the old one.
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                self.regular(entry, pfd, cname, meta, shown)
            }
            T::Directory => {
                let made = match sys::mkdirat(pfd, cname, 0o700) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        match sys::fstatat(pfd, cname, true) {
                            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(()),
                            _ => replacing(&mut self.dirs, pfd, cname, shown, || {
                                sys::mkdirat(pfd, cname, 0o700)
                            })?,
                        }
                    }
                    other => other,
                };
                made.map_err(|source| LayerError::Create {
                    path: shown.into(),
                    source,
                })?;
                let fd = sys::openat(
                    pfd,
                    cname,
                    sys::O_RDONLY | sys::O_DIRECTORY | sys::O_NOFOLLOW,
                    0,
                )
                .map_err(|source| LayerError::Create {
                    path: shown.into(),
                    source,
                })?;
                self.set_meta_fd(fd.as_fd(), meta, shown)?;
                self.dir_times
                    .push((path.clone(), meta.mtime.0, meta.mtime.1));
                // Its entries usually follow: they need not resolve it again.
                self.dirs.put(path.0.clone(), fd);
                Ok(())
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::BadEntry {
                        path: shown.into(),
                        reason: "symlink without a target".into(),
                    })?;
                let target = cstr(&target, shown)?;
                replacing(&mut self.dirs, pfd, cname, shown, || {
                    sys::symlinkat(&target, pfd, cname)
                })?
                .map_err(|source| LayerError::Create {
                    path: shown.into(),
                    source,
                })?;
                if self.privileged {
                    sys::lchownat(pfd, cname, meta.uid, meta.gid).map_err(|source| {
                        LayerError::Owner {
                            path: shown.into(),
                            source,
                        }
                    })?;
                }
                for (k, v) in &meta.xattrs {
                    match sys::lsetxattrat(pfd, cname, k, v) {
                        Ok(()) => {}
                        // Symlinks cannot carry user.* xattrs; the kernel says so.
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) => {
                        }
                        Err(source) => {
                            return Err(LayerError::Xattr {
                                path: shown.into(),
                                name: k.to_string_lossy().into(),
                                source,
                            })
                        }
                    }
                }
                sys::lutimensat(pfd, cname, meta.mtime.0, meta.mtime.1).map_err(|source| {
                    LayerError::Mtime {
                        path: shown.into(),
                        source,
                    }
                })
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::BadEntry {
                        path: shown.into(),
                        reason: "hardlink without a target".into(),
                    })?;
                self.hardlink(&target, pfd, cname, shown)
            }
            T::Char | T::Block | T::Fifo => self.node(entry, kind, pfd, cname, meta, shown),
            other => Err(LayerError::BadEntry {
                path: shown.into(),
                reason: format!("unsupported tar entry type {:?}", other.as_byte() as char),
            }),
        }
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<Meta, LayerError> {
        let h = entry.header();
        let bad = |reason: String| LayerError::BadEntry {
            path: shown.into(),
            reason,
        };
        // Read from the raw fields (see `header_num`): the tar crate's own
        // getters build a formatted error for every empty field.
        let old = h.as_old();
        let field = |raw: &[u8], what: &str| {
            header_num(raw).ok_or_else(|| bad(format!("bad {what}: {:?}", raw.escape_ascii())))
        };
        let mode = (field(&old.mode, "mode")? & 0o7777) as u32;
        let mut uid = field(&old.uid, "uid")?;
        let mut gid = field(&old.gid, "gid")?;
        let mtime = header_num(&old.mtime).and_then(|t| i64::try_from(t).ok());
        let mut mtime = (mtime.unwrap_or(0), 0i64);
        let mut xattrs = Vec::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax {
                let ext = ext.map_err(|e| bad(format!("bad pax record: {e}")))?;
                let Ok(key) = ext.key() else { continue };
                match key {
                    "uid" => {
                        uid =
                            parse_num(ext.value_bytes()).ok_or_else(|| bad("bad pax uid".into()))?
                    }
                    "gid" => {
                        gid =
                            parse_num(ext.value_bytes()).ok_or_else(|| bad("bad pax gid".into()))?
                    }
                    "mtime" => {
                        if let Some(t) = parse_pax_time(ext.value_bytes()) {
                            mtime = t;
                        }
                    }
                    k => {
                        if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                            if xattr_allowed(name) {
                                xattrs.push((
                                    cstr(name.as_bytes(), shown)?,
                                    ext.value_bytes().to_vec(),
                                ));
                            } else {
                                log::debug!("{shown}: dropping xattr {name}");
                            }
                        }
                    }
                }
            }
        }
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| bad(format!("{what} {v} out of range")))
        };
        Ok(Meta {
            mode,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            mtime,
            xattrs,
        })
    }

    /// Owner, then mode (chown clears set-id bits), then xattrs.
    fn set_meta_fd(&self, fd: BorrowedFd<'_>, meta: &Meta, shown: &str) -> Result<(), LayerError> {
        if self.privileged {
            sys::fchown(fd, meta.uid, meta.gid).map_err(|source| LayerError::Owner {
                path: shown.into(),
                source,
            })?;
        }
        sys::fchmod(fd, meta.mode).map_err(|source| LayerError::Mode {
            path: shown.into(),
            source,
        })?;
        for (k, v) in &meta.xattrs {
            match sys::fsetxattr(fd, k, v) {
                Ok(()) => {}
                // A filesystem without xattr support loses them, as with Docker.
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && !self.privileged => {}
                Err(source) => {
                    return Err(LayerError::Xattr {
                        path: shown.into(),
                        name: k.to_string_lossy().into(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), LayerError> {
        let size = entry.size();
        self.written = self.written.saturating_add(size);
        if self.written > self.limits.max_bytes {
            return Err(LayerError::Budget {
                what: "bytes of file content",
                limit: self.limits.max_bytes,
            });
        }
        let fd = replacing(&mut self.dirs, pfd, name, shown, || {
            sys::openat(
                pfd,
                name,
                sys::O_WRONLY | sys::O_CREAT | sys::O_EXCL | sys::O_NOFOLLOW,
                0o600,
            )
        })?
        .map_err(|source| LayerError::Create {
            path: shown.into(),
            source,
        })?;
        let mut file = File::from(fd);
        let kind = entry.header().entry_type();
        if let Some(whole) = self.whole.filter(|_| kind != tar::EntryType::GNUSparse) {
            // A plain entry's content is the `size` bytes at its data offset.
            let data = usize::try_from(entry.raw_file_position())
                .ok()
                .and_then(|start| whole.get(start..))
                .and_then(|rest| rest.get(..usize::try_from(size).ok()?))
                .ok_or_else(|| truncated(shown))?;
            file.write_all(data).map_err(|source| LayerError::Write {
                path: shown.into(),
                source,
            })?;
        } else {
            self.copy_content(entry, &mut file, shown)?;
        }
        self.set_meta_fd(file.as_fd(), meta, shown)?;
        sys::futimens(file.as_fd(), meta.mtime.0, meta.mtime.1).map_err(|source| {
            LayerError::Mtime {
                path: shown.into(),
                source,
            }
        })
    }

    /// Copies an entry's content through `buf` (a sparse entry's holes come
    /// back as zeros from the tar reader).
    fn copy_content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        shown: &str,
    ) -> Result<(), LayerError> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; CHUNK];
        }
        let mut copied = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LayerError::Write {
                        path: shown.into(),
                        source,
                    })
                }
            };
            file.write_all(self.buf.get(..n).unwrap_or_default())
                .map_err(|source| LayerError::Write {
                    path: shown.into(),
                    source,
                })?;
            copied += n as u64;
        }
        if copied != entry.size() {
            return Err(truncated(shown));
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        target: &[u8],
        pfd: BorrowedFd<'_>,
        name: &CStr,
        shown: &str,
    ) -> Result<(), LayerError> {
        let tpath = CleanPath::new(target);
        let tshown = crate::text::printable_bytes(target, crate::text::MAX_SHOWN);
        let link_err = |source| LayerError::Link {
            path: shown.into(),
            target: tshown.clone(),
            source,
        };
        let Some((tparent, tname)) = tpath.split_last() else {
            return Err(link_err(io::Error::from_raw_os_error(libc::EPERM)));
        };
        // The target's directory is resolved inside the layer like any
        // other path, and linkat(2) without AT_SYMLINK_FOLLOW never follows
        // the final component: the link can only name a file of this layer.
        let tdir = open_dir_in_root(self.root, &rel_cstring(tparent)).map_err(link_err)?;
        let tname = cstr(tname, shown)?;
        let st = sys::fstatat(tdir.as_fd(), &tname, true).map_err(link_err)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(link_err(io::Error::from_raw_os_error(libc::EPERM)));
        }
        replacing(&mut self.dirs, pfd, name, shown, || {
            sys::linkat(tdir.as_fd(), &tname, pfd, name)
        })?
        .map_err(link_err)
    }

    fn node<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: tar::EntryType,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), LayerError> {
        let h = entry.header();
        let (major, minor) = (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        );
        let fmt = match kind {
            tar::EntryType::Char => libc::S_IFCHR,
            tar::EntryType::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        let dev = libc::makedev(major, minor);
        match replacing(&mut self.dirs, pfd, name, shown, || {
            sys::mknodat(pfd, name, fmt | 0o600, dev)
        })? {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && !self.privileged => {
                // What Docker does in a user namespace: skip the node.
                self.skipped_nodes += 1;
                return Ok(());
            }
            Err(source) => {
                return Err(LayerError::Create {
                    path: shown.into(),
                    source,
                })
            }
        }
        // A node cannot be opened for fchmod without opening the device, so
        // open it O_PATH and act on it through its own fd.
        let fd = sys::openat(pfd, name, sys::O_PATH | sys::O_NOFOLLOW, 0).map_err(|source| {
            LayerError::Create {
                path: shown.into(),
                source,
            }
        })?;
        if self.privileged {
            sys::lchownat(pfd, name, meta.uid, meta.gid).map_err(|source| LayerError::Owner {
                path: shown.into(),
                source,
            })?;
        }
        sys::fchmod_path_fd(fd.as_fd(), meta.mode).map_err(|source| LayerError::Mode {
            path: shown.into(),
            source,
        })?;
        sys::lutimensat(pfd, name, meta.mtime.0, meta.mtime.1).map_err(|source| LayerError::Mtime {
            path: shown.into(),
            source,
        })
    }

    fn whiteout(
        &mut self,
        parent: &[u8],
        target: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), LayerError> {
        let bad = |reason: &str| LayerError::BadEntry {
            path: shown.into(),
            reason: reason.into(),
        };
        if target == b".wh..opq" {
            let fd = self.ensure_dir(parent, shown)?;
            let key = c"trusted.overlay.opaque";
            return sys::fsetxattr(fd.as_fd(), key, b"y").map_err(|source| LayerError::Xattr {
                path: shown.into(),
                name: "trusted.overlay.opaque".into(),
                source,
            });
        }
        if target.starts_with(b".wh.") {
            // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): Docker skips it.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(bad("whiteout names no entry (or the directory itself)"));
        }
        let pfd = self.ensure_dir(parent, shown)?;
        let cname = cstr(target, shown)?;
        // A whiteout removes: no cached directory fd can be trusted after it (opaque
        // markers and AUFS bookkeeping above remove nothing and keep the cache).
        self.dirs.clear();
        match remove_entry(pfd.as_fd(), &cname) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(source) => {
                return Err(LayerError::Remove {
                    path: shown.into(),
                    source,
                })
            }
        }
        // overlayfs marks a deleted name with a 0:0 character device. Its
        // mtime comes from the entry so that re-applying is reproducible.
        sys::mknodat(pfd.as_fd(), &cname, libc::S_IFCHR, libc::makedev(0, 0)).map_err(
            |source| LayerError::Create {
                path: shown.into(),
                source,
            },
        )?;
        sys::lutimensat(pfd.as_fd(), &cname, meta.mtime.0, meta.mtime.1).map_err(|source| {
            LayerError::Mtime {
                path: shown.into(),
                source,
            }
        })
    }

    /// Open directory `rel` in the layer, creating missing components
    /// (mode 0755, as Docker does for implied parents).
    fn ensure_dir(&self, rel: &[u8], shown: &str) -> Result<OwnedFd, LayerError> {
        let err = |source| LayerError::Parent {
            path: shown.into(),
            source,
        };
        match open_dir_in_root(self.root, &rel_cstring(rel)) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(err(e)),
        }
        let Some((parent, last)) = split_last(rel) else {
            return Err(err(io::Error::from_raw_os_error(libc::ENOENT)));
        };
        let pfd = self.ensure_dir(parent, shown)?;
        let clast = cstr(last, shown)?;
        match sys::mkdirat(pfd.as_fd(), &clast, 0o755) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(err(e)),
        }
        // Opened from its parent without following: if the name is a
        // dangling symlink, mkdirat failed with EEXIST and this fails.
        sys::openat(
            pfd.as_fd(),
            &clast,
            sys::O_RDONLY | sys::O_DIRECTORY | sys::O_NOFOLLOW,
            0,
        )
        .map_err(err)
    }

    /// Directory mtimes last: creating children changes them.
    fn finish_dir_times(&mut self) -> Result<(), LayerError> {
        for (path, sec, nsec) in self.dir_times.drain(..).rev() {
            let Ok(fd) = open_dir_in_root(self.root, &path.to_cstring()) else {
                continue; // replaced or removed later in the layer
            };
            sys::futimens(fd.as_fd(), sec, nsec).map_err(|source| LayerError::Mtime {
                path: crate::text::printable(&path.display(), crate::text::MAX_SHOWN),
                source,
            })?;
        }
        Ok(())
    }
}

/// A numeric header field as Go's archive/tar (Docker, containerd) reads it:
/// octal digits with spaces and NULs around them, empty meaning 0; or GNU
/// base-256 (top bit of the first byte set). `None` for anything else,
/// negative and overflowing numbers included.
fn header_num(raw: &[u8]) -> Option<u64> {
    if let Some((&first, rest)) = raw.split_first().filter(|(&b, _)| b & 0x80 != 0) {
        if first & 0x40 != 0 {
            return None; // negative
        }
        return rest.iter().try_fold(u64::from(first & 0x3f), |v, &b| {
            v.checked_mul(256)?.checked_add(u64::from(b))
        });
    }
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let start = raw.iter().position(|b| !pad(b)).unwrap_or(raw.len());
    let end = raw.iter().rposition(|b| !pad(b)).map_or(start, |i| i + 1);
    raw.get(start..end)?.iter().try_fold(0u64, |v, &b| {
        let digit = (b as char).to_digit(8)?;
        v.checked_mul(8)?.checked_add(u64::from(digit))
    })
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction.
fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nsec += i64::from(c.to_digit(10)?) * 10i64.pow(8 - i as u32);
    }
    if sec < 0 && nsec > 0 {
        return Some((sec - 1, 1_000_000_000 - nsec));
    }
    Some((sec, nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        let c = |s: &str| CleanPath::new(s.as_bytes()).display();
        assert_eq!(c("/etc/passwd"), "etc/passwd");
        assert_eq!(c("../../etc/passwd"), "etc/passwd");
        assert_eq!(c("a/../../b/./c//d"), "b/c/d");
        assert!(CleanPath::new(b"./").is_root());
        assert!(CleanPath::new(b"..").is_root());
    }

    #[test]
    fn header_numbers() {
        assert_eq!(header_num(b"0000644\0"), Some(0o644));
        assert_eq!(header_num(b"  755 \0"), Some(0o755));
        assert_eq!(header_num(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(header_num(b"        "), Some(0));
        assert_eq!(header_num(b"64x\0"), None);
        assert_eq!(header_num(b"6 4\0"), None);
        assert_eq!(header_num(b"9\0"), None);
        assert_eq!(header_num(&[0x80, 0, 0, 0, 0, 0, 0x01, 0x00]), Some(256));
        assert_eq!(header_num(&[0xff; 8]), None);
        assert_eq!(
            header_num(&[0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"7"), Some((7, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn detects_compression() {
        let mut g = &[0x1fu8, 0x8b, 8, 0][..];
        assert_eq!(detect(&mut g).unwrap(), Compression::Gzip);
        let mut z = &[0x28u8, 0xb5, 0x2f, 0xfd, 0][..];
        assert_eq!(detect(&mut z).unwrap(), Compression::Zstd);
        let mut p = &b"hello"[..];
        assert_eq!(detect(&mut p).unwrap(), Compression::None);
        let mut x = &[0xfdu8, b'7', b'z', b'X', b'Z', 0][..];
        assert!(detect(&mut x).is_err());
    }
}
