//! The store on disk: directories, locks, staging, atomic commits, refs,
//! holds and garbage collection. The layout is drawn in the crate docs.
//!
//! Every write follows one pattern: create it under `tmp/`, verify it,
//! fsync it (syncfs for a whole layer tree), then rename it into place with
//! `RENAME_NOREPLACE`, where "already exists" counts as success because the
//! name is the content's digest; finally fsync the directory that gained
//! the name. A ref is written last, so a ref only ever names an image whose
//! every piece is already durable.
//!
//! Locking (`flock`): imports hold `lock` shared for their whole run; `gc`
//! takes it exclusive, so it never sees a half-imported image; opening the
//! store empties `tmp/` only when it can take `lock` exclusive without
//! waiting, i.e. when no import is running whose staging it could delete.
//! `refs.lock` serialises read-modify-write of `refs.json`; readers need no lock,
//! as `refs.json` is only replaced whole.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::layer::remove_entry;
use crate::oci::{self, Document, ImageConfig, Manifest};
use crate::reference::Reference;
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path} does not exist (the first `berth image import` creates it)")]
    NotFound { path: PathBuf },
    #[error("permission denied: {path} is not writable by this user")]
    NotWritable { path: PathBuf },
    #[error("permission denied: {path} is not readable by this user")]
    NotReadable { path: PathBuf },
    #[error("creating store directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("locking {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cleaning staging entry {name}")]
    Cleanup {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("staging {what}")]
    Stage {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {expected} has digest {actual}")]
    BlobDigest { expected: Digest, actual: Digest },
    #[error("blob {digest} is {actual} bytes, expected {expected}")]
    BlobSize {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is larger than the {limit}-byte limit")]
    BlobTooLarge { digest: String, limit: u64 },
    #[error("committing {what}")]
    Commit {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} is not in the store")]
    BlobMissing { digest: Digest },
    #[error("reading blob {digest}")]
    ReadBlob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("reading refs")]
    ReadRefs(#[source] io::Error),
    #[error("parsing refs.json")]
    ParseRefs(#[source] serde_json::Error),
    #[error("writing refs")]
    WriteRefs(#[source] io::Error),
    #[error("no image named {0}")]
    UnknownRef(String),
    #[error("stored manifest {digest} is invalid")]
    Manifest {
        digest: Digest,
        #[source]
        source: oci::OciError,
    },
    #[error("stored config {digest} is invalid")]
    Config {
        digest: Digest,
        #[source]
        source: oci::ConfigError,
    },
    #[error("hold name {0:?} is invalid")]
    HoldName(String),
    #[error("writing hold {name}")]
    Hold {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("removing {what}")]
    Remove {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {diff_id} is not unpacked in the store; import the image again")]
    LayerMissing { diff_id: Digest },
    #[error("linking layer {diff_id}")]
    Link {
        diff_id: Digest,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

const DIRS: &[&str] = &[
    "blobs",
    "blobs/sha256",
    "layers",
    "l",
    "holds",
    "tmp",
    "empty",
];

/// An open store.
pub struct Store {
    root: PathBuf,
    dir: OwnedFd,
}

/// A held `flock`; released on drop.
pub struct LockGuard {
    _fd: OwnedFd,
}

/// The commit step shared by blobs and layers: renames a staged entry to its final
/// name unless that name already exists (an identical object, since names are
/// digests), then fsyncs the directory so that the name survives a power cut.
/// Returns whether this call put the entry there.
fn publish(
    (from_dir, from): (BorrowedFd<'_>, &CStr),
    (to_dir, to): (BorrowedFd<'_>, &CStr),
    what: &str,
    dir_label: &str,
) -> Result<bool> {
    let placed = match sys::renameat2(from_dir, from, to_dir, to, true) {
        Ok(()) => true,
        // Another import got there first.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => false,
        Err(source) => {
            return Err(StoreError::Commit {
                what: what.into(),
                source,
            })
        }
    };
    sys::fsync(to_dir).map_err(|source| StoreError::Commit {
        what: dir_label.into(),
        source,
    })?;
    Ok(placed)
}

fn c(s: &str) -> CString {
    // Internal names: fixed strings, hex digests and our own ids.
    CString::new(s).expect("internal names have no NUL")
}

fn enoent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

/// A refusal for lack of permission (not a read-only filesystem or a missing file).
fn denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// 10 random base32 characters for staging and short layer names.
///
/// From std's `RandomState`, whose keys come from `getrandom(GRND_INSECURE)`: it never
/// blocks, where `/dev/urandom` stalls on a machine that has just booted (about a
/// second in a TCG guest) until the kernel's pool is ready. These names need to be
/// unique, not secret; a collision is an `EEXIST` that the callers handle.
pub fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHA: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    let mut bits = hasher.finish();
    (0..10)
        .map(|_| {
            let ch = ALPHA[(bits & 31) as usize] as char;
            bits >>= 5;
            ch
        })
        .collect()
}

/// What the scaffold holds: the points a container runtime mounts over.
pub const SCAFFOLD_DIRS: &[&str] = &["proc", "dev", "sys", "etc"];
/// The files, in the order a runtime fills them: hostname, hosts, resolv.conf.
pub const SCAFFOLD_FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];

impl Store {
    /// Open (creating if needed) the store at `root`, and empty `tmp/` if
    /// no other process is using the store.
    ///
    /// For writing: a store this user cannot write is refused at once with
    /// [`StoreError::NotWritable`] (rather than with whichever lock file or directory
    /// it would first fail to create). Commands that only read use
    /// [`Store::open_read_only`].
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let path = root.clone();
        let not_writable = || StoreError::NotWritable { path: path.clone() };
        std::fs::create_dir_all(&root).map_err(|source| {
            if denied(&source) {
                not_writable()
            } else {
                StoreError::CreateDir {
                    path: root.clone(),
                    source,
                }
            }
        })?;
        // With the effective ids, as the writes will be made (root passes).
        let access = nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK;
        if let Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) =
            nix::unistd::eaccess(&root, access)
        {
            return Err(not_writable());
        }
        let dir = File::open(&root).map(OwnedFd::from).map_err(|source| {
            if denied(&source) {
                not_writable()
            } else {
                StoreError::Open {
                    path: root.clone(),
                    source,
                }
            }
        })?;
        let store = Store { root, dir };
        for d in DIRS {
            match sys::mkdirat(store.dir.as_fd(), &c(d), 0o700) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => {
                    return Err(StoreError::CreateDir {
                        path: store.root.join(d),
                        source,
                    })
                }
            }
        }
        let guard = store.try_lock_exclusive().map_err(|e| match e {
            StoreError::Lock { source, .. } if denied(&source) => not_writable(),
            other => other,
        })?;
        if let Some(guard) = guard {
            store.clean_staging()?;
            drop(guard);
        }
        Ok(store)
    }

    /// Open a store only to read it (`berth image ls`, `inspect`): nothing is
    /// created, no lock taken, staging left alone, so it works for any user who can
    /// read the store. A store that does not exist is [`StoreError::NotFound`], not
    /// made; an existing directory without images reads as an empty store.
    pub fn open_read_only(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let dir = File::open(&root).map(OwnedFd::from).map_err(|source| {
            if enoent(&source) {
                StoreError::NotFound { path: root.clone() }
            } else if denied(&source) {
                StoreError::NotReadable { path: root.clone() }
            } else {
                StoreError::Open {
                    path: root.clone(),
                    source,
                }
            }
        })?;
        Ok(Store { root, dir })
    }

    /// Open an existing store without creating anything or cleaning staging: for a
    /// container about to start, which must neither block nor disturb an import.
    pub fn open_existing(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let dir = File::open(root.join("blobs"))
            .and_then(|_| File::open(&root))
            .map(OwnedFd::from)
            .map_err(|source| StoreError::Open {
                path: root.clone(),
                source,
            })?;
        Ok(Store { root, dir })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    fn subdir(&self, name: &str) -> Result<OwnedFd> {
        sys::openat(
            self.dir.as_fd(),
            &c(name),
            sys::O_RDONLY | sys::O_DIRECTORY | sys::O_NOFOLLOW,
            0,
        )
        .map_err(|source| StoreError::Open {
            path: self.root.join(name),
            source,
        })
    }

    fn lock_file(&self, name: &str) -> Result<OwnedFd> {
        sys::openat(
            self.dir.as_fd(),
            &c(name),
            sys::O_RDONLY | sys::O_CREAT | sys::O_NOFOLLOW,
            0o600,
        )
        .map_err(|source| StoreError::Lock {
            path: self.root.join(name),
            source,
        })
    }

    fn lock(&self, name: &str, op: libc::c_int) -> Result<LockGuard> {
        let fd = self.lock_file(name)?;
        sys::flock(fd.as_fd(), op).map_err(|source| StoreError::Lock {
            path: self.root.join(name),
            source,
        })?;
        Ok(LockGuard { _fd: fd })
    }

    /// Held for the whole of an import.
    pub fn lock_shared(&self) -> Result<LockGuard> {
        self.lock("lock", libc::LOCK_SH)
    }

    /// Held by gc; waits for running imports.
    pub fn lock_exclusive(&self) -> Result<LockGuard> {
        self.lock("lock", libc::LOCK_EX)
    }

    fn try_lock_exclusive(&self) -> Result<Option<LockGuard>> {
        let fd = self.lock_file("lock")?;
        match sys::flock(fd.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(LockGuard { _fd: fd })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(source) => Err(StoreError::Lock {
                path: self.root.join("lock"),
                source,
            }),
        }
    }

    /// Remove everything under `tmp/`. Only called under the exclusive lock.
    fn clean_staging(&self) -> Result<()> {
        let tmp = self.subdir("tmp")?;
        let names = sys::list_dir(tmp.as_fd()).map_err(|source| StoreError::Cleanup {
            name: "tmp".into(),
            source,
        })?;
        for n in names {
            remove_entry(tmp.as_fd(), &n).map_err(|source| StoreError::Cleanup {
                name: n.to_string_lossy().into(),
                source,
            })?;
        }
        Ok(())
    }

    /// Names currently in `tmp/` (for tests and diagnostics).
    pub fn staging_entries(&self) -> Result<Vec<String>> {
        let tmp = self.subdir("tmp")?;
        Ok(sys::list_dir(tmp.as_fd())
            .map_err(|source| StoreError::Stage {
                what: "listing tmp".into(),
                source,
            })?
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }

    /// A fresh staging directory under `tmp/`, removed on drop unless
    /// committed.
    pub fn staging_dir(&self, kind: &str) -> Result<Staging<'_>> {
        let tmp = self.subdir("tmp")?;
        let name = format!("{kind}-{}", random_id());
        let cname = c(&name);
        sys::mkdirat(tmp.as_fd(), &cname, 0o755).map_err(|source| StoreError::Stage {
            what: name.clone(),
            source,
        })?;
        let fd = sys::openat(
            tmp.as_fd(),
            &cname,
            sys::O_RDONLY | sys::O_DIRECTORY | sys::O_NOFOLLOW,
            0,
        )
        .map_err(|source| StoreError::Stage {
            what: name.clone(),
            source,
        })?;
        Ok(Staging {
            store: self,
            tmp,
            name: cname,
            fd,
            done: false,
        })
    }

    // ---- blobs ----

    fn blob_name(d: &Digest) -> CString {
        c(&d.hex())
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> Result<bool> {
        let dir = self.subdir("blobs/sha256")?;
        match sys::fstatat(dir.as_fd(), &Self::blob_name(d), true) {
            Ok(_) => Ok(true),
            Err(e) if enoent(&e) => Ok(false),
            Err(source) => Err(StoreError::ReadBlob { digest: *d, source }),
        }
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let dir = self.subdir("blobs/sha256")?;
        match sys::openat(
            dir.as_fd(),
            &Self::blob_name(d),
            sys::O_RDONLY | sys::O_NOFOLLOW,
            0,
        ) {
            Ok(fd) => Ok(File::from(fd)),
            Err(e) if enoent(&e) => Err(StoreError::BlobMissing { digest: *d }),
            Err(source) => Err(StoreError::ReadBlob { digest: *d, source }),
        }
    }

    /// Read a blob whole, refusing more than `limit` bytes.
    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let f = self.open_blob(d)?;
        let mut buf = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|source| StoreError::ReadBlob { digest: *d, source })?;
        if buf.len() as u64 > limit {
            return Err(StoreError::BlobTooLarge {
                digest: d.to_string(),
                limit,
            });
        }
        Ok(buf)
    }

    /// Copy `src` into the store as a blob, verifying it against
    /// `expected` (digest and size) when given, refusing more than `limit`
    /// bytes. Returns the digest and size. An existing blob of the same
    /// digest counts as success.
    pub fn put_blob(
        &self,
        src: &mut dyn Read,
        expected: Option<(Digest, u64)>,
        limit: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Digest, u64)> {
        let staged = self.stage_blob(src, expected, limit, progress)?;
        let out = (staged.digest, staged.size);
        staged.commit()?;
        Ok(out)
    }

    /// The first half of [`Store::put_blob`]: copy, verify and fsync the
    /// blob under `tmp/`, but do not name it yet. The import unpacks a
    /// layer from the staged copy and commits the blob only once the
    /// layer's diff_id has matched, so a bad layer commits nothing.
    pub fn stage_blob(
        &self,
        src: &mut dyn Read,
        expected: Option<(Digest, u64)>,
        limit: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<StagedBlob<'_>> {
        let tmp = self.subdir("tmp")?;
        let name = c(&format!("blob-{}", random_id()));
        let what = || match expected {
            Some((d, _)) => format!("blob {d}"),
            None => "blob".to_string(),
        };
        let fd = sys::openat(
            tmp.as_fd(),
            &name,
            sys::O_WRONLY | sys::O_CREAT | sys::O_EXCL,
            0o644,
        )
        .map_err(|source| StoreError::Stage {
            what: what(),
            source,
        })?;
        let mut staged = StagedBlob {
            store: self,
            tmp,
            name,
            digest: Digest::of(b""),
            size: 0,
            committed: false,
        };
        let max = expected.map_or(limit, |(_, s)| s.min(limit));
        let mut w = HashingWriter::new(File::from(fd));
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        let mut last = 0u64;
        let mut src = src.take(max + 1);
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StoreError::Stage {
                        what: what(),
                        source,
                    })
                }
            };
            total += n as u64;
            if total > max {
                break;
            }
            w.write_all(&buf[..n]).map_err(|source| StoreError::Stage {
                what: what(),
                source,
            })?;
            if total - last >= 8 << 20 {
                last = total;
                progress(total);
            }
        }
        let (file, hasher) = w.into_parts();
        let digest = hasher.finish();
        if let Some((d, size)) = expected {
            if total != size {
                return Err(StoreError::BlobSize {
                    digest: d,
                    expected: size,
                    actual: total,
                });
            }
            if digest != d {
                return Err(StoreError::BlobDigest {
                    expected: d,
                    actual: digest,
                });
            }
        } else if total > limit {
            return Err(StoreError::BlobTooLarge {
                digest: "(unnamed)".into(),
                limit,
            });
        }
        file.sync_all().map_err(|source| StoreError::Commit {
            what: what(),
            source,
        })?;
        progress(total);
        staged.digest = digest;
        staged.size = total;
        Ok(staged)
    }

    /// Store bytes already in memory (manifests, configs).
    pub fn put_blob_bytes(&self, bytes: &[u8], expected: Option<(Digest, u64)>) -> Result<Digest> {
        let mut r = bytes;
        Ok(self
            .put_blob(&mut r, expected, bytes.len() as u64, &mut |_| {})?
            .0)
    }

    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        self.list_digests("blobs/sha256")
    }

    /// The digest-named entries of a store directory; other names are ignored.
    fn list_digests(&self, sub: &str) -> Result<Vec<Digest>> {
        let dir = self.subdir(sub)?;
        let names = sys::list_dir(dir.as_fd()).map_err(|source| StoreError::Open {
            path: self.root.join(sub),
            source,
        })?;
        Ok(names
            .iter()
            .filter_map(|n| Digest::from_hex(n.to_str().ok()?).ok())
            .collect())
    }

    /// Move a blob aside (it failed verification) so a re-import rewrites it.
    pub fn quarantine_blob(&self, d: &Digest) -> Result<()> {
        self.move_to_trash("blobs/sha256", &d.hex())
    }

    fn move_to_trash(&self, dir: &str, name: &str) -> Result<()> {
        let from = self.subdir(dir)?;
        let tmp = self.subdir("tmp")?;
        let trash = c(&format!("trash-{}", random_id()));
        match sys::renameat2(from.as_fd(), &c(name), tmp.as_fd(), &trash, true) {
            Ok(()) => {}
            Err(e) if enoent(&e) => return Ok(()),
            Err(source) => {
                return Err(StoreError::Remove {
                    what: format!("{dir}/{name}"),
                    source,
                })
            }
        }
        let _ = sys::fsync(from.as_fd());
        remove_entry(tmp.as_fd(), &trash).map_err(|source| StoreError::Remove {
            what: format!("{dir}/{name}"),
            source,
        })
    }

    // ---- layers ----

    pub fn layer_dir_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex()).join("diff")
    }

    pub fn has_layer(&self, diff_id: &Digest) -> Result<bool> {
        let dir = self.subdir("layers")?;
        match sys::fstatat(dir.as_fd(), &c(&diff_id.hex()), true) {
            Ok(_) => Ok(true),
            Err(e) if enoent(&e) => Ok(false),
            Err(source) => Err(StoreError::Open {
                path: self.root.join("layers").join(diff_id.hex()),
                source,
            }),
        }
    }

    /// Open a committed layer's `diff` directory.
    pub fn open_layer(&self, diff_id: &Digest) -> Result<OwnedFd> {
        let dir = self.subdir("layers")?;
        let p = c(&format!("{}/diff", diff_id.hex()));
        sys::openat(
            dir.as_fd(),
            &p,
            sys::O_RDONLY | sys::O_DIRECTORY | sys::O_NOFOLLOW,
            0,
        )
        .map_err(|e| {
            if enoent(&e) {
                StoreError::LayerMissing { diff_id: *diff_id }
            } else {
                StoreError::Open {
                    path: self.layer_dir_path(diff_id),
                    source: e,
                }
            }
        })
    }

    /// Commit a staged layer (`staging/diff` filled and verified) as
    /// `layers/<hex>`. A layer already there counts as success.
    pub fn commit_layer(&self, mut staging: Staging<'_>, diff_id: &Digest) -> Result<()> {
        let what = || format!("layer {diff_id}");
        let link = random_id();
        let lfd = sys::openat(
            staging.fd.as_fd(),
            c"link",
            sys::O_WRONLY | sys::O_CREAT | sys::O_EXCL,
            0o644,
        )
        .map_err(|source| StoreError::Commit {
            what: what(),
            source,
        })?;
        let mut lf = File::from(lfd);
        lf.write_all(link.as_bytes())
            .map_err(|source| StoreError::Commit {
                what: what(),
                source,
            })?;
        drop(lf);
        // One syncfs covers every file and directory the unpack wrote.
        sys::syncfs(staging.fd.as_fd()).map_err(|source| StoreError::Commit {
            what: what(),
            source,
        })?;
        let layers = self.subdir("layers")?;
        staging.done = publish(
            (staging.tmp.as_fd(), &staging.name),
            (layers.as_fd(), &c(&diff_id.hex())),
            &what(),
            "layers directory",
        )?;
        drop(staging);
        self.ensure_link(diff_id)?;
        Ok(())
    }

    /// The short name `l/<id>` of a layer, created if missing (it is made
    /// after the layer's commit, so a crash can leave it out).
    pub fn ensure_link(&self, diff_id: &Digest) -> Result<String> {
        let err = |source| StoreError::Link {
            diff_id: *diff_id,
            source,
        };
        let layers = self.subdir("layers")?;
        let fd = sys::openat(
            layers.as_fd(),
            &c(&format!("{}/link", diff_id.hex())),
            sys::O_RDONLY | sys::O_NOFOLLOW,
            0,
        )
        .map_err(|e| {
            if enoent(&e) {
                StoreError::LayerMissing { diff_id: *diff_id }
            } else {
                err(e)
            }
        })?;
        let mut id = String::new();
        File::from(fd)
            .take(64)
            .read_to_string(&mut id)
            .map_err(err)?;
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad link file",
            )));
        }
        let l = self.subdir("l")?;
        let target = c(&format!("../layers/{}/diff", diff_id.hex()));
        match sys::symlinkat(&target, l.as_fd(), &c(&id)) {
            Ok(()) => {
                sys::fsync(l.as_fd()).map_err(err)?;
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let have = sys::readlinkat(l.as_fd(), &c(&id)).map_err(err)?;
                if have != target.as_bytes() {
                    return Err(err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "short name in use",
                    )));
                }
            }
            Err(e) => return Err(err(e)),
        }
        Ok(id)
    }

    pub fn list_layers(&self) -> Result<Vec<Digest>> {
        self.list_digests("layers")
    }

    /// Remove a layer (gc, or verify found it altered).
    pub fn remove_layer(&self, diff_id: &Digest) -> Result<()> {
        if let Ok(layers) = self.subdir("layers") {
            let link = sys::openat(
                layers.as_fd(),
                &c(&format!("{}/link", diff_id.hex())),
                sys::O_RDONLY | sys::O_NOFOLLOW,
                0,
            )
            .ok()
            .and_then(|fd| {
                let mut s = String::new();
                File::from(fd).take(64).read_to_string(&mut s).ok()?;
                Some(s)
            });
            if let Some(id) = link.filter(|s| !s.is_empty() && !s.contains('/')) {
                let l = self.subdir("l")?;
                let _ = sys::unlinkat(l.as_fd(), &c(&id), false);
            }
        }
        self.move_to_trash("layers", &diff_id.hex())
    }

    /// The always-empty directory used as a filler lowerdir.
    pub fn ensure_empty_dir(&self) -> Result<()> {
        match sys::mkdirat(self.dir.as_fd(), c"empty", 0o755) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(StoreError::CreateDir {
                path: self.root.join("empty"),
                source,
            }),
        }
    }

    /// Makes sure `scaffold/` exists: the bottom layer of every writable container
    /// rootfs, holding empty mount points ([`SCAFFOLD_DIRS`], [`SCAFFOLD_FILES`]). With
    /// it, an image that lacks `/proc` or `/etc/hostname` still shows them, so starting
    /// a container writes nothing into its writable layer, and removing one has nothing
    /// to delete there. Being the bottom layer, it never hides what an image has: an
    /// image's `/etc` symlink or whiteout wins over it.
    ///
    /// Built under `tmp/` and renamed into place, so concurrent starts agree on one.
    /// Not fsynced: it holds nothing but names, and a scaffold that lost them after a
    /// crash only means the mount points are made in the writable layer, as without it.
    pub fn ensure_scaffold(&self) -> Result<()> {
        if sys::fstatat(self.dir.as_fd(), c"scaffold", true)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        {
            return Ok(());
        }
        let tmp = self.subdir("tmp")?;
        let name = format!("scaffold-{}", random_id());
        let staged = self.root.join("tmp").join(&name);
        let build_err = |source| StoreError::Stage {
            what: staged.display().to_string(),
            source,
        };
        sys::mkdirat(tmp.as_fd(), &c(&name), 0o755).map_err(build_err)?;
        let dir = sys::openat(
            tmp.as_fd(),
            &c(&name),
            sys::O_RDONLY | sys::O_DIRECTORY | sys::O_NOFOLLOW,
            0,
        )
        .map_err(build_err)?;
        for d in SCAFFOLD_DIRS {
            sys::mkdirat(dir.as_fd(), &c(d), 0o755).map_err(build_err)?;
        }
        for f in SCAFFOLD_FILES {
            sys::openat(
                dir.as_fd(),
                &c(f),
                sys::O_WRONLY | sys::O_CREAT | sys::O_EXCL | sys::O_NOFOLLOW,
                0o644,
            )
            .map_err(build_err)?;
        }
        match sys::renameat2(tmp.as_fd(), &c(&name), self.dir.as_fd(), c"scaffold", true) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let _ = remove_entry(tmp.as_fd(), &c(&name));
                Ok(())
            }
            Err(source) => Err(StoreError::Commit {
                what: self.root.join("scaffold").display().to_string(),
                source,
            }),
        }
    }

    // ---- refs ----

    fn read_refs_unlocked(&self) -> Result<BTreeMap<String, Digest>> {
        match sys::openat(
            self.dir.as_fd(),
            c"refs.json",
            sys::O_RDONLY | sys::O_NOFOLLOW,
            0,
        ) {
            Ok(fd) => {
                let mut buf = Vec::new();
                File::from(fd)
                    .take(64 << 20)
                    .read_to_end(&mut buf)
                    .map_err(StoreError::ReadRefs)?;
                serde_json::from_slice(&buf).map_err(StoreError::ParseRefs)
            }
            Err(e) if enoent(&e) => Ok(BTreeMap::new()),
            Err(e) => Err(StoreError::ReadRefs(e)),
        }
    }

    /// The refs. Read without `refs.lock`: `refs.json` is only ever replaced whole
    /// by a rename, so a reader sees the old file or the new one, and needs neither
    /// to create the lock file nor to be able to open it (a user who can only read).
    pub fn refs(&self) -> Result<BTreeMap<String, Digest>> {
        self.read_refs_unlocked()
    }

    fn write_refs(&self, refs: &BTreeMap<String, Digest>) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(refs).map_err(StoreError::ParseRefs)?;
        let name = c(&format!("refs.json.{}", random_id()));
        let tmp = self.subdir("tmp")?;
        let fd = sys::openat(
            tmp.as_fd(),
            &name,
            sys::O_WRONLY | sys::O_CREAT | sys::O_EXCL,
            0o644,
        )
        .map_err(StoreError::WriteRefs)?;
        let guard = TmpFile {
            dir: tmp.as_fd(),
            name: &name,
        };
        let mut f = File::from(fd);
        f.write_all(&bytes).map_err(StoreError::WriteRefs)?;
        f.sync_all().map_err(StoreError::WriteRefs)?;
        sys::renameat2(tmp.as_fd(), &name, self.dir.as_fd(), c"refs.json", false)
            .map_err(StoreError::WriteRefs)?;
        std::mem::forget(guard);
        sys::fsync(self.dir.as_fd()).map_err(StoreError::WriteRefs)
    }

    /// Point `name` at `manifest` (replacing any previous target).
    pub fn set_ref(&self, name: &Reference, manifest: &Digest) -> Result<Option<Digest>> {
        let _g = self.lock("refs.lock", libc::LOCK_EX)?;
        let mut refs = self.read_refs_unlocked()?;
        let old = refs.insert(name.to_string(), *manifest);
        self.write_refs(&refs)?;
        Ok(old)
    }

    /// Drop a ref; the blobs and layers stay until gc.
    pub fn remove_ref(&self, name: &Reference) -> Result<Digest> {
        let _g = self.lock("refs.lock", libc::LOCK_EX)?;
        let mut refs = self.read_refs_unlocked()?;
        let old = refs
            .remove(&name.to_string())
            .ok_or_else(|| StoreError::UnknownRef(name.to_string()))?;
        self.write_refs(&refs)?;
        Ok(old)
    }

    /// Resolve `name:tag`, a bare name (`:latest`), a full digest, or a
    /// unique digest prefix of at least 6 hex characters among refs.
    pub fn resolve(&self, s: &str) -> Result<(Option<String>, Digest)> {
        if let Ok(d) = Digest::parse(s) {
            if self.has_blob(&d)? {
                return Ok((None, d));
            }
            return Err(StoreError::UnknownRef(s.into()));
        }
        let refs = self.refs()?;
        if let Ok(r) = Reference::parse(s) {
            if let Some(d) = refs.get(&r.to_string()) {
                return Ok((Some(r.to_string()), *d));
            }
        }
        let prefix = s.strip_prefix("sha256:").unwrap_or(s);
        if prefix.len() >= 6 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: BTreeSet<Digest> = refs
                .values()
                .filter(|d| d.hex().starts_with(prefix))
                .copied()
                .collect();
            if hits.len() == 1 {
                let d = *hits.iter().next().expect("one hit");
                return Ok((None, d));
            }
        }
        Err(StoreError::UnknownRef(s.into()))
    }

    // ---- reading images ----

    pub fn manifest(&self, d: &Digest) -> Result<Manifest> {
        let bytes = self.read_blob(d, oci::MAX_MANIFEST_BYTES)?;
        match oci::parse_document(&bytes, None, &format!("manifest {d}")) {
            Ok(Document::Manifest(m)) => Ok(m),
            Ok(Document::Index(_)) => Err(StoreError::Manifest {
                digest: *d,
                source: oci::OciError::NotADocument {
                    what: "an index where a manifest was expected".into(),
                },
            }),
            Err(source) => Err(StoreError::Manifest { digest: *d, source }),
        }
    }

    pub fn config(&self, m: &Manifest) -> Result<ImageConfig> {
        let d = m.config.digest;
        let bytes = self.read_blob(&d, oci::MAX_CONFIG_BYTES)?;
        oci::parse_config(&bytes, m.layers.len(), &format!("config {d}"))
            .map_err(|source| StoreError::Config { digest: d, source })
    }

    // ---- holds ----

    /// Mark an image in use (by a mount or a container) so gc keeps it.
    /// `name`: 1–64 of `[A-Za-z0-9._-]`, not starting with a dot.
    /// The hold is durable (fsynced): use it for containers that outlive
    /// a reboot.
    pub fn hold(&self, name: &str, manifest: &Digest) -> Result<()> {
        self.hold_with(name, manifest, true, None)
    }

    /// A hold for something that cannot outlive the running system (a
    /// mount): written without fsync, which is most of a mount's cost.
    /// gc drops a volatile hold whose recorded mount point is no longer
    /// mounted (say, after a reboot).
    pub fn hold_volatile(&self, name: &str, manifest: &Digest, mountpoint: &Path) -> Result<()> {
        self.hold_with(name, manifest, false, Some(mountpoint))
    }

    fn hold_with(
        &self,
        name: &str,
        manifest: &Digest,
        durable: bool,
        mountpoint: Option<&Path>,
    ) -> Result<()> {
        check_hold_name(name)?;
        let dir = self.subdir("holds")?;
        let tmpname = c(&format!(".{name}.{}", random_id()));
        let err = |source| StoreError::Hold {
            name: name.into(),
            source,
        };
        let fd = sys::openat(
            dir.as_fd(),
            &tmpname,
            sys::O_WRONLY | sys::O_CREAT | sys::O_EXCL,
            0o644,
        )
        .map_err(err)?;
        let mut f = File::from(fd);
        let mut body = manifest.to_string().into_bytes();
        if let Some(m) = mountpoint {
            body.push(b'\n');
            body.extend_from_slice(m.as_os_str().as_encoded_bytes());
        }
        f.write_all(&body).map_err(err)?;
        if durable {
            f.sync_all().map_err(err)?;
        }
        sys::renameat2(dir.as_fd(), &tmpname, dir.as_fd(), &c(name), false).map_err(err)?;
        if durable {
            sys::fsync(dir.as_fd()).map_err(err)?;
        }
        Ok(())
    }

    /// Mark an image in use by a running container. Not fsynced: the container
    /// takes it again each time it starts.
    pub fn hold_container(&self, name: &str, manifest: &Digest) -> Result<()> {
        self.hold_with(name, manifest, false, None)
    }

    pub fn release(&self, name: &str) -> Result<bool> {
        check_hold_name(name)?;
        let dir = self.subdir("holds")?;
        match sys::unlinkat(dir.as_fd(), &c(name), false) {
            Ok(()) => Ok(true),
            Err(e) if enoent(&e) => Ok(false),
            Err(source) => Err(StoreError::Hold {
                name: name.into(),
                source,
            }),
        }
    }

    pub fn holds(&self) -> Result<BTreeMap<String, Digest>> {
        let dir = self.subdir("holds")?;
        let mut out = BTreeMap::new();
        let names = sys::list_dir(dir.as_fd()).map_err(|source| StoreError::Hold {
            name: "*".into(),
            source,
        })?;
        for n in names {
            let Ok(s) = n.to_str() else { continue };
            if s.starts_with('.') {
                continue;
            }
            let Ok(fd) = sys::openat(dir.as_fd(), &n, sys::O_RDONLY | sys::O_NOFOLLOW, 0) else {
                continue;
            };
            let mut v = String::new();
            if File::from(fd).take(8192).read_to_string(&mut v).is_ok() {
                if let Ok(d) = Digest::parse(v.lines().next().unwrap_or("").trim()) {
                    out.insert(s.to_string(), d);
                }
            }
        }
        Ok(out)
    }

    // ---- gc ----

    /// Release volatile holds whose mount point is no longer mounted.
    fn drop_stale_mount_holds(&self) -> Result<()> {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return Ok(()); // cannot tell: keep them
        };
        // Field 5 is the mount point, with space, tab, newline and
        // backslash octal-escaped (proc(5)).
        let mounted: BTreeSet<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mountinfo)
            .collect();
        let dir = self.subdir("holds")?;
        for n in sys::list_dir(dir.as_fd()).unwrap_or_default() {
            let Ok(name) = n.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let Ok(fd) = sys::openat(dir.as_fd(), &n, sys::O_RDONLY | sys::O_NOFOLLOW, 0) else {
                continue;
            };
            let mut v = String::new();
            if File::from(fd).take(8192).read_to_string(&mut v).is_err() {
                continue;
            }
            if let Some(mp) = v.lines().nth(1) {
                if !mounted.contains(mp) {
                    log::info!("dropping hold {name}: {mp} is no longer mounted");
                    self.release(name)?;
                }
            }
        }
        Ok(())
    }

    /// Remove every blob and layer that no ref and no hold reaches.
    pub fn gc(&self) -> Result<GcReport> {
        let _g = self.lock_exclusive()?;
        let mut roots: BTreeSet<Digest> = self.refs()?.into_values().collect();
        self.drop_stale_mount_holds()?;
        roots.extend(self.holds()?.into_values());
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for m in &roots {
            keep_blobs.insert(*m);
            // A root whose manifest cannot be read keeps nothing more; gc
            // must not fail the whole store over one broken image.
            let Ok(man) = self.manifest(m) else { continue };
            keep_blobs.insert(man.config.digest);
            keep_blobs.extend(man.layers.iter().map(|l| l.digest));
            if let Ok(cfg) = self.config(&man) {
                keep_layers.extend(cfg.rootfs.diff_ids);
            }
        }
        let mut report = GcReport::default();
        for b in self.list_blobs()? {
            if !keep_blobs.contains(&b) {
                let size = self.blob_path(&b).metadata().map(|m| m.len()).unwrap_or(0);
                self.move_to_trash("blobs/sha256", &b.hex())?;
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        for l in self.list_layers()? {
            if !keep_layers.contains(&l) {
                self.remove_layer(&l)?;
                report.layers_removed += 1;
            }
        }
        // Short names whose layer is gone.
        let l = self.subdir("l")?;
        for n in sys::list_dir(l.as_fd()).unwrap_or_default() {
            if sys::fstatat(l.as_fd(), &n, false).is_err() {
                let _ = sys::unlinkat(l.as_fd(), &n, false);
            }
        }
        Ok(report)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub layers_removed: u64,
    pub bytes_freed: u64,
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_hold_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::HoldName(name.chars().take(80).collect()))
    }
}

