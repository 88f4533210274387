//! The pinned kernel: which Debian package berth boots, where its `.deb` is cached, how it
//! is fetched and verified, and how it is unpacked.
//!
//! The pin ([`PIN`]) is the single place that names the kernel. Updating it: run
//! `apt-get update && apt-cache show linux-image-<abi>-cloud-amd64` and copy `Version`,
//! `SHA256` and `Size` (and the package name, when the ABI number changed) here.
//!
//! Cache layout (`$BERTH_CACHE`, else `$XDG_CACHE_HOME/berth`, else `$HOME/.cache/berth`):
//!
//! ```text
//! <cache>/
//! └── kernels/
//!     ├── <sha256>.deb        verified package, named by its hash
//!     └── .fetch-XXXXXX/      apt-get download's working dir while fetching
//! ```
//!
//! A download lands in a temp dir inside `kernels/`, is checked against the pin's size and
//! hash, fsynced and renamed into place, so `<sha256>.deb` is either absent or complete.
//! A cached file whose hash is wrong is deleted and fetched again.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::exec::{Exec, ExecError};
use crate::hash::sha256_file;

/// A Debian kernel package, pinned by version, hash and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelPin {
    pub package: &'static str,
    pub version: &'static str,
    pub arch: &'static str,
    /// The `.deb`'s SHA-256, lowercase hex (`apt-cache show`'s `SHA256`).
    pub sha256: &'static str,
    /// The `.deb`'s size in bytes (`apt-cache show`'s `Size`).
    pub size: u64,
}

/// The kernel berth builds images with: Debian bookworm's cloud kernel.
pub const PIN: KernelPin = KernelPin {
    package: "linux-image-6.1.0-50-cloud-amd64",
    version: "6.1.176-1",
    arch: "amd64",
    sha256: "efe19f605b6f54a8352e68d85a629abb2d30b72a085faef603a9152590baa791",
    size: 26_484_304,
};

impl KernelPin {
    /// The file name Debian gives the package, e.g. `linux-image-…_6.1.176-1_amd64.deb`.
    pub fn deb_file_name(&self) -> String {
        format!("{}_{}_{}.deb", self.package, self.version, self.arch)
    }

    /// `package=version`, as apt takes it.
    pub fn apt_spec(&self) -> String {
        format!("{}={}", self.package, self.version)
    }
}

/// Why the kernel could not be fetched, verified or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("no cache directory: set BERTH_CACHE, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    #[error("cannot create cache directory {path}: {source}")]
    CreateCacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a temporary directory in {path}: {source}")]
    TempDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the kernel pin {spec} is stale: apt cannot find that version ({source}); run \
         `apt-get update`, then `apt-cache show {package}` and copy its Version, SHA256 and \
         Size into PIN in buildroot/src/kernel.rs"
    )]
    PinStale {
        spec: String,
        package: String,
        source: Box<ExecError>,
    },
    #[error("cannot download {spec}: {source}")]
    Download {
        spec: String,
        source: Box<ExecError>,
    },
    #[error("apt-get download of {spec} succeeded but left no .deb in {dir}")]
    DownloadMissing { spec: String, dir: PathBuf },
    #[error("cannot list {path}: {source}")]
    ListDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path} to hash it: {source}")]
    Hash {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} does not match the kernel pin: size {actual_size} sha256 {actual_sha256}, \
         expected size {expected_size} sha256 {expected_sha256} (if the mirror now serves a \
         different build, the pin is stale: see `berth kernel show`; use \
         --kernel-deb-unpinned to build with an unpinned package deliberately)"
    )]
    Mismatch {
        path: PathBuf,
        actual_size: u64,
        actual_sha256: String,
        expected_size: u64,
        expected_sha256: String,
    },
    #[error("cannot fsync {path}: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move {from} to {to}: {source}")]
    Install {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove corrupt cache file {path}: {source}")]
    RemoveCorrupt {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot unpack {deb}: {source}")]
    Extract {
        deb: PathBuf,
        source: Box<ExecError>,
    },
    #[error("{deb} is not a kernel image package: {what}")]
    NotAKernel { deb: PathBuf, what: String },
}

/// The cache root from the environment, looked up through `env` (for tests).
pub fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, KernelError> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("BERTH_CACHE") {
        return Ok(dir);
    }
    if let Some(dir) = set("XDG_CACHE_HOME") {
        return Ok(dir.join("berth"));
    }
    if let Some(home) = set("HOME") {
        return Ok(home.join(".cache").join("berth"));
    }
    Err(KernelError::NoCacheDir)
}

