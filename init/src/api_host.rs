//! What PID 1 tells the API about the host itself (`/info`, `/version`).
//!
//! Each figure comes from the kernel in one cheap read; none can fail the request (a
//! figure that cannot be read is zero or empty, and the log says why once).

use std::path::Path;

use berth_proto::api::SystemInfo;

/// The host's figures. `state_dir` is the state directory, whose filesystem says
/// whether state survives a reboot.
pub fn system_info(state_dir: &Path) -> SystemInfo {
    SystemInfo {
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        kernel_version: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        ncpu: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        mem_total_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total(&m))
            .unwrap_or(0),
        // The API server counts images itself, from the store.
        images: 0,
        cgroup_version: if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            2
        } else {
            1
        },
        state_in_ram: state_in_ram(state_dir),
        berth_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// True when `dir` is on a tmpfs (or cannot be examined): state that a reboot loses.
fn state_in_ram(dir: &Path) -> bool {
    match nix::sys::statfs::statfs(dir) {
        Ok(fs) => fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total() {
        let text = "MemTotal:        2030400 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total(text), Some(2_030_400 * 1024));
        assert_eq!(mem_total("garbage"), None);
    }

    #[test]
    fn figures_of_this_machine() {
        let info = system_info(Path::new("/dev/shm"));
        assert!(info.ncpu >= 1);
        assert!(info.mem_total_bytes > 0);
        assert!(!info.kernel_version.is_empty());
        assert!(info.state_in_ram, "/dev/shm is a tmpfs");
        let tmp = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let on_disk = system_info(tmp.path());
        // The checkout is on a disk here; on a tmpfs checkout this says so too.
        let expected = nix::sys::statfs::statfs(tmp.path())
            .unwrap()
            .filesystem_type()
            == nix::sys::statfs::TMPFS_MAGIC;
        assert_eq!(on_disk.state_in_ram, expected);
    }
}
