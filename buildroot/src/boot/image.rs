//! The image `berth boot` is about to boot, checked against the `manifest.json` that
//! `berth build` wrote beside it: every file booted must be listed in `outputs` with the
//! same size and SHA-256, so that a stale, truncated or swapped file is refused by name
//! before QEMU starts. The manifest also says how much memory the image needs
//! (`memory_mib`; absent in manifests of older builds, which need nothing beyond the
//! default).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hash::sha256_file;

/// The files `berth boot` hands to QEMU.
pub const IMAGE_FILES: [&str; 2] = ["vmlinuz", "initramfs.img"];

/// The parts of `manifest.json` that `berth boot` reads; other keys are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct BuiltImage {
    pub outputs: Vec<OutputRecord>,
    /// Guest memory the image needs, MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
}

/// One output file of a build.
#[derive(Debug, Clone, Deserialize)]
pub struct OutputRecord {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Why the image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path} not found: build the image first with `berth build CONFIG.toml -o {}`", dir.display())]
    Missing { path: PathBuf, dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a berth build manifest: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{manifest} does not list {name} among its outputs: rebuild the image")]
    Unlisted { manifest: PathBuf, name: String },
    #[error("{path} does not match manifest.json ({what}): the file changed after `berth build`; rebuild the image")]
    Mismatch { path: PathBuf, what: String },
}

/// Checks the image files in `dir` and returns the manifest, or `None` (with a warning)
/// when there is no `manifest.json`: a pair made by hand still boots, unchecked.
pub fn check(dir: &Path) -> Result<Option<BuiltImage>, ImageError> {
    for name in IMAGE_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(ImageError::Missing {
                path,
                dir: dir.to_owned(),
            });
        }
    }
    let manifest_path = dir.join("manifest.json");
    let text = match std::fs::read(&manifest_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::warn!(
                "{} is missing: the image files are not checked",
                manifest_path.display()
            );
            return Ok(None);
        }
        Err(source) => {
            return Err(ImageError::Read {
                path: manifest_path,
                source,
            })
        }
    };
    let image: BuiltImage = serde_json::from_slice(&text).map_err(|source| ImageError::Parse {
        path: manifest_path.clone(),
        source,
    })?;
    for name in IMAGE_FILES {
        let record = image
            .outputs
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ImageError::Unlisted {
                manifest: manifest_path.clone(),
                name: name.to_owned(),
            })?;
        verify(&dir.join(name), record)?;
    }
    Ok(Some(image))
}

/// Compares one file with its record: the size first (cheap, and the usual damage),
/// then the SHA-256.
fn verify(path: &Path, record: &OutputRecord) -> Result<(), ImageError> {
    let read_error = |source| ImageError::Read {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    let mismatch = |what: String| ImageError::Mismatch {
        path: path.to_owned(),
        what,
    };
    if size != record.size {
        return Err(mismatch(format!(
            "{size} bytes, the manifest says {}",
            record.size
        )));
    }
    let (sha256, _) = sha256_file(path).map_err(read_error)?;
    if !sha256.eq_ignore_ascii_case(&record.sha256) {
        return Err(mismatch(format!(
            "sha256 {sha256}, the manifest says {}",
            record.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileRecord;

    /// A directory with the two files and a manifest as `berth build` writes it (built
    /// as JSON, so that fields added to the manifest later do not break this test).
    fn built(dir: &Path) {
        let kernel = b"kernel bytes".as_slice();
        let initramfs = b"initramfs bytes".as_slice();
        std::fs::write(dir.join("vmlinuz"), kernel).unwrap();
        std::fs::write(dir.join("initramfs.img"), initramfs).unwrap();
        let manifest = serde_json::json!({
            "berth_version": "0.1.0",
            "kernel_release": "6.1.0-t",
            "inputs": [FileRecord::of("host.toml", b"")],
            "outputs": [
                FileRecord::of("vmlinuz", kernel),
                FileRecord::of("initramfs.img", initramfs),
            ],
        });
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    }

    #[test]
    fn a_fresh_build_passes() {
        let dir = tempfile::tempdir().unwrap();
        built(dir.path());
        let image = check(dir.path()).unwrap().unwrap();
        assert_eq!(image.outputs.len(), 2);
        assert_eq!(image.memory_mib, None);
    }

    #[test]
    fn a_changed_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        built(dir.path());
        // Truncated: the size differs.
        std::fs::write(dir.path().join("initramfs.img"), b"initramfs").unwrap();
        let err = check(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ImageError::Mismatch { .. }), "{msg}");
        assert!(
            msg.contains("initramfs.img does not match manifest.json"),
            "{msg}"
        );
        assert!(msg.contains("9 bytes, the manifest says 15"), "{msg}");
        // Same size, other bytes: the hash differs.
        built(dir.path());
        std::fs::write(dir.path().join("vmlinuz"), b"kernel BYTES").unwrap();
        let msg = check(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("vmlinuz does not match manifest.json (sha256 "),
            "{msg}"
        );
    }

    #[test]
    fn manifest_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        built(dir.path());
        std::fs::write(dir.path().join("manifest.json"), b"{\"outputs\": []}").unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not list vmlinuz among its outputs"),
            "{err}"
        );
        std::fs::write(dir.path().join("manifest.json"), b"not json").unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::Parse { .. }), "{err}");
        // No manifest at all: booted unchecked.
        std::fs::remove_file(dir.path().join("manifest.json")).unwrap();
        assert!(check(dir.path()).unwrap().is_none());
        std::fs::remove_file(dir.path().join("vmlinuz")).unwrap();
        assert!(matches!(check(dir.path()), Err(ImageError::Missing { .. })));
    }

    #[test]
    fn memory_need_is_read_when_present() {
        let with: BuiltImage =
            serde_json::from_str(r#"{"berth_version":"x","outputs":[],"memory_mib":1024}"#)
                .unwrap();
        assert_eq!(with.memory_mib, Some(1024));
        let without: BuiltImage = serde_json::from_str(r#"{"outputs":[]}"#).unwrap();
        assert_eq!(without.memory_mib, None);
    }
}
