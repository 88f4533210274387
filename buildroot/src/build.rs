//! `berth build`: config + init binary + pinned kernel → `vmlinuz`, `initramfs.img`,
//! `manifest.json`.
//!
//! The steps, each with its own error variant: validate the config with the same code PID 1
//! uses; find and check the init binary ([`crate::initbin`]); fetch or take the kernel
//! package and unpack it ([`crate::kernel`]); choose the modules and write their index
//! ([`crate::modules`]); import the `[[image]]`s into a scratch store and check each
//! `[[container]]` against them ([`crate::imagecheck`]); assemble the initramfs, size the
//! memory it needs ([`crate::memory`]) and compress it ([`crate::initramfs`]); write the
//! outputs and the manifest ([`crate::manifest`]).
//!
//! Outputs depend on the inputs only: nothing reads the clock, the umask, the output path
//! or the machine. Each output is written to a temp file in the output directory, fsynced
//! and renamed into place; the manifest goes last, then the directory is fsynced.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_init::config::{ConfigError, HostConfig};
use berth_init::unpack_check::{self, Record};

use crate::imagecheck::{self, ImageView};
use crate::initbin::{self, InitBinaryError};
use crate::initramfs::{self, InitramfsError, ModuleIndexFiles, ZSTD_LEVEL};
use crate::kernel::{self, KernelError, PIN};
use crate::manifest::{FileRecord, Manifest};
use crate::memory::{self, MemoryNeed};
use crate::modules::{self, DepNode, ModuleTree, ModulesError};

