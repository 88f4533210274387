//! What `berth build` checks of each `[[container]]` against the images it bakes: the
//! image is baked, its program is in the image, its user in the image's `/etc/passwd`.
//! PID 1 would only find out at boot (exit 127, or a setup error, restarted forever).
//!
//! The image is read from the build's scratch store, layer by layer as overlayfs would
//! merge them ([`ImageView`]): a path is looked up from the top layer down, a whiteout
//! hides it, and symlinks (busybox's applets, `/bin -> usr/bin`) are followed inside the
//! image, never on the build host. The argv, `PATH` and user come from the runtime's own
//! merge of the config and the image (`berth_runtime::process`), and the program is
//! looked up as the runtime looks it up (its `find_executable`: an absolute path, a
//! path relative to the working directory, or each `PATH` directory; a regular file).
//!
//! Lenient where the build cannot see what the guest will: a path at or under one of the
//! container's `volumes` or `tmpfs` mounts is not checked (the program or
//! `/etc/passwd` may come from the volume), and an opaque directory
//! (`trusted.overlay.opaque`, which an unprivileged build cannot read) does not hide
//! the layers below it, so the check may accept a path the guest lacks, never refuse
//! one it has.

use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use berth_imagefs::oci::RunConfig;
use berth_imagefs::store::Store;
use berth_init::config::ContainerConfig;
use berth_runtime::process::{self, ProcessError};

/// Symlinks followed in one lookup, as the kernel's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;
/// The largest `/etc/passwd` or `/etc/group` read.
const MAX_TABLE_BYTES: u64 = 4 << 20;

/// A problem with one container, by key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProblem {
    pub key: String,
    pub message: String,
}

/// An image of the scratch store, merged from its layers.
pub struct ImageView {
    /// The layers' `diff/` directories, top first.
    layers: Vec<PathBuf>,
    config: RunConfig,
}

impl ImageView {
    /// The image `reference` resolves to in `store`, as the runtime resolves it; `None`
    /// if the store has no such image.
    pub fn open(store: &Store, reference: &str) -> Result<Option<ImageView>, String> {
        let Ok((_, digest)) = store.resolve(reference) else {
            return Ok(None);
        };
        let manifest = store.manifest(&digest).map_err(|e| e.to_string())?;
        let config = store.config(&manifest).map_err(|e| e.to_string())?;
        let layers = config
            .rootfs
            .diff_ids
            .iter()
            .rev()
            .map(|d| store.layer_dir_path(d))
            .collect();
        Ok(Some(ImageView {
            layers,
            config: config.config.unwrap_or_default(),
        }))
    }

    /// A view over these layer directories (top first), for tests.
    pub fn from_layers(layers: Vec<PathBuf>, config: RunConfig) -> ImageView {
        ImageView { layers, config }
    }

    /// The topmost entry at the merged relative path `rel`: its path on the build host
    /// and its metadata (not followed). `None` if no layer has it or a whiteout hides it.
    fn entry(&self, rel: &str) -> Option<(PathBuf, Metadata)> {
        for layer in &self.layers {
            let host = layer.join(rel);
            if let Ok(meta) = std::fs::symlink_metadata(&host) {
                let whiteout = meta.file_type().is_char_device() && meta.rdev() == 0;
                return (!whiteout).then_some((host, meta));
            }
        }
        None
    }

    /// Looks `path` up inside the image, following symlinks within it (`..` stops at
    /// the image's root, an absolute target starts again from it). Returns the final
    /// entry's host path and metadata.
    pub fn lookup(&self, path: &str) -> Option<(PathBuf, Metadata)> {
        // Components still to walk, the next one last.
        let mut pending: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut found: Option<(PathBuf, Metadata)> = None;
        let mut links = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved.pop();
                    found = None;
                    continue;
                }
                _ => {}
            }
            if found.as_ref().is_some_and(|(_, m)| !m.is_dir()) {
                return None; // a component below a file
            }
            let rel = resolved
                .iter()
                .chain(std::iter::once(&part))
                .cloned()
                .collect::<Vec<_>>()
                .join("/");
            let (host, meta) = self.entry(&rel)?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_SYMLINKS {
                    return None;
                }
                let target = std::fs::read_link(&host).ok()?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(target.split('/').rev().map(str::to_owned));
                found = None;
            } else {
                resolved.push(part);
                found = Some((host, meta));
            }
        }
        match found {
            Some(f) => Some(f),
            // The root, or a path ending in `..`: a directory of the image.
            None => self.entry(&resolved.join("/")).or_else(|| {
                let top = self.layers.first()?;
                Some((top.clone(), std::fs::metadata(top).ok()?))
            }),
        }
    }

    /// A text file of the image, empty if it has none (as the runtime reads it).
    fn read_table(&self, path: &str) -> String {
        let Some((host, meta)) = self.lookup(path) else {
            return String::new();
        };
        if !meta.is_file() {
            return String::new();
        }
        let mut text = String::new();
        let _ =
            std::fs::File::open(host).map(|f| f.take(MAX_TABLE_BYTES).read_to_string(&mut text));
        text
    }
}