/// Unlinks a staged file on drop unless forgotten.
struct TmpFile<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
}

impl Drop for TmpFile<'_> {
    fn drop(&mut self) {
        let _ = sys::unlinkat(self.dir, self.name, false);
    }
}

/// A verified, fsynced blob in `tmp/`, not yet named; unlinked on drop
/// unless committed.
pub struct StagedBlob<'s> {
    store: &'s Store,
    tmp: OwnedFd,
    name: CString,
    digest: Digest,
    size: u64,
    committed: bool,
}

impl StagedBlob<'_> {
    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Read the staged bytes.
    pub fn open(&self) -> Result<File> {
        sys::openat(
            self.tmp.as_fd(),
            &self.name,
            sys::O_RDONLY | sys::O_NOFOLLOW,
            0,
        )
        .map(File::from)
        .map_err(|source| StoreError::Stage {
            what: format!("blob {}", self.digest),
            source,
        })
    }

    /// Name it `blobs/sha256/<hex>`; an existing blob counts as success.
    pub fn commit(mut self) -> Result<()> {
        let what = || format!("blob {}", self.digest);
        let blobs = self.store.subdir("blobs/sha256")?;
        // When another import won, drop unlinks ours.
        self.committed = publish(
            (self.tmp.as_fd(), &self.name),
            (blobs.as_fd(), &Store::blob_name(&self.digest)),
            &what(),
            "blobs directory",
        )?;
        Ok(())
    }
}

