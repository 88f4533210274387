//! Where things are: the QEMU binary, the workspace, the kernel cache and
//! the console logs. Each rule is a pure function of an environment lookup
//! (unit-tested) wrapped by a function reading the real environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::qemu::DEFAULT_QEMU;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate lives one level below the root; the path is fixed at
    // compile time, which is what tests built from this tree want.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where `make` puts static binaries for images (`make init`, `make floor-init`).
pub fn static_target_dir() -> PathBuf {
    workspace_root().join("target/x86_64-unknown-linux-gnu/release")
}

/// The static PID 1 that test and bench images are built from: `$BERTH_INIT`, else the
/// one `make init` builds. May not exist yet; callers say how to build it.
pub fn static_init() -> PathBuf {
    std::env::var_os("BERTH_INIT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| static_target_dir().join("berth-init"))
}

/// Builds a test image from `config` into `target/qemu-images/NAME/image` with the
/// static PID 1, after `prepare` has put what the config refers to (relative paths)
/// into the directory that holds the config. Panics with the reason: for tests.
pub fn build_test_image(name: &str, config: &str, prepare: impl FnOnce(&Path)) -> PathBuf {
    let dir = workspace_root().join("target/qemu-images").join(name);
    std::fs::create_dir_all(&dir).expect("create image dir");
    prepare(&dir);
    let config_path = dir.join("host.toml");
    std::fs::write(&config_path, config).expect("write config");
    let init = static_init();
    assert!(
        init.exists(),
        "{} is missing: build the static PID 1 with `make init`",
        init.display()
    );
    let out = dir.join("image");
    berth_buildroot::build::build(&berth_buildroot::build::BuildOptions {
        config: config_path,
        out_dir: out.clone(),
        init: Some(init),
        kernel_deb: None,
        kernel_deb_unpinned: false,
    })
    .unwrap_or_else(|e| panic!("berth build {name}: {e}"));
    out
}

/// [`build_test_image`] with `busybox:latest` baked in: the config's `[[image]]` must
/// have `path = "busybox"`. The image is built from this machine's busybox-static.
pub fn build_busybox_test_image(name: &str, config: &str) -> PathBuf {
    build_test_image(name, config, |dir| {
        let layout = dir.join("busybox");
        let _ = std::fs::remove_dir_all(&layout);
        berth_imagefs::build::write_busybox_layout(
            &layout,
            Path::new("/bin/busybox"),
            "busybox:latest",
        )
        .expect("busybox-static is installed (make deps)");
    })
}

/// Where console logs go: `$BERTH_QEMU_LOG_DIR`, else `qemu-logs/` in the
/// cargo target directory (`$CARGO_TARGET_DIR`, else the nearest ancestor
/// of the running test binary holding cargo's `CACHEDIR.TAG`, else
/// `<workspace>/target`).
pub fn log_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_QEMU_LOG_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            exe.ancestors()
                .skip(1)
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("qemu-logs")
}

/// The QEMU binary to run: `$BERTH_QEMU` if set, else `qemu-system-x86_64`
/// looked up in `$PATH`. `None` if it cannot be found.
pub fn find_qemu() -> Option<PathBuf> {
    find_qemu_from(|k| std::env::var_os(k))
}

/// [`find_qemu`] with the environment passed in.
pub fn find_qemu_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(p) = env("BERTH_QEMU").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.components().count() > 1 {
            is_executable(&p).then_some(p)
        } else {
            search_path(p.as_os_str(), env("PATH"))
        };
    }
    search_path(DEFAULT_QEMU.as_ref(), env("PATH"))
}

fn search_path(name: &std::ffi::OsStr, path: Option<OsString>) -> Option<PathBuf> {
    std::env::split_paths(&path?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether QEMU tests can run. If QEMU is missing: with
/// `BERTH_REQUIRE_QEMU=1` this panics (CI must not pass by skipping),
/// otherwise it prints `skipping: ...` and returns false, and the caller
/// returns early:
///
/// ```no_run
/// if !berth_qemu_tests::require_qemu() {
///     return;
/// }
/// ```
pub fn require_qemu() -> bool {
    let required = std::env::var("BERTH_REQUIRE_QEMU").is_ok_and(|v| v == "1");
    match decide(find_qemu().is_some(), required) {
        Presence::Run => true,
        Presence::Skip(msg) => {
            eprintln!("{msg}");
            false
        }
        Presence::Fail(msg) => panic!("{msg}"),
    }
}

/// Whether a test that also needs root (a loop mount, say) may run: true as root;
/// otherwise skips with a message, or fails when `BERTH_REQUIRE_ROOT=1` (as in
/// `make test`), so that nothing is skipped silently there.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let required = std::env::var("BERTH_REQUIRE_ROOT").is_ok_and(|v| v == "1");
    assert!(!required, "this test needs root and BERTH_REQUIRE_ROOT=1");
    eprintln!("skipping: not root");
    false
}

#[derive(Debug, PartialEq, Eq)]
enum Presence {
    Run,
    Skip(String),
    Fail(String),
}

fn decide(found: bool, required: bool) -> Presence {
    let what = format!(
        "{DEFAULT_QEMU} not found (looked at $BERTH_QEMU, then $PATH); \
         install qemu-system-x86; `make test` installs it"
    );
    match (found, required) {
        (true, _) => Presence::Run,
        (false, true) => Presence::Fail(format!("BERTH_REQUIRE_QEMU=1 but {what}")),
        (false, false) => Presence::Skip(format!("skipping: {what}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("qemu-tests").join("Cargo.toml").is_file());
    }

    #[test]
    fn finds_qemu_via_env_or_path() {
        let dir = std::env::temp_dir().join(format!("berth-find-qemu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join(DEFAULT_QEMU);
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let mut perms = std::fs::metadata(&bin).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&bin, perms).unwrap();
        let dir_s = dir.to_str().unwrap();
        let bin_s = bin.to_str().unwrap();

        let path = format!("/nonexistent:{dir_s}");
        assert_eq!(
            find_qemu_from(env_of(&[("PATH", &path)])),
            Some(bin.clone())
        );
        assert_eq!(find_qemu_from(env_of(&[("PATH", "/nonexistent")])), None);
        assert_eq!(
            find_qemu_from(env_of(&[("BERTH_QEMU", bin_s)])),
            Some(bin.clone())
        );
        assert_eq!(
            find_qemu_from(env_of(&[("BERTH_QEMU", "/nonexistent/qemu")])),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_qemu_skips_or_fails() {
        assert_eq!(decide(true, true), Presence::Run);
        let Presence::Skip(msg) = decide(false, false) else {
            panic!("should skip")
        };
        assert!(msg.starts_with("skipping: "), "{msg}");
        assert!(msg.contains("install qemu-system-x86; `make test` installs it"));
        let Presence::Fail(msg) = decide(false, true) else {
            panic!("should fail")
        };
        assert!(msg.contains("install qemu-system-x86"), "{msg}");
    }
}
