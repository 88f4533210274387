//! Loading kernel modules: the ones the config names, and coldplug, i.e. the drivers for
//! the devices already present, found by matching each device's `modalias` against
//! `modules.alias`.
//!
//! Each module's dependencies are loaded first. Built-in modules and modules already
//! loaded count as success. A module that fails to load is an error for that module only.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use crate::modindex::{name_from_path, IndexError, ModuleIndex};

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module {name} is not in the image's modules.dep (neither a module nor built in)")]
    Unknown { name: String },
    #[error("cannot open module file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel refused module {path}: {source}")]
    Init { path: PathBuf, source: Errno },
}

/// What loading a module did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    Loaded,
    AlreadyLoaded,
    BuiltIn,
}

/// Loads modules from one modules directory, remembering what is loaded.
pub struct ModuleLoader {
    dir: PathBuf,
    index: ModuleIndex,
    loaded: BTreeSet<String>,
}

/// The directory of the running kernel's modules: `/lib/modules/$(uname -r)`.
pub fn running_kernel_dir() -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new("/lib/modules").join(release)
}

/// Names of the modules in `/proc/modules`, sorted.
pub fn loaded_modules() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

impl ModuleLoader {
    /// Reads the index in `dir` and the list of loaded modules.
    pub fn open(dir: &Path) -> Result<ModuleLoader, IndexError> {
        Ok(ModuleLoader {
            dir: dir.to_owned(),
            index: ModuleIndex::load(dir)?,
            loaded: loaded_modules(),
        })
    }

    /// Loads `name` and its dependencies.
    pub fn load(&mut self, name: &str) -> Result<LoadOutcome, ModuleError> {
        let name = name.replace('-', "_");
        if self.loaded.contains(&name) {
            return Ok(LoadOutcome::AlreadyLoaded);
        }
        let Some(order) = self.index.load_order(&name) else {
            if self.index.is_builtin(&name) {
                return Ok(LoadOutcome::BuiltIn);
            }
            return Err(ModuleError::Unknown { name });
        };
        let mut outcome = LoadOutcome::AlreadyLoaded;
        for rel in order {
            let module = name_from_path(&rel).unwrap_or_default();
            if self.loaded.contains(&module) {
                continue;
            }
            outcome = self.insert(&rel)?;
            self.loaded.insert(module);
        }
        Ok(outcome)
    }

    fn insert(&self, rel: &Path) -> Result<LoadOutcome, ModuleError> {
        let path = self.dir.join(rel);
        let file = File::open(&path).map_err(|source| ModuleError::Open {
            path: path.clone(),
            source,
        })?;
        let started = crate::klog::boot_ms();
        match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) => {
                log::debug!(
                    "loaded module {} in {:.1} ms",
                    rel.display(),
                    crate::klog::boot_ms() - started
                );
                Ok(LoadOutcome::Loaded)
            }
            Err(Errno::EEXIST) => Ok(LoadOutcome::AlreadyLoaded),
            Err(source) => Err(ModuleError::Init { path, source }),
        }
    }

    /// Loads the drivers for the devices under `sys_devices` (`/sys/devices`). Loading a
    /// driver can reveal new devices (a PCI transport exposes its virtio devices), so the
    /// scan repeats until it loads nothing new. Returns the modules it loaded.
    pub fn coldplug(&mut self, sys_devices: &Path) -> Vec<String> {
        const MAX_PASSES: usize = 4;
        let mut loaded_now = Vec::new();
        let mut failed: BTreeSet<String> = BTreeSet::new();
        for _ in 0..MAX_PASSES {
            let mut progress = false;
            let aliases = scan_modaliases(sys_devices);
            let wanted: BTreeSet<String> = aliases
                .iter()
                .flat_map(|a| self.index.modules_for_alias(a))
                .map(str::to_owned)
                .collect();
            for name in wanted {
                if self.loaded.contains(&name) || failed.contains(&name) {
                    continue;
                }
                match self.load(&name) {
                    Ok(LoadOutcome::Loaded) => {
                        progress = true;
                        loaded_now.push(name);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        log::warn!("coldplug: {e}");
                        failed.insert(name);
                    }
                }
            }
            if !progress {
                break;
            }
        }
        loaded_now
    }
}

/// Every distinct `modalias` under `dir`, not following symlinks (sysfs is full of links
/// back up the tree).
pub fn scan_modaliases(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && entry.file_name() == "modalias" {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    let alias = text.trim();
                    if !alias.is_empty() {
                        found.insert(alias.to_owned());
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modalias_scan_finds_files_and_skips_links() {
        let dir = std::env::temp_dir().join(format!("berth-modalias-{}", std::process::id()));
        let dev = dir.join("pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(dev.join("virtio0")).unwrap();
        std::fs::write(dev.join("modalias"), "pci:v00001AF4d00001000\n").unwrap();
        std::fs::write(dev.join("virtio0/modalias"), "virtio:d00000001v00001AF4\n").unwrap();
        std::fs::write(dev.join("virtio0/empty"), "").unwrap();
        std::os::unix::fs::symlink(&dir, dev.join("virtio0/loop")).unwrap();
        let found = scan_modaliases(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            ["pci:v00001AF4d00001000", "virtio:d00000001v00001AF4"]
        );
    }

    #[test]
    fn unknown_module_is_an_error_naming_it() {
        let mut loader = ModuleLoader {
            dir: PathBuf::from("/nonexistent"),
            index: ModuleIndex::parse("", "", "kernel/x/builtin_one.ko\n"),
            loaded: BTreeSet::from(["already".to_owned()]),
        };
        assert_eq!(loader.load("builtin-one").unwrap(), LoadOutcome::BuiltIn);
        assert_eq!(loader.load("already").unwrap(), LoadOutcome::AlreadyLoaded);
        let err = loader.load("nope").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
