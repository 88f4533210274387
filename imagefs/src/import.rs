//! Importing images: OCI layouts (directory or tar) and docker-archive tars.
//!
//! The source is only read. Nothing from it becomes a path: OCI blobs are
//! looked up by [`Digest`] (already validated), and archive members by
//! their cleaned name in an index of the archive built up front. Every
//! blob is verified against its descriptor's digest and size while it is
//! copied into the store; every layer is unpacked from the stored copy into
//! staging and checked against its `diff_id` before it is committed; the
//! ref is written last.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::layer::{self, CleanPath, LayerError, LayerStats, Limits};
use crate::oci::{
    self, ConfigError, Descriptor, Document, ImageConfig, Manifest, OciError, Platform,
};
use crate::reference::{Reference, ReferenceError};
use crate::store::{StagedBlob, Store, StoreError};
use crate::text;

/// Most members an outer image archive may have.
const MAX_ARCHIVE_MEMBERS: usize = 100_000;
/// Largest layer blob copied into the store.
const MAX_BLOB_BYTES: u64 = 64 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a regular file or a directory")]
    NotAFile { path: PathBuf },
    #[error("{path} is empty (0 bytes): not an image archive")]
    EmptyFile { path: PathBuf },
    #[error("{path} is {format}-compressed, not a tar archive: decompress it first")]
    Compressed { path: PathBuf, format: &'static str },
    #[error("{path} is not a tar archive: its first 512 bytes are not a tar header")]
    NotTar { path: PathBuf },
    #[error("{path} is truncated: it ends {where_}")]
    Truncated { path: PathBuf, where_: String },
    #[error("{path} is a damaged tar archive: the tar header at offset {offset} (after {after}) {reason}")]
    BadHeader {
        path: PathBuf,
        offset: u64,
        after: String,
        reason: &'static str,
    },
    #[error("{path} is a tar archive but not an image: it has neither index.json (OCI layout) nor manifest.json (docker-archive)")]
    UnknownFormat { path: PathBuf },
    #[error("{path} is not an OCI image layout: {reason}")]
    NotLayout { path: PathBuf, reason: &'static str },
    #[error("{path} is an incomplete image: {what} (blobs present: {blobs_present}) — an image cut short, for example an initramfs that did not fit in memory")]
    Incomplete {
        path: PathBuf,
        what: String,
        blobs_present: usize,
    },
    #[error("reading archive {path}")]
    Archive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {path} has more than {limit} members")]
    TooManyMembers { path: PathBuf, limit: usize },
    #[error("{what} is missing from the image")]
    Missing { what: String },
    #[error("reading {what} from the image")]
    ReadSource {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("oci-layout says version \"{0}\", expected 1.0.0")]
    LayoutVersion(String),
    #[error("invalid image document")]
    Document(#[source] OciError),
    #[error("invalid image config")]
    Config(#[source] ConfigError),
    #[error("{what} has digest {actual} and size {actual_size}, but its descriptor says {expected} and {expected_size}")]
    DescriptorMismatch {
        what: String,
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },
    #[error("no image for platform {wanted} (available: {available})")]
    NoPlatform { wanted: String, available: String },
    #[error("the image holds several images ({candidates}); pick one with --select")]
    Ambiguous { candidates: String },
    #[error("indexes nested deeper than {0}")]
    TooDeep(usize),
    #[error("invalid image name")]
    Name(#[source] ReferenceError),
    #[error("unpacking layer {index} ({digest})")]
    Layer {
        index: usize,
        digest: Digest,
        #[source]
        source: LayerError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ImportError {
    /// Does the message name the image's path already? A caller that says which
    /// image failed then need not repeat it.
    pub fn names_path(&self) -> bool {
        matches!(
            self,
            ImportError::Open { .. }
                | ImportError::NotAFile { .. }
                | ImportError::EmptyFile { .. }
                | ImportError::Compressed { .. }
                | ImportError::NotTar { .. }
                | ImportError::Truncated { .. }
                | ImportError::BadHeader { .. }
                | ImportError::UnknownFormat { .. }
                | ImportError::NotLayout { .. }
                | ImportError::Incomplete { .. }
                | ImportError::Archive { .. }
                | ImportError::TooManyMembers { .. }
        )
    }
}

pub type Result<T, E = ImportError> = std::result::Result<T, E>;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The ref to write; derived from the image when absent.
    pub name: Option<Reference>,
    /// Platform to pick from an index; `linux/amd64` when absent.
    pub platform: Option<Platform>,
    /// Pick an image from a layout holding several, by its
    /// `org.opencontainers.image.ref.name` (OCI) or repo tag (docker-archive).
    pub select: Option<String>,
    pub limits: Limits,
}

/// What an import reports while it runs. Also the test hook for the
/// kill-during-import test, which stops the process at chosen events.
#[derive(Debug, Clone)]
pub enum Event {
    Resolved {
        layers: usize,
        bytes: u64,
    },
    BlobProgress {
        index: usize,
        done: u64,
        total: u64,
    },
    BlobStored {
        index: usize,
        digest: Digest,
    },
    /// The layer's blob is in staging and its unpacking starts.
    LayerUnpacking {
        index: usize,
    },
    LayerProgress {
        index: usize,
        done: u64,
    },
    LayerUnpacked {
        index: usize,
        diff_id: Digest,
        stats: LayerStats,
    },
    LayerPresent {
        index: usize,
        diff_id: Digest,
    },
    ImageStored {
        manifest: Digest,
    },
    RefWritten {
        name: String,
    },
}

/// The outcome of an import.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub name: String,
    pub manifest: Digest,
    pub layers: usize,
    pub layers_unpacked: usize,
    pub replaced: Option<Digest>,
}

// ---- sources ----

trait Source {
    /// Open a member by its cleaned path.
    fn open(&self, path: &str) -> io::Result<Option<(Box<dyn Read + '_>, u64)>>;
    /// The directory or archive, for messages.
    fn path(&self) -> &Path;
    /// How many files `blobs/sha256/` holds: how far an image cut short got.
    fn blobs_present(&self) -> usize;
}

struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// A directory that holds none of an OCI layout's parts is refused here, with
    /// what it lacks; one that holds some of them but not `index.json` is an image cut
    /// short, which [`resolve_oci`] reports.
    fn new(root: &Path) -> Result<DirSource> {
        let has = |name: &str| root.join(name).symlink_metadata().is_ok();
        if !(has("index.json") || has("oci-layout") || has("blobs")) {
            let empty = std::fs::read_dir(root)
                .map_err(|source| ImportError::Open {
                    path: root.to_path_buf(),
                    source,
                })?
                .next()
                .is_none();
            return Err(ImportError::NotLayout {
                path: root.to_path_buf(),
                reason: if empty {
                    "the directory is empty"
                } else {
                    "it has no index.json, oci-layout or blobs/"
                },
            });
        }
        Ok(DirSource {
            root: root.to_path_buf(),
        })
    }
}

impl Source for DirSource {
    fn path(&self) -> &Path {
        &self.root
    }

    fn blobs_present(&self) -> usize {
        std::fs::read_dir(self.root.join("blobs/sha256")).map_or(0, |d| d.count())
    }

    fn open(&self, path: &str) -> io::Result<Option<(Box<dyn Read + '_>, u64)>> {
        // `path` is one of our own fixed names or `blobs/sha256/<hex>` built
        // from a validated digest.
        match File::open(self.root.join(path)) {
            Ok(f) => {
                let size = f.metadata()?.len();
                Ok(Some((
                    Box::new(io::BufReader::with_capacity(256 << 10, f)),
                    size,
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

struct TarSource {
    path: PathBuf,
    file: File,
    members: HashMap<String, Member>,
}

impl TarSource {
    fn index(path: &Path) -> Result<TarSource> {
        let file = File::open(path).map_err(|source| ImportError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| ImportError::Open {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        check_tar_start(&file, len, path)?;
        let hit_eof = Cell::new(false);
        let last_read_at = Cell::new(0);
        let truncated = |where_: String| ImportError::Truncated {
            path: path.to_path_buf(),
            where_,
        };
        let mut members = HashMap::new();
        // The last member read: its name and where its data ends.
        let mut last: Option<(String, u64)> = None;
        let after = |last: &Option<(String, u64)>| match last {
            Some((name, _)) if name.is_empty() => "member .".to_string(),
            Some((name, _)) => format!("member {}", text::printable(name, text::MAX_SHOWN)),
            None => "the start".to_string(),
        };
        {
            let mut ar = tar::Archive::new(EofWatch {
                file: &file,
                hit_eof: &hit_eof,
                last_read_at: &last_read_at,
            });
            let entries = ar
                .entries_with_seek()
                .map_err(|source| ImportError::Archive {
                    path: path.to_path_buf(),
                    source,
                })?;
            for e in entries {
                let e = match e {
                    Ok(e) => e,
                    // The tar reader's message quotes the header's bytes (lossily
                    // decoded): it is left out, and the header's fault told instead.
                    Err(_) if hit_eof.get() => {
                        return Err(truncated(format!(
                            "inside the tar header after {}",
                            after(&last)
                        )))
                    }
                    Err(_) => {
                        let offset = last_read_at.get() / TAR_BLOCK * TAR_BLOCK;
                        let mut block = [0u8; TAR_BLOCK as usize];
                        let checksum_ok =
                            file.read_at(&mut block, offset).is_ok() && header_checksum_ok(&block);
                        return Err(ImportError::BadHeader {
                            path: path.to_path_buf(),
                            offset,
                            after: after(&last),
                            reason: if checksum_ok {
                                "has a malformed field"
                            } else {
                                "fails its checksum"
                            },
                        });
                    }
                };
                if members.len() >= MAX_ARCHIVE_MEMBERS {
                    return Err(ImportError::TooManyMembers {
                        path: path.to_path_buf(),
                        limit: MAX_ARCHIVE_MEMBERS,
                    });
                }
                let name = CleanPath::new(&e.path_bytes()).display();
                last = Some((name.clone(), e.raw_file_position().saturating_add(e.size())));
                match e.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        members.insert(
                            name,
                            Member::File {
                                offset: e.raw_file_position(),
                                size: e.size(),
                            },
                        );
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        let Some(target) = e.link_name_bytes() else {
                            continue;
                        };
                        let target = String::from_utf8_lossy(&target).into_owned();
                        let full = if e.header().entry_type() == tar::EntryType::Symlink
                            && !target.starts_with('/')
                        {
                            let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                            format!("{dir}/{target}")
                        } else {
                            target
                        };
                        members.insert(
                            name,
                            Member::Link(CleanPath::new(full.as_bytes()).display()),
                        );
                    }
                    _ => {}
                }
            }
        }
        // The tar reader skips over a member's data with a seek, which succeeds past
        // the end of the file; reading the next header then finds nothing, which it
        // takes for the end of the archive. A member cut short shows here.
        if let Some((name, data_end)) = &last {
            let shown = text::printable(name, text::MAX_SHOWN);
            if *data_end > len {
                return Err(truncated(format!(
                    "inside the data of member {shown} ({} bytes missing)",
                    data_end - len
                )));
            }
            if data_end.next_multiple_of(TAR_BLOCK) > len {
                return Err(truncated(format!(
                    "inside the padding after member {shown}"
                )));
            }
        }
        Ok(TarSource {
            path: path.to_path_buf(),
            file,
            members,
        })
    }

    fn has(&self, p: &str) -> bool {
        self.members.contains_key(p)
    }
}

const TAR_BLOCK: u64 = 512;

/// Reads and seeks the archive file, noting when a read finds its end (a header the
/// tar reader then fails to parse was cut short, not malformed) and where the last
/// read started (the tar reader reads only headers: it seeks over data).
struct EofWatch<'a> {
    file: &'a File,
    hit_eof: &'a Cell<bool>,
    last_read_at: &'a Cell<u64>,
}

impl Read for EofWatch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.last_read_at.set(self.file.stream_position()?);
        let n = self.file.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof.set(true);
        }
        Ok(n)
    }
}

impl Seek for EofWatch<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Compression formats told by their first bytes, for a clear refusal: the archive is
/// read with seeks, so it must be a plain tar.
const COMPRESSED_MAGIC: &[(&[u8], &str)] = &[
    (&[0x1f, 0x8b], "gzip"),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
    (b"BZh", "bzip2"),
];

/// Refuse, with a message that says what the file is, anything that does not start
/// like a tar archive: an empty file, a compressed one, or a first block that is not
/// a tar header (its checksum does not match). Nothing of the file is quoted.
fn check_tar_start(file: &File, len: u64, path: &Path) -> Result<()> {
    let path_buf = || path.to_path_buf();
    if len == 0 {
        return Err(ImportError::EmptyFile { path: path_buf() });
    }
    let mut head = [0u8; TAR_BLOCK as usize];
    let n = file
        .read_at(&mut head, 0)
        .map_err(|source| ImportError::Archive {
            path: path_buf(),
            source,
        })?;
    let head = head.get(..n).unwrap_or_default();
    if let Some((_, format)) = COMPRESSED_MAGIC.iter().find(|(m, _)| head.starts_with(m)) {
        return Err(ImportError::Compressed {
            path: path_buf(),
            format,
        });
    }
    if (n as u64) < TAR_BLOCK {
        // Shorter than one header: a tar cut inside its first header still shows the
        // "ustar" magic at offset 257, or before it a name and an octal mode.
        return Err(
            if head.get(257..262) == Some(b"ustar") || starts_like_a_header(head) {
                ImportError::Truncated {
                    path: path_buf(),
                    where_: "inside its first tar header".into(),
                }
            } else {
                ImportError::NotTar { path: path_buf() }
            },
        );
    }
    if head.iter().all(|&b| b == 0) || header_checksum_ok(head) {
        Ok(())
    } else {
        Err(ImportError::NotTar { path: path_buf() })
    }
}

/// Do these first bytes (at least the name and mode fields) look like the start of a
/// tar header: a name of printable characters padded with NULs, then an octal mode?
fn starts_like_a_header(head: &[u8]) -> bool {
    let (Some(name), Some(mode)) = (head.get(..100), head.get(100..108)) else {
        return false;
    };
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let (text, padding) = name.split_at(name_len);
    !text.is_empty()
        && text.iter().all(|&b| b >= 0x20 && b != 0x7f)
        && padding.iter().all(|&b| b == 0)
        && mode.iter().all(|&b| matches!(b, b'0'..=b'7' | b' ' | 0))
        && mode.iter().any(u8::is_ascii_digit)
}

/// Does a 512-byte block's checksum field (octal, at 148..156) match the sum of its
/// bytes with that field counted as spaces? Old tars summed signed bytes: either
/// sum is accepted, as GNU tar does.
fn header_checksum_ok(block: &[u8]) -> bool {
    let Some(field) = block.get(148..156) else {
        return false;
    };
    let digits = field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| (b'0'..=b'7').contains(&b));
    let mut stored: u64 = 0;
    let mut any = false;
    for &d in digits {
        stored = stored * 8 + u64::from(d - b'0');
        any = true;
    }
    if !any {
        return false;
    }
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// Reads a byte range of the archive with pread, so several can coexist.
struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Source for TarSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn blobs_present(&self) -> usize {
        self.members
            .keys()
            .filter(|k| k.starts_with("blobs/sha256/"))
            .count()
    }

    fn open(&self, path: &str) -> io::Result<Option<(Box<dyn Read + '_>, u64)>> {
        let mut p = path.to_string();
        for _ in 0..16 {
            match self.members.get(&p) {
                None => return Ok(None),
                Some(Member::Link(t)) => p = t.clone(),
                Some(Member::File { offset, size }) => {
                    let r = RangeReader {
                        file: &self.file,
                        pos: *offset,
                        end: offset + size,
                    };
                    return Ok(Some((
                        Box::new(io::BufReader::with_capacity(256 << 10, r)),
                        *size,
                    )));
                }
            }
        }
        Ok(None)
    }
}

fn open_member<'a>(
    src: &'a dyn Source,
    path: &str,
    what: &str,
) -> Result<(Box<dyn Read + 'a>, u64)> {
    src.open(path)
        .map_err(|source| ImportError::ReadSource {
            what: what.into(),
            source,
        })?
        .ok_or_else(|| ImportError::Missing { what: what.into() })
}

fn read_member(src: &dyn Source, path: &str, what: &str, limit: u64) -> Result<Vec<u8>> {
    let (r, _) = open_member(src, path, what)?;
    oci::read_limited(r, limit, what).map_err(ImportError::Document)
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The image at `src` lacks something: `what` says what.
fn incomplete(src: &dyn Source, what: String) -> ImportError {
    ImportError::Incomplete {
        path: src.path().to_path_buf(),
        what,
        blobs_present: src.blobs_present(),
    }
}

/// Open the blob a descriptor names. One that is absent, or shorter than its
/// descriptor says, is what an image cut short looks like: say so, rather than
/// leave it to a digest mismatch.
fn open_blob<'a>(
    src: &'a dyn Source,
    desc: &Descriptor,
    role: &str,
) -> Result<(Box<dyn Read + 'a>, u64)> {
    let what = format!("{role} {}", desc.digest);
    let opened = src
        .open(&blob_path(&desc.digest))
        .map_err(|source| ImportError::ReadSource {
            what: what.clone(),
            source,
        })?;
    match opened {
        None => Err(incomplete(
            src,
            format!("blob {} ({role}) is missing", desc.digest),
        )),
        Some((_, size)) if size < desc.size => Err(incomplete(
            src,
            format!(
                "blob {} ({role}) is cut short: {size} of {} bytes",
                desc.digest, desc.size
            ),
        )),
        Some(opened) => Ok(opened),
    }
}

/// Read a small blob named by a descriptor, verifying digest and size.
fn read_verified(src: &dyn Source, desc: &Descriptor, role: &str, limit: u64) -> Result<Vec<u8>> {
    let what = &format!("{role} {}", desc.digest);
    if desc.size > limit {
        return Err(ImportError::Document(OciError::TooLarge {
            what: what.into(),
            limit,
        }));
    }
    let (r, _) = open_blob(src, desc, role)?;
    let bytes = oci::read_limited(r, limit, what).map_err(ImportError::Document)?;
    let actual = Digest::of(&bytes);
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        return Err(ImportError::DescriptorMismatch {
            what: what.into(),
            expected: desc.digest,
            expected_size: desc.size,
            actual,
            actual_size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

// ---- resolution ----

/// An image chosen from the source, before anything is committed.
struct Resolved {
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    config_bytes: Vec<u8>,
    config: ImageConfig,
    /// Where each layer blob lives in the source.
    layer_paths: Vec<String>,
    /// The layers are OCI blobs named by their descriptors (not docker-archive
    /// members hashed just now), so one that is missing or short is an image cut short.
    layers_are_blobs: bool,
    name_hint: Option<String>,
}

fn resolve_oci(src: &dyn Source, opts: &ImportOptions) -> Result<Resolved> {
    // Without index.json nothing of the image can be found: if other parts are here
    // (DirSource::new saw to that), it is an image cut short.
    if src
        .open("index.json")
        .map_err(|source| ImportError::ReadSource {
            what: "index.json".into(),
            source,
        })?
        .is_none()
    {
        return Err(incomplete(src, "index.json is missing".into()));
    }
    if let Ok(layout) = read_member(src, "oci-layout", "oci-layout", 4096) {
        #[derive(serde::Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let l: Layout = serde_json::from_slice(&layout).map_err(|source| {
            ImportError::Document(OciError::Parse {
                what: "oci-layout".into(),
                source,
            })
        })?;
        if l.version != "1.0.0" {
            return Err(ImportError::LayoutVersion(text::printable(
                &l.version,
                text::MAX_SHOWN,
            )));
        }
    }
    let index_bytes = read_member(src, "index.json", "index.json", oci::MAX_MANIFEST_BYTES)?;
    let index = match oci::parse_document(&index_bytes, Some(oci::MT_OCI_INDEX), "index.json")
        .map_err(ImportError::Document)?
    {
        Document::Index(i) => i,
        Document::Manifest(_) => {
            unreachable!("parse_document checks the shape against the media type")
        }
    };
    let wanted = opts.platform.clone().unwrap_or_else(Platform::linux_amd64);
    let mut candidates = index.manifests;
    if let Some(sel) = &opts.select {
        candidates.retain(|d| d.ref_name() == Some(sel.as_str()));
        if candidates.is_empty() {
            return Err(ImportError::Missing {
                what: format!(
                    "image named \"{}\" in index.json",
                    text::printable(sel, text::MAX_SHOWN)
                ),
            });
        }
    }
    let mut name_hint = None;
    for depth in 0..=oci::MAX_INDEX_DEPTH {
        let desc = pick(&candidates, &wanted)?;
        if name_hint.is_none() {
            name_hint = desc.full_name().or(desc.ref_name()).map(str::to_string);
        }
        let what = format!("manifest {}", desc.digest);
        let bytes = read_verified(src, &desc, "manifest", oci::MAX_MANIFEST_BYTES)?;
        match oci::parse_document(&bytes, Some(&desc.media_type), &what)
            .map_err(ImportError::Document)?
        {
            Document::Index(i) => {
                if depth == oci::MAX_INDEX_DEPTH {
                    return Err(ImportError::TooDeep(oci::MAX_INDEX_DEPTH));
                }
                candidates = i.manifests;
            }
            Document::Manifest(manifest) => {
                let cwhat = format!("config {}", manifest.config.digest);
                let config_bytes =
                    read_verified(src, &manifest.config, "config", oci::MAX_CONFIG_BYTES)?;
                let config = oci::parse_config(&config_bytes, manifest.layers.len(), &cwhat)
                    .map_err(ImportError::Config)?;
                let layer_paths = manifest
                    .layers
                    .iter()
                    .map(|l| blob_path(&l.digest))
                    .collect();
                return Ok(Resolved {
                    manifest_bytes: bytes,
                    manifest,
                    config_bytes,
                    config,
                    layer_paths,
                    layers_are_blobs: true,
                    name_hint,
                });
            }
        }
    }
    Err(ImportError::TooDeep(oci::MAX_INDEX_DEPTH))
}

/// Names from the image for a message: each made printable, at most ten of them.
fn shown_list(items: impl Iterator<Item = String>) -> String {
    const MAX_ITEMS: usize = 10;
    let mut shown = Vec::new();
    let mut more = 0;
    for item in items {
        if shown.len() < MAX_ITEMS {
            shown.push(text::printable(&item, text::MAX_SHOWN));
        } else {
            more += 1;
        }
    }
    let mut line = shown.join(", ");
    if more > 0 {
        line.push_str(&format!(" and {more} more"));
    }
    line
}

/// Choose one descriptor: a platform match, else the only candidate
/// without platform information.
fn pick(cands: &[Descriptor], wanted: &Platform) -> Result<Descriptor> {
    let matching: Vec<&Descriptor> = cands
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
        .collect();
    if let Some(d) = matching.first() {
        return Ok((*d).clone());
    }
    let unlabelled: Vec<&Descriptor> = cands.iter().filter(|d| d.platform.is_none()).collect();
    match unlabelled.len() {
        1 => Ok(unlabelled[0].clone()),
        0 => Err(ImportError::NoPlatform {
            wanted: wanted.to_string(),
            available: shown_list(
                cands
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| p.to_string())),
            ),
        }),
        _ => Err(ImportError::Ambiguous {
            candidates: shown_list(unlabelled.iter().map(|d| {
                d.ref_name()
                    .map_or_else(|| d.digest.to_string(), str::to_string)
            })),
        }),
    }
}

fn resolve_docker(src: &TarSource, opts: &ImportOptions) -> Result<Resolved> {
    let bytes = read_member(
        src,
        "manifest.json",
        "manifest.json",
        oci::MAX_MANIFEST_BYTES,
    )?;
    let mut entries = oci::parse_docker_manifest(&bytes).map_err(ImportError::Document)?;
    if let Some(sel) = &opts.select {
        entries.retain(|e| e.repo_tags.iter().flatten().any(|t| t == sel));
    }
    let entry = match entries.len() {
        1 => entries.remove(0),
        0 => {
            return Err(ImportError::Missing {
                what: "an image in manifest.json".into(),
            })
        }
        _ => {
            return Err(ImportError::Ambiguous {
                candidates: shown_list(entries.iter().map(|e| {
                    e.repo_tags
                        .iter()
                        .flatten()
                        .next()
                        .cloned()
                        .unwrap_or_else(|| e.config.clone())
                })),
            })
        }
    };
    let cpath = CleanPath::new(entry.config.as_bytes()).display();
    let cwhat = format!(
        "the image config {}",
        text::printable(&cpath, text::MAX_SHOWN)
    );
    let config_bytes = read_member(src, &cpath, &cwhat, oci::MAX_CONFIG_BYTES)?;
    let config = oci::parse_config(&config_bytes, entry.layers.len(), "the image config")
        .map_err(ImportError::Config)?;
    // Layers have no descriptors here: hash each member to make one. The
    // import then copies it like any OCI blob, checking it against this
    // descriptor, and its content against the diff_id at unpack.
    let mut layers = Vec::new();
    let mut layer_paths = Vec::new();
    for (index, p) in entry.layers.iter().enumerate() {
        let path = CleanPath::new(p.as_bytes()).display();
        let what = format!("layer {}", text::printable(&path, text::MAX_SHOWN));
        let (r, size) = open_member(src, &path, &what)?;
        let mut r = io::BufReader::with_capacity(256 << 10, r);
        let compression = layer::detect(&mut r).map_err(|source| ImportError::Layer {
            index,
            digest: Digest::of(b""),
            source,
        })?;
        let mut h = HashingReader::new(r);
        io::copy(&mut h, &mut io::sink()).map_err(|source| ImportError::ReadSource {
            what: what.clone(),
            source,
        })?;
        let (_, hasher) = h.into_parts();
        if hasher.len() != size {
            return Err(ImportError::ReadSource {
                what,
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        let media_type = match compression {
            layer::Compression::None => oci::MT_OCI_LAYER,
            layer::Compression::Gzip => oci::MT_OCI_LAYER_GZIP,
            layer::Compression::Zstd => oci::MT_OCI_LAYER_ZSTD,
        };
        layers.push(Descriptor {
            media_type: media_type.into(),
            digest: hasher.finish(),
            size,
            platform: None,
            annotations: None,
        });
        layer_paths.push(path);
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MT_OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: oci::MT_OCI_CONFIG.into(),
            digest: Digest::of(&config_bytes),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: None,
        },
        layers,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| {
        ImportError::Document(OciError::Parse {
            what: "generated manifest".into(),
            source,
        })
    })?;
    Ok(Resolved {
        manifest_bytes,
        manifest,
        config_bytes,
        config,
        layer_paths,
        layers_are_blobs: false,
        name_hint: entry.repo_tags.and_then(|t| t.into_iter().next()),
    })
}

/// A default name from the image's annotation, repo tag or file name.
fn derive_name(hint: Option<&str>, path: &Path) -> Result<Reference> {
    if let Some(h) = hint {
        if h.contains(':') || h.contains('/') {
            if let Ok(r) = Reference::parse(h) {
                return Ok(r);
            }
        }
    }
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or("").to_ascii_lowercase();
    let mut base: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base = base.trim_matches('-').to_string();
    if base.is_empty() {
        base = "image".into();
    }
    let tag = hint
        .filter(|h| !h.contains(':') && !h.contains('/'))
        .unwrap_or("latest");
    Reference::parse(&format!("{base}:{tag}"))
        .or_else(|_| Reference::parse(&format!("{base}:latest")))
        .map_err(ImportError::Name)
}

fn commit_blob(
    staged: Option<StagedBlob<'_>>,
    index: usize,
    observe: &mut dyn FnMut(&Event),
) -> Result<()> {
    if let Some(s) = staged {
        let digest = s.digest();
        s.commit()?;
        observe(&Event::BlobStored { index, digest });
    }
    Ok(())
}

/// Import the image at `path` into `store`.
pub fn import(
    store: &Store,
    path: &Path,
    opts: &ImportOptions,
    observe: &mut dyn FnMut(&Event),
) -> Result<ImportReport> {
    let meta = std::fs::metadata(path).map_err(|source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(ImportError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let _shared = store.lock_shared()?;
    let dir_src;
    let tar_src;
    let (src, resolved): (&dyn Source, Resolved) = if meta.is_dir() {
        dir_src = DirSource::new(path)?;
        let r = resolve_oci(&dir_src, opts)?;
        (&dir_src, r)
    } else {
        tar_src = TarSource::index(path)?;
        if tar_src.has("index.json") && (tar_src.has("oci-layout") || !tar_src.has("manifest.json"))
        {
            let r = resolve_oci(&tar_src, opts)?;
            (&tar_src, r)
        } else if tar_src.has("manifest.json") {
            let r = resolve_docker(&tar_src, opts)?;
            (&tar_src, r)
        } else {
            return Err(ImportError::UnknownFormat {
                path: path.to_path_buf(),
            });
        }
    };
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => derive_name(resolved.name_hint.as_deref(), path)?,
    };
    let m = &resolved.manifest;
    observe(&Event::Resolved {
        layers: m.layers.len(),
        bytes: m.layers.iter().map(|l| l.size).sum(),
    });

    let mut unpacked = 0;
    for (index, (desc, diff_id)) in m
        .layers
        .iter()
        .zip(&resolved.config.rootfs.diff_ids)
        .enumerate()
    {
        // Copy and verify the blob into staging; it is named only after
        // its layer has been unpacked and matched its diff_id.
        let staged = if store.has_blob(&desc.digest)? {
            None
        } else {
            let (mut r, _) = if resolved.layers_are_blobs {
                open_blob(src, desc, &format!("layer {index}"))?
            } else {
                let what = format!("layer {}", desc.digest);
                open_member(src, &resolved.layer_paths[index], &what)?
            };
            let total = desc.size;
            Some(store.stage_blob(
                &mut r,
                Some((desc.digest, desc.size)),
                MAX_BLOB_BYTES,
                &mut |done| observe(&Event::BlobProgress { index, done, total }),
            )?)
        };
        if store.has_layer(diff_id)? {
            commit_blob(staged, index, observe)?;
            store.ensure_link(diff_id)?;
            observe(&Event::LayerPresent {
                index,
                diff_id: *diff_id,
            });
            continue;
        }
        let staging = store.staging_dir("layer")?;
        let diff = staging.make_diff_dir()?;
        let lerr = |source| ImportError::Layer {
            index,
            digest: desc.digest,
            source,
        };
        observe(&Event::LayerUnpacking { index });
        let root = std::os::fd::AsFd::as_fd(&diff);
        let mut progress = |done| observe(&Event::LayerProgress { index, done });
        // A blob staged just now was hashed while it was written: for a plain
        // layer that digest is the diff_id. One already stored is hashed again.
        let stats = match &staged {
            Some(s) => {
                layer::apply_staged_layer(&s.open()?, s.digest(), root, &opts.limits, &mut progress)
            }
            None => layer::apply_layer(
                store.open_blob(&desc.digest)?,
                root,
                &opts.limits,
                &mut progress,
            ),
        }
        .map_err(lerr)?;
        if stats.diff_id != *diff_id {
            return Err(lerr(LayerError::DiffIdMismatch {
                expected: *diff_id,
                actual: stats.diff_id,
            }));
        }
        drop(diff);
        commit_blob(staged, index, observe)?;
        store.commit_layer(staging, diff_id)?;
        unpacked += 1;
        observe(&Event::LayerUnpacked {
            index,
            diff_id: *diff_id,
            stats,
        });
    }

    let cd = &m.config;
    store.put_blob_bytes(&resolved.config_bytes, Some((cd.digest, cd.size)))?;
    let manifest_digest = store.put_blob_bytes(&resolved.manifest_bytes, None)?;
    observe(&Event::ImageStored {
        manifest: manifest_digest,
    });
    let replaced = store
        .set_ref(&name, &manifest_digest)?
        .filter(|d| *d != manifest_digest);
    observe(&Event::RefWritten {
        name: name.to_string(),
    });
    Ok(ImportReport {
        name: name.to_string(),
        manifest: manifest_digest,
        layers: m.layers.len(),
        layers_unpacked: unpacked,
        replaced,
    })
}
