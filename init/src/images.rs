//! Images baked into the initramfs by `berth build` (`[[image]]`), imported into the
//! store at boot.
//!
//! The import parses image bytes, so it does not run in PID 1: PID 1 starts its
//! helper binary as `berth-helper import-images` and supervises that process like any
//! other child. If it fails or crashes, PID 1 logs it and tries again (up to
//! [`MAX_ATTEMPTS`] times); containers wait for it.

use std::path::{Path, PathBuf};

use berth_imagefs::{import, ImportOptions, Store};

use crate::config::{HostConfig, CONFIG_PATH};

/// Where `berth build` puts `[[image]]` number N: `N/` (an OCI layout directory) or
/// `N.tar` (an OCI or docker-archive tar).
pub const BAKED_DIR: &str = "/usr/share/berth/images";
/// The store PID 1 uses.
pub const STORE_DIR: &str = "/var/lib/berth";
pub const MAX_ATTEMPTS: u32 = 3;

/// Where image `index` is baked under `base`: `N/` for an image layout directory,
/// `N.tar` for a tar. `berth build` names it with this, and the importer finds it.
pub fn baked_path(base: &Path, index: usize, is_dir: bool) -> PathBuf {
    if is_dir {
        base.join(index.to_string())
    } else {
        base.join(format!("{index}.tar"))
    }
}

/// Starts the importer; its pid is reaped by PID 1's loop.
pub fn spawn_importer() -> std::io::Result<nix::unistd::Pid> {
    let child = crate::helper::command(crate::helper::IMPORT_ARG).spawn()?;
    Ok(nix::unistd::Pid::from_raw(child.id() as i32))
}

/// The importer process: imports every `[[image]]` of the config. Exit code 0 when
/// all are in the store.
pub fn importer_main() -> i32 {
    let config = match HostConfig::load(Path::new(CONFIG_PATH)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: import-images: {e}");
            return 1;
        }
    };
    let store = match Store::open(STORE_DIR) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth: import-images: store {STORE_DIR}: {e}");
            return 1;
        }
    };
    let mut failed = 0;
    for (i, image) in config.images.iter().enumerate() {
        let base = Path::new(BAKED_DIR);
        let path = baked_path(base, i, baked_path(base, i, true).is_dir());
        let opts = ImportOptions {
            name: Some(image.name.0.clone()),
            select: image.select.clone(),
            ..ImportOptions::default()
        };
        match import(&store, &path, &opts, &mut |_| {}) {
            Ok(report) => eprintln!(
                "berth: image {} imported from {} ({} layers)",
                report.name,
                path.display(),
                report.layers
            ),
            Err(e) => {
                eprintln!(
                    "berth: error: image {} from {}: {e}",
                    image.name.0,
                    path.display()
                );
                failed += 1;
            }
        }
    }
    i32::from(failed > 0)
}