/// Checks container `index` against its image: its program and its user.
pub fn check_container(
    view: &ImageView,
    index: usize,
    container: &ContainerConfig,
) -> Result<(), ContainerProblem> {
    let key = |k: &str| format!("container[{index}].{k}");
    let spec = container.spec();
    let proc = process::resolve(&spec, &view.config).map_err(|e| ContainerProblem {
        key: match e {
            ProcessError::NoCommand => key("command"),
            _ => key("image"),
        },
        message: e.to_string(),
    })?;
    // Where the program came from, for the key path.
    let program_key = if container.entrypoint.is_some() {
        key("entrypoint")
    } else if container.command.is_some() && view.config.entrypoint.is_none() {
        key("command")
    } else {
        key("image")
    };
    let argv0 = proc.argv.first().cloned().unwrap_or_default();
    let path_var = proc
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(process::DEFAULT_PATH);
    let candidates: Vec<String> = if argv0.contains('/') {
        if argv0.starts_with('/') {
            vec![argv0.clone()]
        } else {
            vec![format!("{}/{argv0}", proc.workdir.trim_end_matches('/'))]
        }
    } else {
        path_var
            .split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
            .collect()
    };
    let mounts: Vec<&str> = spec
        .volumes
        .iter()
        .map(|v| v.target.as_str())
        .chain(spec.tmpfs.iter().map(String::as_str))
        .collect();
    let present = candidates
        .iter()
        .any(|c| under_mount(c, &mounts) || view.lookup(c).is_some_and(|(_, m)| m.is_file()));
    if !present {
        let looked = if argv0.contains('/') {
            String::new()
        } else {
            format!(" (looked up in PATH {path_var})")
        };
        return Err(ContainerProblem {
            key: program_key,
            message: format!(
                "program {argv0:?} is not a file in image {}{looked}",
                container.image
            ),
        });
    }
    if under_mount("/etc/passwd", &mounts) || under_mount("/etc/group", &mounts) {
        return Ok(());
    }
    let passwd = view.read_table("/etc/passwd");
    let group = view.read_table("/etc/group");
    if let Err(e) = process::identity(&proc.user, &passwd, &group) {
        return Err(ContainerProblem {
            key: if container.user.is_some() {
                key("user")
            } else {
                key("image")
            },
            message: format!("{e} (image {})", container.image),
        });
    }
    Ok(())
}

