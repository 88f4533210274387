//! Writing a one-layer OCI image layout from a list of entries, byte-for-byte
//! reproducibly (sorted entries, mtime 0, root-owned, zstd at a fixed level).
//!
//! `berth` uses it to turn Debian's static busybox into the demo image, and the
//! tests use it to make images with exactly the files a case needs.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::oci::{
    Descriptor, ImageConfig, Index, Manifest, Platform, RootFs, RunConfig, MT_OCI_CONFIG,
    MT_OCI_INDEX, MT_OCI_LAYER_ZSTD, MT_OCI_MANIFEST,
};

/// One entry of the layer.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// A named pipe (what a hostile image might put where a file is expected).
    Fifo {
        path: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. }
            | Entry::File { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::Fifo { path } => path,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("building the layer tar: {0}")]
    Tar(io::Error),
    #[error("entry path {0:?} must be relative, without `..`")]
    BadPath(String),
}

/// The layer as an uncompressed tar, entries sorted by path.
pub fn layer_tar(entries: &[Entry]) -> Result<Vec<u8>, BuildError> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path().cmp(b.path()));
    let mut tar = tar::Builder::new(Vec::new());
    for e in sorted {
        let path = e.path();
        if path.starts_with('/') || path.split('/').any(|c| c == "..") || path.is_empty() {
            return Err(BuildError::BadPath(path.into()));
        }
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir { mode, .. } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                tar.append_data(&mut h, format!("{path}/"), io::empty())
            }
            Entry::File { mode, data, .. } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, data.as_slice())
            }
            Entry::Fifo { .. } => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                h.set_size(0);
                tar.append_data(&mut h, path, io::empty())
            }
            Entry::Symlink { target, .. } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, path, target)
            }
        }
        .map_err(BuildError::Tar)?;
    }
    tar.into_inner().map_err(BuildError::Tar)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    std::fs::write(path, bytes).map_err(|source| BuildError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn put_blob(out: &Path, bytes: &[u8]) -> Result<Digest, BuildError> {
    let d = Digest::of(bytes);
    write(&out.join("blobs/sha256").join(d.hex()), bytes)?;
    Ok(d)
}

/// Writes an OCI image layout at `out` holding one linux/amd64 image named
/// `ref_name` (the `org.opencontainers.image.ref.name` annotation).
pub fn write_oci_layout(
    out: &Path,
    entries: &[Entry],
    run: RunConfig,
    ref_name: &str,
) -> Result<Digest, BuildError> {
    let tar = layer_tar(entries)?;
    let diff_id = Digest::of(&tar);
    let compressed = zstd::encode_all(tar.as_slice(), 19).map_err(BuildError::Tar)?;
    let layer = ShippedLayer {
        diff_id,
        blob: &compressed,
        media_type: MT_OCI_LAYER_ZSTD,
    };
    write_oci_layout_of(out, &[layer], run, ref_name)
}

/// A layer as an image ships it: the digest of its uncompressed tar, the blob
/// (plain, gzip or zstd) and the blob's media type.
pub struct ShippedLayer<'a> {
    pub diff_id: Digest,
    pub blob: &'a [u8],
    pub media_type: &'static str,
}

