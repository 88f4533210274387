//! Images baked into the initramfs by `berth build` (`[[image]]`), imported into the
//! store at boot.
//!
//! The import parses image bytes, so it does not run in PID 1: PID 1 starts its
//! helper binary as `berth-helper import-images` and supervises that process like any
//! other child. If it fails or crashes, PID 1 logs it and tries again (up to
//! [`MAX_ATTEMPTS`] times); containers wait for it.

use std::path::{Path, PathBuf};

use berth_imagefs::{import, ImportError, ImportOptions, Store};

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

/// The importer's report of an image it could not import, one line on its stdout:
/// `failed N`, N the image's index among the `[[image]]`s.
const FAILED_WORD: &str = "failed";
/// The most of the importer's report PID 1 reads.
const REPORT_LIMIT: usize = 16 << 10;

/// A running importer: its pid (reaped by PID 1's loop) and its report pipe.
pub struct ImporterProcess {
    pub pid: nix::unistd::Pid,
    report: Option<std::os::fd::OwnedFd>,
}

/// Starts the importer; its stdout is a pipe to PID 1, read once it has exited.
pub fn spawn_importer() -> std::io::Result<ImporterProcess> {
    let mut child = crate::helper::command(crate::helper::IMPORT_ARG)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let report = child.stdout.take().map(std::os::fd::OwnedFd::from);
    if let Some(fd) = &report {
        // Read only after the exit, but never blocking PID 1 even if a writer lingered.
        use std::os::fd::AsRawFd;
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    Ok(ImporterProcess {
        pid: nix::unistd::Pid::from_raw(child.id() as i32),
        report,
    })
}

impl ImporterProcess {
    /// After its exit: the indices of the images it reported as failed. The report is a
    /// few short lines, in the pipe's buffer since the importer is gone; at most
    /// [`REPORT_LIMIT`] bytes are read.
    pub fn failed_images(self) -> Vec<usize> {
        let Some(fd) = self.report else {
            return Vec::new();
        };
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while text.len() < REPORT_LIMIT {
            match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        parse_report(&String::from_utf8_lossy(&text))
    }
}

/// The image indices of `failed N` lines; other lines are ignored.
pub fn parse_report(text: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|l| l.strip_prefix(FAILED_WORD)?.trim().parse().ok())
        .collect()
}

/// The importer process: imports every `[[image]]` of the config, and reports each that
/// failed on stdout. Exit code 0 when all are in the store.
pub fn importer_main() -> i32 {
    let config = match HostConfig::load(Path::new(CONFIG_PATH)) {
        Ok(c) => c,
        Err(e) => {
            log::error!("import-images: {e}");
            return 1;
        }
    };
    let store = match Store::open(STORE_DIR) {
        Ok(s) => s,
        Err(e) => {
            log::error!("import-images: store {STORE_DIR}: {e}");
            return 1;
        }
    };
    let mut failed = Vec::new();
    for (i, image) in config.images.iter().enumerate() {
        let base = Path::new(BAKED_DIR);
        let path = baked_path(base, i, baked_path(base, i, true).is_dir());
        let opts = ImportOptions {
            name: Some(image.name.0.clone()),
            select: image.select.clone(),
            ..ImportOptions::default()
        };
        match import(&store, &path, &opts, &mut |_| {}) {
            Ok(report) => log::info!(
                "image {} imported from {} ({} layers)",
                report.name,
                path.display(),
                report.layers
            ),
            Err(e) => {
                log::error!("{}", failure_line(&image.name.0.to_string(), &path, &e));
                failed.push(i);
            }
        }
    }
    let report: String = failed
        .iter()
        .map(|i| format!("{FAILED_WORD} {i}\n"))
        .collect();
    if let Err(e) = std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes()) {
        log::error!("import-images: cannot report to PID 1: {e}");
    }
    i32::from(!failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_failed_images_by_index() {
        assert_eq!(parse_report("failed 0\nfailed 2\n"), [0, 2]);
        assert_eq!(parse_report("failed x\nnoise\n\nfailed 1"), [1]);
        assert!(parse_report("").is_empty());
    }
}

/// The console line for an image that failed to import: the whole error chain
/// ("reading archive X" alone does not say what failed), and the baked path only
/// when the message does not name it already.
fn failure_line(name: &str, path: &Path, e: &ImportError) -> String {
    let detail = berth_imagefs::error_chain(e);
    if e.names_path() {
        format!("image {name}: {detail}")
    } else {
        format!("image {name} from {}: {detail}", path.display())
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    /// What the importer says of a baked layout the kernel's unpack cut short:
    /// blobs written, index.json not.
    #[test]
    fn an_image_cut_short_is_reported_incomplete_once_by_path() {
        let t = tempfile::tempdir().unwrap();
        let baked = baked_path(t.path(), 0, true);
        std::fs::create_dir_all(baked.join("blobs/sha256")).unwrap();
        for blob in [&b"one"[..], b"two", b"three"] {
            let name = berth_imagefs::Digest::of(blob).hex();
            std::fs::write(baked.join("blobs/sha256").join(name), blob).unwrap();
        }
        let store = Store::open(t.path().join("store")).unwrap();
        let e = import(&store, &baked, &ImportOptions::default(), &mut |_| {}).unwrap_err();
        let line = failure_line("busybox:latest", &baked, &e);
        assert_eq!(
            line,
            format!(
                "image busybox:latest: {} is an incomplete image: index.json is \
                 missing (blobs present: 3) — an image cut short, for example an initramfs \
                 that did not fit in memory",
                baked.display()
            )
        );
    }
}
