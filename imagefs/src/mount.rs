//! Overlay mounts of stored images.
//!
//! The mount options are computed by a plain function ([`plan`]) so they
//! can be tested without root. Layers are named by their short links
//! (`<prefix>/l/<id>`, 10 characters) rather than `layers/<64 hex>/diff`,
//! which is what lets 128 layers fit in the single page the kernel copies
//! for mount data (the same trick as Docker's overlay2 `l/` directory).
//! The prefix is the store's path; when that makes the options longer
//! than a page, it is the `/proc/self/fd/N` name of the store's open
//! directory fd instead (overlayfs resolves lowerdirs in the mounting
//! process, so the magic link works and keeps each entry near 29 bytes
//! whatever the store path; /proc/mounts then shows that name).
//! overlayfs lists lowerdirs top first, so the manifest order is reversed.
//!
//! Image mounts are always `nodev`: a device node shipped in a layer never
//! opens a host device through the image. The read-only inspection mount
//! (`berth image mount`) is also `nosuid`. Without an upperdir overlayfs
//! needs at least two lowerdirs, so a one-layer image gets the store's
//! empty directory beneath it.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::digest::Digest;
use crate::store::{Store, StoreError};

/// The kernel copies at most one page of mount data.
pub const MOUNT_DATA_MAX: usize = 4096 - 1;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("path {0} cannot be used in overlay options (contains ',' ':' or a newline)")]
    BadPath(PathBuf),
    #[error("overlay options for {layers} layers are {len} bytes, more than one page")]
    TooLong { layers: usize, len: usize },
    #[error("the image has no layers")]
    NoLayers,
    #[error("mounting overlay on {target}")]
    Mount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {target}")]
    Umount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("resolving mount target {target}")]
    Target {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writable layer for a container rootfs.
#[derive(Debug, Clone)]
pub struct Upper {
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
    /// Mount with `volatile`: no sync ever reaches the upper filesystem, and the
    /// kernel refuses to mount this upper again (for a layer that is thrown away).
    pub volatile: bool,
}

/// Everything needed for the mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayPlan {
    pub data: String,
    pub flags: MsFlags,
}

fn opt_path(p: &Path) -> Result<String, MountError> {
    let s = p
        .to_str()
        .ok_or_else(|| MountError::BadPath(p.to_path_buf()))?;
    if s.contains([',', ':', '\n', '\\']) {
        return Err(MountError::BadPath(p.to_path_buf()));
    }
    Ok(s.to_string())
}

/// The `/proc/self/fd/N` name of the store's directory, for options that
/// would not fit in a page with the store's path.
pub fn store_fd_prefix(store: &Store) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", store.dir_fd().as_raw_fd()))
}

/// [`plan`] with the store's path, or its fd name when that is too long.
pub fn plan_for_store(
    store: &Store,
    links: &[String],
    upper: Option<&Upper>,
) -> Result<OverlayPlan, MountError> {
    match plan(store.root(), links, upper) {
        Err(MountError::TooLong { .. } | MountError::BadPath(_)) => {
            plan(&store_fd_prefix(store), links, upper)
        }
        other => other,
    }
}

/// Options for an overlay of `links` (short ids, bottom layer first)
/// under `store_root`, with `upper` for a writable mount or read-only
/// without one. A writable mount is a container's rootfs: the store's
/// scaffold ([`Store::ensure_scaffold`]) goes beneath the image's layers.
pub fn plan(
    store_root: &Path,
    links: &[String],
    upper: Option<&Upper>,
) -> Result<OverlayPlan, MountError> {
    if links.is_empty() && upper.is_none() {
        return Err(MountError::NoLayers);
    }
    let root = opt_path(store_root)?;
    let mut lowers: Vec<String> = links
        .iter()
        .rev()
        .map(|id| format!("{root}/l/{id}"))
        .collect();
    if upper.is_some() {
        lowers.push(format!("{root}/scaffold"));
    } else if lowers.len() < 2 {
        lowers.push(format!("{root}/empty"));
    }
    let mut data = format!("lowerdir={}", lowers.join(":"));
    let mut flags = MsFlags::MS_NODEV;
    match upper {
        Some(u) => {
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                opt_path(&u.upperdir)?,
                opt_path(&u.workdir)?
            ));
            if u.volatile {
                data.push_str(",volatile");
            }
        }
        None => flags |= MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
    }
    if data.len() > MOUNT_DATA_MAX {
        return Err(MountError::TooLong {
            layers: links.len(),
            len: data.len(),
        });
    }
    Ok(OverlayPlan { data, flags })
}

/// The name of the gc hold a mount at `target` takes.
pub fn hold_name(target: &Path) -> String {
    format!(
        "mount-{}",
        &Digest::of(target.as_os_str().as_encoded_bytes()).hex()[..16]
    )
}