/// What `berth build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub config: PathBuf,
    pub out_dir: PathBuf,
    /// `--init`; `None` searches the usual places.
    pub init: Option<PathBuf>,
    /// `--kernel-deb`; `None` uses the pinned package from the cache.
    pub kernel_deb: Option<PathBuf>,
    /// `--kernel-deb-unpinned`: accept a `--kernel-deb` that does not match the pin.
    pub kernel_deb_unpinned: bool,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config path {path} does not name a file")]
    ConfigName { path: PathBuf },
    #[error(transparent)]
    InitBinary(#[from] InitBinaryError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("cannot create a temporary directory to unpack the kernel: {source}")]
    UnpackDir { source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    ReadKernelFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    #[error("cannot create output directory {path}: {source}")]
    CreateOutputDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    WriteOutput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[[image]] {index} ({path}): {message}")]
    Image {
        index: usize,
        path: PathBuf,
        message: String,
    },
    #[error("cannot create a scratch store to check the images: {source}")]
    ScratchStore { source: std::io::Error },
    /// A `[[container]]` the images cannot run, found by the build (see `imagecheck`).
    #[error("{path}: key `{key}`: {message}")]
    Container {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("cannot fsync output directory {path}: {source}")]
    SyncOutputDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub manifest: Manifest,
    /// The memory the image needs, and why.
    pub memory: MemoryNeed,
    /// What the build warns about (a `memory` or `cpus` above what the machine has).
    pub warnings: Vec<String>,
    /// The modules in the image, by name.
    pub modules: Vec<String>,
}

/// Runs `berth build`.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    // 1. The config, checked by the code PID 1 runs. One read: the bytes validated are
    // the bytes that go into the image.
    let config_bytes = HostConfig::read_bytes(&opts.config)?;
    let config = HostConfig::from_bytes(&config_bytes, &opts.config)?;
    let config_name = opts
        .config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BuildError::ConfigName {
            path: opts.config.clone(),
        })?;

    // 2. The init binary.
    let current_exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().unwrap_or_default();
    let init_path = initbin::locate(initbin::candidates(
        opts.init.as_deref(),
        std::env::var_os("BERTH_INIT"),
        current_exe.as_deref(),
        &cwd,
    ))?;
    log::info!("init binary: {}", init_path.display());
    let init = initbin::read_static(&init_path)?;
    let helper_path = initbin::locate_helper(&init_path)?;
    let helper = initbin::read_static(&helper_path)?;

    // 3. The images, imported into one scratch store as the guest's store will hold them
    // (shared layers once), and the containers checked against them: before the kernel,
    // so that a mistake is reported at once.
    let config_dir = opts.config.parent().unwrap_or(Path::new("."));
    let scratch = tempfile::tempdir().map_err(|source| BuildError::ScratchStore { source })?;
    for (i, image) in config.images.iter().enumerate() {
        import_image(
            i,
            &config_dir.join(&image.path),
            &image.name.0,
            image.select.as_deref(),
            scratch.path(),
        )?;
    }
    check_containers(&config, &opts.config, scratch.path())?;

    // 4. The kernel package.
    let (deb, deb_name) = match &opts.kernel_deb {
        Some(path) => {
            if opts.kernel_deb_unpinned {
                log::warn!("{} is not checked against the kernel pin", path.display());
            } else {
                kernel::verify(path, &PIN)?;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| PIN.deb_file_name());
            (path.clone(), name)
        }
        None => (
            kernel::fetch(&kernel::cache_dir()?, &PIN)?,
            PIN.deb_file_name(),
        ),
    };
    let (deb_sha256, deb_size) =
        crate::hash::sha256_file(&deb).map_err(|source| BuildError::ReadKernelFile {
            path: deb.clone(),
            source,
        })?;
    let unpacked = tempfile::Builder::new()
        .prefix("berth-kernel-")
        .tempdir()
        .map_err(|source| BuildError::UnpackDir { source })?;
    let tree = kernel::extract(&deb, unpacked.path())?;
    let vmlinuz = std::fs::read(&tree.vmlinuz).map_err(|source| BuildError::ReadKernelFile {
        path: tree.vmlinuz.clone(),
        source,
    })?;
    log::info!("kernel {}", tree.release);

    // 5. Modules.
    let modtree = ModuleTree::scan(&tree.modules_dir, &tree.release)?;
    let requested: Vec<String> = config
        .kernel
        .modules
        .iter()
        .map(|m| m.as_str().to_owned())
        .collect();
    let roots = modtree.resolve(&requested, &modules::image_modules())?;
    let closure = modtree.load_closure(&roots)?;
    let graph: BTreeMap<String, DepNode> = closure
        .iter()
        .map(|(name, m)| (name.clone(), DepNode::from(m)))
        .collect();
    let index = ModuleIndexFiles {
        dep: modules::modules_dep(&graph)?,
        alias: modules::modules_alias(
            closure
                .iter()
                .map(|(name, m)| (name.as_str(), m.info.aliases.as_slice())),
        ),
        builtin: modtree.builtin_text().to_vec(),
    };
    log::info!(
        "{} modules: {}",
        closure.len(),
        closure.keys().cloned().collect::<Vec<_>>().join(" ")
    );

    // 6. The initramfs.
    let mut inputs = vec![
        FileRecord::of(config_name, &config_bytes),
        FileRecord::of("init", &init),
        FileRecord::of(berth_init::helper::helper_path_in_root(), &helper),
        FileRecord {
            name: deb_name,
            size: deb_size,
            sha256: deb_sha256,
        },
    ];
    let mut module_records: Vec<FileRecord> = closure
        .values()
        .map(|m| FileRecord::of(format!("lib/modules/{}/{}", tree.release, m.path), &m.bytes))
        .collect();
    module_records.sort_by(|a, b| a.name.cmp(&b.name));
    inputs.extend(module_records);

    let mut fs =
        initramfs::berth_layout(init, helper, config_bytes, &tree.release, &closure, &index)?;
    for (i, image) in config.images.iter().enumerate() {
        bake_image(&mut fs, &mut inputs, i, &config_dir.join(&image.path))?;
    }

    // The memory need, then the record of what was packed (it carries the need) and the
    // end marker, the archive's last entry (see `berth_init::unpack_check`).
    let baked_prefix = berth_init::images::BAKED_DIR.trim_start_matches('/');
    let record_placeholder = 1; // the record is under a page: it takes one
    let unpacked = memory::tmpfs_bytes(
        fs.file_sizes("")
            .chain([record_placeholder, unpack_check::END_CONTENT.len() as u64]),
        fs.len() as u64 + 2,
    );
    let store_bytes = memory::tree_tmpfs_bytes(scratch.path())
        .map_err(|source| BuildError::ScratchStore { source })?;
    let limits: Vec<Option<u64>> = config
        .containers
        .iter()
        .map(|c| c.memory.as_ref().map(|m| m.0))
        .collect();
    let need = memory::need(unpacked, store_bytes, &limits);
    let record = Record {
        entries: fs.len() as u64 + 2,
        bytes: fs.file_sizes("").sum(),
        baked_files: fs.file_sizes(baked_prefix).count() as u64,
        baked_bytes: fs.file_sizes(baked_prefix).sum(),
        memory_mib: need.mib,
    };
    fs.file(unpack_check::RECORD_PATH, 0o644, record.to_json())?;
    fs.last_file(unpack_check::END_PATH, unpack_check::END_CONTENT.to_vec())?;
    log::info!("memory: this image needs about {need}");
    let warnings = machine_warnings(&config, &need);
    for w in &warnings {
        log::warn!("{}: {w}", opts.config.display());
    }

    let cpio = fs.to_cpio()?;
    log::info!(
        "compressing the initramfs ({:.1} MB) with zstd level {ZSTD_LEVEL}",
        cpio.len() as f64 / 1e6
    );
    let image = initramfs::compress(&cpio, ZSTD_LEVEL)?;
    log::info!("initramfs: {:.1} MB", image.len() as f64 / 1e6);

    // 7. Outputs, manifest last.
    let manifest = Manifest {
        berth_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel_release: tree.release.clone(),
        memory_mib: need.mib,
        inputs,
        outputs: vec![
            FileRecord::of("vmlinuz", &vmlinuz),
            FileRecord::of("initramfs.img", &image),
        ],
    };
    let dir = &opts.out_dir;
    std::fs::create_dir_all(dir).map_err(|source| BuildError::CreateOutputDir {
        path: dir.clone(),
        source,
    })?;
    write_atomic(dir, "vmlinuz", &vmlinuz)?;
    write_atomic(dir, "initramfs.img", &image)?;
    write_atomic(dir, "manifest.json", &manifest.to_json())?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| BuildError::SyncOutputDir {
            path: dir.clone(),
            source,
        })?;
    Ok(BuildReport {
        manifest,
        memory: need,
        warnings,
        modules: closure.into_keys().collect(),
    })
}