/// Whether the container path `path` is at or under one of `mounts` (lexically, after
/// dropping `.` and empty components).
fn under_mount(path: &str, mounts: &[&str]) -> bool {
    let parts = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned)
            .collect()
    };
    let path = parts(path);
    mounts.iter().any(|m| path.starts_with(&parts(m)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Two layers: a busybox-like lower one and an upper one that replaces and deletes.
    fn image() -> (tempfile::TempDir, ImageView) {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let upper = dir.path().join("upper");
        for d in ["bin", "usr/bin", "etc", "opt"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::create_dir_all(upper.join("usr/bin")).unwrap();
        std::fs::write(lower.join("bin/busybox"), b"ELF").unwrap();
        symlink("busybox", lower.join("bin/sh")).unwrap();
        symlink("/bin/busybox", lower.join("usr/bin/env")).unwrap();
        symlink("../../bin/busybox", lower.join("usr/bin/wget")).unwrap();
        symlink("/etc/passwd", lower.join("bin/escape")).unwrap();
        symlink("loop", lower.join("bin/loop")).unwrap();
        std::fs::write(lower.join("usr/bin/gone"), b"ELF").unwrap();
        std::fs::write(lower.join("opt/tool"), b"ELF").unwrap();
        std::fs::write(
            lower.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(lower.join("etc/group"), "root:x:0:\nwww:x:33:\n").unwrap();
        std::fs::write(upper.join("usr/bin/app"), b"ELF").unwrap();
        // A whiteout, as the store writes it (needs root to create; else no whiteout).
        let whiteout = nix::sys::stat::mknod(
            &upper.join("usr/bin/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .is_ok();
        let config = RunConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into()]),
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        let view = ImageView::from_layers(vec![upper, lower], config);
        if !whiteout {
            eprintln!("not root: the whiteout case is not checked");
        }
        (dir, view)
    }

    fn container(extra: &str) -> ContainerConfig {
        let text = format!("version = 1\n[[container]]\nname = \"c\"\nimage = \"img\"\n{extra}\n");
        berth_init::config::HostConfig::parse(&text, std::path::Path::new("host.toml"))
            .unwrap()
            .containers
            .remove(0)
    }

    #[test]
    fn lookups_merge_layers_and_follow_symlinks_inside_the_image() {
        let (_dir, view) = image();
        for present in [
            "/bin/sh",
            "/usr/bin/env",
            "/usr/bin/wget",
            "/usr/bin/app",
            "/bin/../usr/bin/app",
            "/../../bin/busybox",
        ] {
            assert!(
                view.lookup(present).is_some_and(|(_, m)| m.is_file()),
                "{present}"
            );
        }
        for absent in ["/bin/nope", "/bin/busybox/x", "/bin/loop"] {
            assert!(view.lookup(absent).is_none(), "{absent}");
        }
        // An absolute symlink resolves in the image: the host's /etc/passwd is not it.
        let (host, _) = view.lookup("/bin/escape").unwrap();
        assert!(host.ends_with("lower/etc/passwd"), "{}", host.display());
        if nix::unistd::geteuid().is_root() {
            assert!(view.lookup("/usr/bin/gone").is_none(), "whiteout ignored");
        }
    }

    #[test]
    fn programs_are_found_as_the_runtime_finds_them() {
        let (_dir, view) = image();
        for ok in [
            "",
            "command = [\"wget\", \"-q\"]",
            "command = [\"/usr/bin/env\"]",
            "entrypoint = [\"app\"]",
            "command = [\"./tool\"]\nworkdir = \"/opt\"",
        ] {
            assert_eq!(check_container(&view, 0, &container(ok)), Ok(()), "{ok}");
        }
        let cases = [
            (
                "command = [\"httpd\"]",
                "container[0].command",
                "\"httpd\" is not a file in image img (looked up in PATH /usr/bin:/bin)",
            ),
            (
                "entrypoint = [\"/bin/bash\"]",
                "container[0].entrypoint",
                "\"/bin/bash\"",
            ),
            (
                "command = [\"/bin\"]",
                "container[0].command",
                "is not a file",
            ),
            ("env = { PATH = \"/opt\" }", "container[0].image", "\"sh\""),
            (
                "command = [\"./tool\"]",
                "container[0].command",
                "\"./tool\"",
            ),
        ];
        for (extra, key, message) in cases {
            let problem = check_container(&view, 0, &container(extra)).unwrap_err();
            assert_eq!(problem.key, key, "{extra}");
            assert!(
                problem.message.contains(message),
                "{extra}: {}",
                problem.message
            );
        }
    }

    #[test]
    fn what_a_mount_provides_is_not_checked() {
        let (_dir, view) = image();
        for ok in [
            "command = [\"/opt/bin/tool\"]\nvolumes = [\"/srv/tools:/opt/bin:ro\"]",
            "command = [\"/scratch/run.sh\"]\ntmpfs = [\"/scratch\"]",
            "user = \"app\"\nvolumes = [\"/srv/passwd:/etc/passwd:ro\"]",
            "user = \"app\"\nvolumes = [\"etc:/etc\"]",
        ] {
            assert_eq!(check_container(&view, 0, &container(ok)), Ok(()), "{ok}");
        }
        // A mount elsewhere does not excuse the image.
        let problem = check_container(
            &view,
            0,
            &container("user = \"app\"\nvolumes = [\"/srv/etc:/etcetera\"]"),
        )
        .unwrap_err();
        assert_eq!(problem.key, "container[0].user");
    }

    #[test]
    fn users_must_be_in_the_image() {
        let (_dir, view) = image();
        for ok in [
            "user = \"www\"",
            "user = \"1234\"",
            "user = \"www:www\"",
            "user = \"33:0\"",
        ] {
            assert_eq!(check_container(&view, 0, &container(ok)), Ok(()), "{ok}");
        }
        let problem = check_container(&view, 0, &container("user = \"nobody\"")).unwrap_err();
        assert_eq!(problem.key, "container[0].user");
        assert!(
            problem
                .message
                .contains("\"nobody\" is not in the image's /etc/passwd"),
            "{}",
            problem.message
        );
        let problem = check_container(&view, 0, &container("user = \"www:staff\"")).unwrap_err();
        assert_eq!(problem.key, "container[0].user");
        assert!(problem.message.contains("\"staff\""), "{}", problem.message);
    }
}
