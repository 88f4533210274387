//! Importing images: OCI layouts (directory or tar) and docker-archive tars.
//!
//! The source is only read. Nothing from it becomes a path: OCI blobs are
//! looked up by [`Digest`] (already validated), and archive members by
//! their cleaned name in an index of the archive built up front. Every
//! blob is verified against its descriptor's digest and size while it is
//! copied into the store; every layer is unpacked from the stored copy into
//! staging and checked against its `diff_id` before it is committed; the
//! ref is written last.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::layer::{self, CleanPath, LayerError, LayerStats, Limits};
use crate::oci::{
    self, ConfigError, Descriptor, Document, ImageConfig, Manifest, OciError, Platform,
};
use crate::reference::{Reference, ReferenceError};
use crate::store::{StagedBlob, Store, StoreError};

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
    #[error("{path} is neither an OCI image layout nor a docker-archive tar")]
    UnknownFormat { path: PathBuf },
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
    #[error("oci-layout says version {0:?}, expected 1.0.0")]
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
}

struct DirSource {
    root: PathBuf,
}

impl Source for DirSource {
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
    file: File,
    members: HashMap<String, Member>,
}

impl TarSource {
    fn index(path: &Path) -> Result<TarSource> {
        let err = |source| ImportError::Archive {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|source| ImportError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut members = HashMap::new();
        {
            let mut ar = tar::Archive::new(&file);
            for e in ar.entries_with_seek().map_err(err)? {
                let e = e.map_err(err)?;
                if members.len() >= MAX_ARCHIVE_MEMBERS {
                    return Err(ImportError::TooManyMembers {
                        path: path.to_path_buf(),
                        limit: MAX_ARCHIVE_MEMBERS,
                    });
                }
                let name = CleanPath::new(&e.path_bytes()).display();
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
        Ok(TarSource { file, members })
    }

    fn has(&self, p: &str) -> bool {
        self.members.contains_key(p)
    }
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

/// Read a small blob named by a descriptor, verifying digest and size.
fn read_verified(src: &dyn Source, desc: &Descriptor, what: &str, limit: u64) -> Result<Vec<u8>> {
    if desc.size > limit {
        return Err(ImportError::Document(OciError::TooLarge {
            what: what.into(),
            limit,
        }));
    }
    let bytes = read_member(src, &blob_path(&desc.digest), what, limit)?;
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
    name_hint: Option<String>,
}

fn resolve_oci(src: &dyn Source, opts: &ImportOptions) -> Result<Resolved> {
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
            return Err(ImportError::LayoutVersion(l.version));
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
                what: format!("image named {sel:?} in index.json"),
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
        let bytes = read_verified(src, &desc, &what, oci::MAX_MANIFEST_BYTES)?;
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
                    read_verified(src, &manifest.config, &cwhat, oci::MAX_CONFIG_BYTES)?;
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
                    name_hint,
                });
            }
        }
    }
    Err(ImportError::TooDeep(oci::MAX_INDEX_DEPTH))
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
            available: cands
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
        _ => Err(ImportError::Ambiguous {
            candidates: unlabelled
                .iter()
                .map(|d| {
                    d.ref_name()
                        .map_or_else(|| d.digest.to_string(), str::to_string)
                })
                .collect::<Vec<_>>()
                .join(", "),
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
                candidates: entries
                    .iter()
                    .map(|e| {
                        e.repo_tags
                            .iter()
                            .flatten()
                            .next()
                            .cloned()
                            .unwrap_or_else(|| e.config.clone())
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let cpath = CleanPath::new(entry.config.as_bytes()).display();
    let config_bytes = read_member(src, &cpath, "the image config", oci::MAX_CONFIG_BYTES)?;
    let config = oci::parse_config(&config_bytes, entry.layers.len(), "the image config")
        .map_err(ImportError::Config)?;
    // Layers have no descriptors here: hash each member to make one. The
    // import then copies it like any OCI blob, checking it against this
    // descriptor, and its content against the diff_id at unpack.
    let mut layers = Vec::new();
    let mut layer_paths = Vec::new();
    for (index, p) in entry.layers.iter().enumerate() {
        let path = CleanPath::new(p.as_bytes()).display();
        let what = format!("layer {path}");
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
    let _shared = store.lock_shared()?;
    let dir_src;
    let tar_src;
    let (src, resolved): (&dyn Source, Resolved) = if meta.is_dir() {
        dir_src = DirSource {
            root: path.to_path_buf(),
        };
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
            let what = format!("layer {}", desc.digest);
            let (mut r, _) = open_member(src, &resolved.layer_paths[index], &what)?;
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