/// The cache root of this process's environment.
pub fn cache_dir() -> Result<PathBuf, KernelError> {
    cache_dir_from(|name| std::env::var_os(name))
}

/// Where the pinned package lives in the cache.
pub fn cached_deb_path(cache: &Path, pin: &KernelPin) -> PathBuf {
    cache.join("kernels").join(format!("{}.deb", pin.sha256))
}

/// Checks the file at `path` against the pin's size and hash.
pub fn verify(path: &Path, pin: &KernelPin) -> Result<(), KernelError> {
    let (actual_sha256, actual_size) = sha256_file(path).map_err(|source| KernelError::Hash {
        path: path.to_owned(),
        source,
    })?;
    if actual_size != pin.size || actual_sha256 != pin.sha256 {
        return Err(KernelError::Mismatch {
            path: path.to_owned(),
            actual_size,
            actual_sha256,
            expected_size: pin.size,
            expected_sha256: pin.sha256.to_owned(),
        });
    }
    Ok(())
}

/// Returns the path of the pinned package in `cache`, downloading it first when it is
/// missing or corrupt.
pub fn fetch(cache: &Path, pin: &KernelPin) -> Result<PathBuf, KernelError> {
    let target = cached_deb_path(cache, pin);
    if target.exists() {
        match verify(&target, pin) {
            Ok(()) => {
                log::debug!("kernel package cached at {}", target.display());
                return Ok(target);
            }
            Err(KernelError::Mismatch { .. }) => {
                log::warn!(
                    "cached kernel package {} is corrupt; deleting it and fetching again",
                    target.display()
                );
                std::fs::remove_file(&target).map_err(|source| KernelError::RemoveCorrupt {
                    path: target.clone(),
                    source,
                })?;
            }
            Err(e) => return Err(e),
        }
    }
    let kernels = cache.join("kernels");
    std::fs::create_dir_all(&kernels).map_err(|source| KernelError::CreateCacheDir {
        path: kernels.clone(),
        source,
    })?;
    // The temp dir is removed on every path out of here, success included.
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&kernels)
        .map_err(|source| KernelError::TempDir {
            path: kernels.clone(),
            source,
        })?;
    let spec = pin.apt_spec();
    log::info!(
        "fetching kernel package {spec} ({:.1} MB) with apt-get download",
        pin.size as f64 / 1e6
    );
    // apt-get as root warns on stderr that the download is "unsandboxed" (the `_apt` user
    // cannot write our temp dir); that is harmless and only logged at debug level.
    let download = Exec::new("apt-get")
        .args(["download", "--quiet"])
        .arg(&spec)
        .current_dir(tmp.path());
    download.output().map_err(|source| {
        let stale = source.stderr().is_some_and(|e| {
            e.contains("was not found")
                || e.contains("Unable to locate package")
                || e.contains("Can't find a source")
        });
        if stale {
            KernelError::PinStale {
                spec: spec.clone(),
                package: pin.package.to_owned(),
                source: Box::new(source),
            }
        } else {
            KernelError::Download {
                spec: spec.clone(),
                source: Box::new(source),
            }
        }
    })?;
    let downloaded = find_deb(tmp.path())?.ok_or_else(|| KernelError::DownloadMissing {
        spec: spec.clone(),
        dir: tmp.path().to_owned(),
    })?;
    verify(&downloaded, pin)?;
    sync_file(&downloaded)?;
    std::fs::rename(&downloaded, &target).map_err(|source| KernelError::Install {
        from: downloaded.clone(),
        to: target.clone(),
        source,
    })?;
    sync_file(&kernels)?;
    log::info!("kernel package cached at {}", target.display());
    Ok(target)
}