/// Writes an OCI image layout at `out` holding one linux/amd64 image of
/// `layers`, bottom first, named `ref_name`.
pub fn write_oci_layout_of(
    out: &Path,
    layers: &[ShippedLayer<'_>],
    run: RunConfig,
    ref_name: &str,
) -> Result<Digest, BuildError> {
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| BuildError::Write {
        path: blobs.clone(),
        source,
    })?;
    let mut descriptors = Vec::with_capacity(layers.len());
    for layer in layers {
        descriptors.push(Descriptor {
            media_type: layer.media_type.into(),
            digest: put_blob(out, layer.blob)?,
            size: layer.blob.len() as u64,
            platform: None,
            annotations: None,
        });
    }
    let platform = Platform::linux_amd64();
    let config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: None,
        created: Some("1970-01-01T00:00:00Z".into()),
        config: Some(run),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id).collect(),
        },
    };
    let config_bytes = json(&config);
    let config_digest = put_blob(out, &config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MT_OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: MT_OCI_CONFIG.into(),
            digest: config_digest,
            size: config_bytes.len() as u64,
            platform: None,
            annotations: None,
        },
        layers: descriptors,
    };
    let manifest_bytes = json(&manifest);
    let manifest_digest = put_blob(out, &manifest_bytes)?;
    let index = Index {
        schema_version: 2,
        media_type: Some(MT_OCI_INDEX.into()),
        manifests: vec![Descriptor {
            media_type: MT_OCI_MANIFEST.into(),
            digest: manifest_digest,
            size: manifest_bytes.len() as u64,
            platform: Some(platform),
            annotations: Some(BTreeMap::from([(
                "org.opencontainers.image.ref.name".to_string(),
                ref_name.to_string(),
            )])),
        }],
    };
    write(&out.join("index.json"), &json(&index))?;
    write(
        &out.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(manifest_digest)
}

/// These documents hold only strings, numbers and maps: serialising cannot fail.
fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The entries of a busybox image: the static binary at `/bin/busybox`, a symlink
/// per applet, `/etc/passwd` and `/etc/group` with root and nobody, and `/tmp`.
pub fn busybox_entries(busybox: &[u8], applets: &[&str]) -> Vec<Entry> {
    let mut entries = vec![
        Entry::Dir { path: "bin".into(), mode: 0o755 },
        Entry::Dir { path: "etc".into(), mode: 0o755 },
        Entry::Dir { path: "tmp".into(), mode: 0o1777 },
        Entry::Dir { path: "root".into(), mode: 0o700 },
        Entry::File { path: "bin/busybox".into(), mode: 0o755, data: busybox.to_vec() },
        Entry::File {
            path: "etc/passwd".into(),
            mode: 0o644,
            data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
        },
        Entry::File {
            path: "etc/group".into(),
            mode: 0o644,
            data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        },
    ];
    for a in applets {
        if *a != "busybox" {
            entries.push(Entry::Symlink {
                path: format!("bin/{a}"),
                target: "busybox".into(),
            });
        }
    }
    entries
}

/// Writes a busybox image layout at `out` from the static binary `busybox`, with
/// [`BUSYBOX_APPLETS`] and `sh` as its Cmd.
pub fn write_busybox_layout(
    out: &Path,
    busybox: &Path,
    ref_name: &str,
) -> Result<Digest, BuildError> {
    let bytes = std::fs::read(busybox).map_err(|source| BuildError::Write {
        path: busybox.to_path_buf(),
        source,
    })?;
    let run = RunConfig {
        cmd: Some(vec!["sh".into()]),
        ..RunConfig::default()
    };
    write_oci_layout(
        out,
        &busybox_entries(&bytes, BUSYBOX_APPLETS),
        run,
        ref_name,
    )
}

/// The applets the demo and test images link.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "id", "sleep", "true", "false", "test", "wget", "httpd", "dd",
    "head", "tail", "grep", "mkdir", "mount", "umount", "hostname", "env", "kill", "ps", "touch",
    "rm", "wc", "yes", "printf", "readlink", "stat", "tr", "sed", "mknod", "chmod", "ln", "nc",
    "unshare", "seq", "sort", "uniq", "cut",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_importable_layout() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let entries = busybox_entries(b"#!fake", &["sh", "cat"]);
        let run = RunConfig {
            cmd: Some(vec!["sh".into()]),
            ..RunConfig::default()
        };
        let d1 = write_oci_layout(a.path(), &entries, run.clone(), "bb:1").unwrap();
        let d2 = write_oci_layout(b.path(), &entries, run, "bb:1").unwrap();
        assert_eq!(d1, d2);
        let store_dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(store_dir.path()).unwrap();
        crate::import(
            &store,
            a.path(),
            &crate::ImportOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(store.resolve("bb:1").unwrap().1, d1);
        assert!(layer_tar(&[Entry::Dir {
            path: "../x".into(),
            mode: 0o755
        }])
        .is_err());
    }
}