/// Checks image `index` by importing it into the scratch store at `scratch` (digests,
/// sizes, diff_ids, the linux/amd64 pick, the `select`ed image and the name).
fn import_image(
    index: usize,
    path: &Path,
    name: &berth_imagefs::Reference,
    select: Option<&str>,
    scratch: &Path,
) -> Result<(), BuildError> {
    let fail = |message: String| BuildError::Image {
        index,
        path: path.to_path_buf(),
        message,
    };
    let store = berth_imagefs::Store::open(scratch).map_err(|e| fail(e.to_string()))?;
    let opts = berth_imagefs::ImportOptions {
        name: Some(name.clone()),
        select: select.map(str::to_owned),
        ..Default::default()
    };
    let report =
        berth_imagefs::import(&store, path, &opts, &mut |_| {}).map_err(|e| fail(e.to_string()))?;
    log::info!(
        "image {} ({} layers) verified and baked in",
        report.name,
        report.layers
    );
    Ok(())
}

/// Adds the files of image `index` (imported and checked by [`import_image`]) under
/// `usr/share/berth/images/`, where PID 1's importer looks for them.
fn bake_image(
    fs: &mut initramfs::Initramfs,
    inputs: &mut Vec<FileRecord>,
    index: usize,
    path: &Path,
) -> Result<(), BuildError> {
    let fail = |message: String| BuildError::Image {
        index,
        path: path.to_path_buf(),
        message,
    };
    // The initramfs holds paths relative to its root.
    let base = berth_init::images::BAKED_DIR.trim_start_matches('/');
    let baked = berth_init::images::baked_path(Path::new(base), index, path.is_dir());
    let baked = baked.to_string_lossy().into_owned();
    let mut files = Vec::new();
    if path.is_dir() {
        collect_tree(path, "", &mut files).map_err(|e| fail(e.to_string()))?;
        fs.dir(&baked, 0o755)?;
        for (rel, is_dir) in files {
            let dest = format!("{baked}/{rel}");
            if is_dir {
                fs.dir(&dest, 0o755)?;
            } else {
                let bytes =
                    std::fs::read(path.join(&rel)).map_err(|e| fail(format!("{rel}: {e}")))?;
                inputs.push(FileRecord::of(dest.clone(), &bytes));
                fs.file(&dest, 0o644, bytes)?;
            }
        }
    } else {
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        inputs.push(FileRecord::of(baked.clone(), &bytes));
        fs.file(&baked, 0o644, bytes)?;
    }
    Ok(())
}