/// Mount image `manifest` at `target`; read-only unless `upper` is given.
/// Takes a gc hold named after the target.
pub fn mount_image(
    store: &Store,
    manifest: &Digest,
    target: &Path,
    upper: Option<&Upper>,
) -> Result<OverlayPlan, MountError> {
    let target = target.canonicalize().map_err(|source| MountError::Target {
        target: target.to_path_buf(),
        source,
    })?;
    // gc cannot run between finding the layers and taking the hold.
    let _lock = store.lock_shared()?;
    let m = store.manifest(manifest)?;
    let cfg = store.config(&m)?;
    let mut links = Vec::with_capacity(cfg.rootfs.diff_ids.len());
    for d in &cfg.rootfs.diff_ids {
        links.push(store.ensure_link(d)?);
    }
    match upper {
        Some(_) => store.ensure_scaffold()?,
        None => store.ensure_empty_dir()?,
    }
    let p = plan_for_store(store, &links, upper)?;
    store.hold_volatile(&hold_name(&target), manifest, &target)?;
    if let Err(e) = nix::mount::mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        p.flags,
        Some(p.data.as_str()),
    ) {
        let _ = store.release(&hold_name(&target));
        return Err(MountError::Mount {
            target,
            source: e.into(),
        });
    }
    Ok(p)
}

/// Unmount `target` and drop its gc hold.
pub fn umount_image(store: &Store, target: &Path) -> Result<(), MountError> {
    let canon = target.canonicalize().map_err(|source| MountError::Target {
        target: target.to_path_buf(),
        source,
    })?;
    nix::mount::umount2(&canon, MntFlags::empty()).map_err(|e| MountError::Umount {
        target: canon.clone(),
        source: e.into(),
    })?;
    store.release(&hold_name(&canon))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:010}")).collect()
    }

    #[test]
    fn order_is_top_first() {
        let p = plan(Path::new("/s"), &ids(3), None).unwrap();
        assert_eq!(
            p.data,
            "lowerdir=/s/l/0000000002:/s/l/0000000001:/s/l/0000000000"
        );
        assert!(p
            .flags
            .contains(MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID));
    }

    #[test]
    fn single_layer_gets_empty_lower() {
        let p = plan(Path::new("/s"), &ids(1), None).unwrap();
        assert_eq!(p.data, "lowerdir=/s/l/0000000000:/s/empty");
    }

    #[test]
    fn writable() {
        let mut u = Upper {
            upperdir: "/c/up".into(),
            workdir: "/c/work".into(),
            volatile: false,
        };
        let p = plan(Path::new("/s"), &ids(1), Some(&u)).unwrap();
        assert_eq!(
            p.data,
            "lowerdir=/s/l/0000000000:/s/scaffold,upperdir=/c/up,workdir=/c/work"
        );
        let none = plan(Path::new("/s"), &[], Some(&u)).unwrap();
        assert_eq!(
            none.data,
            "lowerdir=/s/scaffold,upperdir=/c/up,workdir=/c/work"
        );
        u.volatile = true;
        let throwaway = plan(Path::new("/s"), &ids(1), Some(&u)).unwrap();
        assert!(throwaway.data.ends_with(",workdir=/c/work,volatile"));
        assert!(!p.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn many_layers_fit_in_a_page() {
        let p = plan(Path::new("/var/lib/berth"), &ids(128), None).unwrap();
        assert!(p.data.len() <= MOUNT_DATA_MAX, "{}", p.data.len());
        let long = "/x".repeat(40);
        assert!(matches!(
            plan(Path::new(&long), &ids(128), None),
            Err(MountError::TooLong { .. })
        ));
    }

    #[test]
    fn long_store_paths_fall_back_to_the_fd_name() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("s".repeat(20))).unwrap();
        let p = plan_for_store(&store, &ids(64), None).unwrap();
        assert!(p
            .data
            .starts_with(&format!("lowerdir={}/l/", store.root().display())));
        let p = plan_for_store(&store, &ids(128), None).unwrap();
        assert!(
            p.data.starts_with("lowerdir=/proc/self/fd/"),
            "{}",
            &p.data[..40]
        );
        assert!(p.data.len() <= MOUNT_DATA_MAX);
        let odd = Store::open(t.path().join("a:b")).unwrap();
        let p = plan_for_store(&odd, &ids(2), None).unwrap();
        assert!(p.data.starts_with("lowerdir=/proc/self/fd/"));
    }

    #[test]
    fn rejects_separator_paths() {
        assert!(matches!(
            plan(Path::new("/a:b"), &ids(2), None),
            Err(MountError::BadPath(_))
        ));
        assert!(matches!(
            plan(Path::new("/a,b"), &ids(2), None),
            Err(MountError::BadPath(_))
        ));
    }
}