/// The single `.deb` in `dir`, if any.
fn find_deb(dir: &Path) -> Result<Option<PathBuf>, KernelError> {
    let list_err = |source| KernelError::ListDir {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        let path = entry.map_err(list_err)?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// fsyncs a file or directory.
fn sync_file(path: &Path) -> Result<(), KernelError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| KernelError::Sync {
            path: path.to_owned(),
            source,
        })
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct KernelTree {
    /// The kernel release (`uname -r`), e.g. `6.1.0-50-cloud-amd64`.
    pub release: String,
    /// `boot/vmlinuz-<release>`.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules_dir: PathBuf,
}

/// Unpacks `deb` into `into` with `dpkg-deb -x` and finds the kernel in it.
pub fn extract(deb: &Path, into: &Path) -> Result<KernelTree, KernelError> {
    log::info!("unpacking {}", deb.display());
    Exec::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(into)
        .output()
        .map_err(|source| KernelError::Extract {
            deb: deb.to_owned(),
            source: Box::new(source),
        })?;
    find_kernel(deb, into)
}

/// Finds the one kernel release in an unpacked package at `root`.
fn find_kernel(deb: &Path, root: &Path) -> Result<KernelTree, KernelError> {
    let not_kernel = |what: String| KernelError::NotAKernel {
        deb: deb.to_owned(),
        what,
    };
    let modules_root = root.join("lib/modules");
    let entries = std::fs::read_dir(&modules_root)
        .map_err(|e| not_kernel(format!("no lib/modules directory ({e})")))?;
    let mut releases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| KernelError::ListDir {
            path: modules_root.clone(),
            source,
        })?;
        releases.push(entry.file_name().to_string_lossy().into_owned());
    }
    releases.sort();
    let [release] = releases.as_slice() else {
        return Err(not_kernel(format!(
            "expected exactly one kernel release in lib/modules, found {releases:?}"
        )));
    };
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        return Err(not_kernel(format!("no boot/vmlinuz-{release}")));
    }
    Ok(KernelTree {
        release: release.clone(),
        vmlinuz,
        modules_dir: modules_root.join(release),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_precedence() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = env(&[
            ("BERTH_CACHE", "/b"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_dir_from(all).unwrap(), PathBuf::from("/b"));
        let xdg = env(&[
            ("BERTH_CACHE", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_dir_from(xdg).unwrap(), PathBuf::from("/x/berth"));
        let home = env(&[("HOME", "/h")]);
        assert_eq!(
            cache_dir_from(home).unwrap(),
            PathBuf::from("/h/.cache/berth")
        );
        assert!(matches!(
            cache_dir_from(env(&[])),
            Err(KernelError::NoCacheDir)
        ));
    }

    #[test]
    fn pin_names() {
        assert_eq!(
            PIN.deb_file_name(),
            "linux-image-6.1.0-50-cloud-amd64_6.1.176-1_amd64.deb"
        );
        assert_eq!(PIN.apt_spec(), "linux-image-6.1.0-50-cloud-amd64=6.1.176-1");
        assert_eq!(PIN.sha256.len(), 64);
    }

    #[test]
    fn verify_rejects_wrong_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.deb");
        std::fs::write(&path, b"not a kernel").unwrap();
        let err = verify(&path, &PIN).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::Mismatch {
                    actual_size: 12,
                    ..
                }
            ),
            "{err}"
        );
        let pin = KernelPin {
            sha256: "7a7d8ceb1ee0dc1dc0d2b2bd4f9ab4a0fbd6eeef98a2bff59b52d4c9b8bfbdf1",
            size: 12,
            ..PIN
        };
        // Right size, wrong hash: still refused.
        assert!(verify(&path, &pin).is_err());
    }

    #[test]
    fn corrupt_cache_entry_is_deleted_before_refetch() {
        // A pin that apt cannot possibly satisfy: the corrupt file must be gone afterwards,
        // and the error must say the pin is stale (or, offline, that the download failed).
        let cache = tempfile::tempdir().unwrap();
        let pin = KernelPin {
            package: "berth-no-such-package",
            version: "0.0-0",
            ..PIN
        };
        let path = cached_deb_path(cache.path(), &pin);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"corrupt").unwrap();
        let err = fetch(cache.path(), &pin).unwrap_err();
        assert!(!path.exists(), "corrupt cache file survived");
        assert!(
            matches!(
                err,
                KernelError::PinStale { .. } | KernelError::Download { .. }
            ),
            "{err}"
        );
        if let KernelError::PinStale { .. } = err {
            assert!(err
                .to_string()
                .contains("apt-cache show berth-no-such-package"));
        }
        // The temp dir is cleaned up.
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn find_kernel_checks_layout() {
        let root = tempfile::tempdir().unwrap();
        let deb = Path::new("x.deb");
        assert!(find_kernel(deb, root.path()).is_err());
        std::fs::create_dir_all(root.path().join("lib/modules/6.1.0-test")).unwrap();
        let err = find_kernel(deb, root.path()).unwrap_err();
        assert!(
            err.to_string().contains("no boot/vmlinuz-6.1.0-test"),
            "{err}"
        );
        std::fs::create_dir_all(root.path().join("boot")).unwrap();
        std::fs::write(root.path().join("boot/vmlinuz-6.1.0-test"), b"k").unwrap();
        let tree = find_kernel(deb, root.path()).unwrap();
        assert_eq!(tree.release, "6.1.0-test");
        std::fs::create_dir_all(root.path().join("lib/modules/6.1.0-other")).unwrap();
        assert!(find_kernel(deb, root.path()).is_err());
    }
}