/// Refuses a `[[container]]` whose image is not baked, or whose program or user the image
/// lacks (see [`crate::imagecheck`]).
fn check_containers(config: &HostConfig, path: &Path, scratch: &Path) -> Result<(), BuildError> {
    let problem = |key: String, message: String| BuildError::Container {
        path: path.to_path_buf(),
        key,
        message,
    };
    if config.containers.is_empty() {
        return Ok(());
    }
    let store = berth_imagefs::Store::open(scratch)
        .map_err(|e| problem("image".into(), format!("scratch store: {e}")))?;
    let baked: Vec<String> = config.images.iter().map(|i| i.name.0.to_string()).collect();
    for (i, c) in config.containers.iter().enumerate() {
        let view = ImageView::open(&store, &c.image)
            .map_err(|e| problem(format!("container[{i}].image"), e))?
            .ok_or_else(|| {
                let known = if baked.is_empty() {
                    "the config bakes no [[image]]".to_owned()
                } else {
                    format!("the baked images are {}", baked.join(", "))
                };
                problem(
                    format!("container[{i}].image"),
                    format!(
                        "image {:?} is not baked by any [[image]] ({known}): add an [[image]] with name = {:?}",
                        c.image, c.image
                    ),
                )
            })?;
        imagecheck::check_container(&view, i, c).map_err(|p| problem(p.key, p.message))?;
    }
    Ok(())
}

/// How many CPUs `berth boot` gives the machine: QEMU's default, one.
pub const BOOT_CPUS: u32 = 1;

/// What the build knows of the machine: the memory it sizes (`memory_mib`) and the CPU
/// count `berth boot` gives by default. A container limit above them is allowed (the
/// machine may be booted larger) but is likely a mistake: a warning.
fn machine_warnings(config: &HostConfig, need: &MemoryNeed) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in config.containers.iter().enumerate() {
        if let Some(m) = &c.memory {
            if m.0 > need.mib << 20 {
                out.push(format!(
                    "key `container[{i}].memory`: {} MiB is more than the {} MiB this image is sized for (memory_mib): boot it with a larger --memory or lower the limit",
                    m.0 >> 20,
                    need.mib
                ));
            }
        }
        if let Some(cpus) = c.cpus {
            if cpus.0 > BOOT_CPUS * 1000 {
                out.push(format!(
                    "key `container[{i}].cpus`: {} is more than the {BOOT_CPUS} CPU berth boot gives the machine: give QEMU more with `berth boot DIR -- -smp N`, or lower it",
                    f64::from(cpus.0) / 1000.0
                ));
            }
        }
    }
    out
}

/// Every entry under `dir`, sorted, as (relative path, is a directory); symlinks and
/// special files are refused (an OCI layout has none).
fn collect_tree(dir: &Path, prefix: &str, out: &mut Vec<(String, bool)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = e.file_type()?;
        if kind.is_dir() {
            out.push((rel.clone(), true));
            collect_tree(&e.path(), &rel, out)?;
        } else if kind.is_file() {
            out.push((rel, false));
        } else {
            return Err(std::io::Error::other(format!(
                "{rel} is neither a file nor a directory"
            )));
        }
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` through a fsynced temp file in `dir` and a rename, with
/// mode 0644 whatever the umask.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), BuildError> {
    let path = dir.join(name);
    let err = |source| BuildError::WriteOutput {
        path: path.clone(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(config: PathBuf, out: PathBuf) -> BuildOptions {
        BuildOptions {
            config,
            out_dir: out,
            init: Some(PathBuf::from("/nonexistent/init")),
            kernel_deb: None,
            kernel_deb_unpinned: false,
        }
    }

    #[test]
    fn config_errors_surface_with_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("host.toml");
        std::fs::write(&config, "version = 1\n[kernel]\nmodles = [\"dummy\"]\n").unwrap();
        let err = build(&options(config, dir.path().join("out"))).unwrap_err();
        assert!(matches!(err, BuildError::Config(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("line 3") && msg.contains("modles"), "{msg}");
        // Nothing was written.
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn missing_init_is_an_error_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("host.toml");
        std::fs::write(&config, "version = 1\n").unwrap();
        let err = build(&options(config, dir.path().join("out"))).unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::InitBinary(InitBinaryError::NotFound { .. })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("/nonexistent/init"), "{err}");
    }

    #[test]
    fn write_atomic_ignores_umask_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f", b"one").unwrap();
        write_atomic(dir.path(), "f", b"two").unwrap();
        let path = dir.path().join("f");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