impl Drop for StagedBlob<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = sys::unlinkat(self.tmp.as_fd(), &self.name, false);
        }
    }
}

/// A staging directory `tmp/<kind>-<id>`; removed on drop unless committed.
pub struct Staging<'s> {
    store: &'s Store,
    tmp: OwnedFd,
    name: CString,
    fd: OwnedFd,
    done: bool,
}

impl Staging<'_> {
    /// The staging directory itself.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Create and open `diff/` inside the staging directory.
    pub fn make_diff_dir(&self) -> Result<OwnedFd> {
        let err = |source| StoreError::Stage {
            what: "layer diff directory".into(),
            source,
        };
        sys::mkdirat(self.fd.as_fd(), c"diff", 0o755).map_err(err)?;
        sys::openat(
            self.fd.as_fd(),
            c"diff",
            sys::O_RDONLY | sys::O_DIRECTORY | sys::O_NOFOLLOW,
            0,
        )
        .map_err(err)
    }

    pub fn store(&self) -> &Store {
        self.store
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = remove_entry(self.tmp.as_fd(), &self.name) {
                log::warn!("removing staging {}: {e}", self.name.to_string_lossy());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_is_built_once_with_every_mount_point() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("s")).unwrap();
        let scaffold = t.path().join("s/scaffold");
        // Concurrent starts: every thread succeeds, one scaffold wins, no staging left.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| store.ensure_scaffold().unwrap());
            }
        });
        for d in SCAFFOLD_DIRS {
            assert!(scaffold.join(d).is_dir(), "{d}");
        }
        for f in SCAFFOLD_FILES {
            let meta = std::fs::symlink_metadata(scaffold.join(f)).unwrap();
            assert!(meta.is_file() && meta.len() == 0, "{f}");
        }
        let staged: Vec<_> = std::fs::read_dir(t.path().join("s/tmp")).unwrap().collect();
        assert!(staged.is_empty(), "{staged:?}");
        store.ensure_scaffold().unwrap();
    }

    #[test]
    fn random_ids_differ_and_use_the_alphabet() {
        let ids: BTreeSet<String> = (0..1000).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 10
            && id
                .bytes()
                .all(|b| b"abcdefghijklmnopqrstuvwxyz234567".contains(&b))));
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/x\\134y"), "/x\\y");
        assert_eq!(unescape_mountinfo("/plain\\04"), "/plain\\04");
    }

    #[test]
    fn hold_names() {
        assert!(check_hold_name("mount-0123abcd").is_ok());
        for bad in ["", ".x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(check_hold_name(bad).is_err(), "{bad:?}");
        }
    }
}
