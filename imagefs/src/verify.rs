//! Re-checking what is stored.
//!
//! Blobs are re-hashed against their digests and the sizes their manifest
//! records. A layer's unpacked tree cannot be re-hashed to its `diff_id`
//! (the tar stream is gone), so it is checked by unpacking its stored blob
//! again into staging with the same code and comparing the two trees:
//! names, types, modes, owners, sizes, mtimes, link targets, device
//! numbers, the opaque marker and every byte of content.
//!
//! Whatever is found damaged is moved out of the store, so importing the
//! image again rebuilds it.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};

use crate::digest::{Digest, HashingReader};
use crate::layer::{self, Limits};
use crate::store::{Store, StoreError};
use crate::sys;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// What was checked: `manifest`, `config`, `blob`, `layer`.
    pub kind: &'static str,
    pub digest: Digest,
    pub detail: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub blobs_checked: usize,
    pub layers_checked: usize,
    pub problems: Vec<Problem>,
}

fn hash_blob(store: &Store, d: &Digest) -> Result<(Digest, u64), StoreError> {
    let f = store.open_blob(d)?;
    let mut r = HashingReader::new(io::BufReader::with_capacity(256 << 10, f));
    io::copy(&mut r, &mut io::sink())
        .map_err(|source| StoreError::ReadBlob { digest: *d, source })?;
    let (_, h) = r.into_parts();
    let len = h.len();
    Ok((h.finish(), len))
}

/// Check one blob; quarantine it when it is wrong.
fn check_blob(
    store: &Store,
    kind: &'static str,
    d: &Digest,
    size: Option<u64>,
    rep: &mut VerifyReport,
) -> Result<bool, StoreError> {
    rep.blobs_checked += 1;
    let (actual, len) = match hash_blob(store, d) {
        Ok(v) => v,
        Err(StoreError::BlobMissing { .. }) => {
            rep.problems.push(Problem {
                kind,
                digest: *d,
                detail: "missing".into(),
            });
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let detail = if actual != *d {
        Some(format!("content hashes to {actual}"))
    } else if size.is_some_and(|s| s != len) {
        Some(format!(
            "is {len} bytes, manifest says {}",
            size.unwrap_or(0)
        ))
    } else {
        None
    };
    if let Some(detail) = detail {
        rep.problems.push(Problem {
            kind,
            digest: *d,
            detail,
        });
        store.quarantine_blob(d)?;
        return Ok(false);
    }
    Ok(true)
}

/// Verify one image (by manifest digest).
pub fn verify_image(
    store: &Store,
    manifest: &Digest,
    rep: &mut VerifyReport,
) -> Result<(), StoreError> {
    // Shared like an import: gc waits, and opening the store elsewhere
    // leaves our staging alone.
    let _lock = store.lock_shared()?;
    if !check_blob(store, "manifest", manifest, None, rep)? {
        return Ok(());
    }
    let m = store.manifest(manifest)?;
    if !check_blob(store, "config", &m.config.digest, Some(m.config.size), rep)? {
        return Ok(());
    }
    let cfg = store.config(&m)?;
    for (desc, diff_id) in m.layers.iter().zip(&cfg.rootfs.diff_ids) {
        let blob_ok = check_blob(store, "blob", &desc.digest, Some(desc.size), rep)?;
        if !store.has_layer(diff_id)? {
            rep.problems.push(Problem {
                kind: "layer",
                digest: *diff_id,
                detail: "not unpacked".into(),
            });
            continue;
        }
        if !blob_ok {
            continue;
        }
        rep.layers_checked += 1;
        if let Some(detail) = check_layer(store, &desc.digest, diff_id)? {
            rep.problems.push(Problem {
                kind: "layer",
                digest: *diff_id,
                // It names files of the image, and `verify` prints it.
                detail: crate::text::printable(&detail, 400),
            });
            store.remove_layer(diff_id)?;
        }
    }
    Ok(())
}

/// Unpack the blob again and compare; `Some(difference)` when altered.
fn check_layer(
    store: &Store,
    blob: &Digest,
    diff_id: &Digest,
) -> Result<Option<String>, StoreError> {
    let staging = store.staging_dir("verify")?;
    let fresh = staging.make_diff_dir()?;
    let f = store.open_blob(blob)?;
    match layer::apply_layer(f, fresh.as_fd(), &Limits::default(), &mut |_| {}) {
        Ok(stats) if stats.diff_id == *diff_id => {}
        Ok(stats) => return Ok(Some(format!("blob unpacks to {}", stats.diff_id))),
        Err(e) => return Ok(Some(format!("blob no longer unpacks: {e}"))),
    }
    let stored = store.open_layer(diff_id)?;
    Ok(compare(fresh.as_fd(), stored.as_fd(), "").err())
}

fn io_s(path: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{}: {e}", if path.is_empty() { "/" } else { path })
}

/// Compare two trees; `Err(description)` at the first difference.
pub fn compare(a: BorrowedFd<'_>, b: BorrowedFd<'_>, path: &str) -> Result<(), String> {
    let mut na = sys::list_dir(a).map_err(io_s(path))?;
    let mut nb = sys::list_dir(b).map_err(io_s(path))?;
    na.sort();
    nb.sort();
    if na != nb {
        let names = |from: &[CString], not_in: &[CString]| {
            from.iter()
                .filter(|n| !not_in.contains(n))
                .map(|n| crate::text::printable_bytes(n.as_bytes(), crate::text::MAX_SHOWN))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "{}: entries differ (extra: {}; missing: {})",
            if path.is_empty() { "/" } else { path },
            names(&nb, &na),
            names(&na, &nb)
        ));
    }
    opaque_eq(a, b).map_err(|e| format!("{}: {e}", if path.is_empty() { "/" } else { path }))?;
    for n in &na {
        let p = format!("{path}/{}", n.to_string_lossy());
        compare_entry(a, b, n, &p)?;
    }
    Ok(())
}

fn opaque_eq(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<(), String> {
    let k = c"trusted.overlay.opaque";
    let xa = sys::fgetxattr(a, k).map_err(|e| e.to_string())?;
    let xb = sys::fgetxattr(b, k).map_err(|e| e.to_string())?;
    if xa != xb {
        return Err("opaque marker differs".into());
    }
    Ok(())
}

fn compare_entry(a: BorrowedFd<'_>, b: BorrowedFd<'_>, n: &CStr, p: &str) -> Result<(), String> {
    let sa = sys::fstatat(a, n, true).map_err(io_s(p))?;
    let sb = sys::fstatat(b, n, true).map_err(io_s(p))?;
    let fmt = sa.st_mode & libc::S_IFMT;
    if sa.st_mode != sb.st_mode {
        return Err(format!(
            "{p}: mode {:o} is now {:o}",
            sa.st_mode, sb.st_mode
        ));
    }
    if (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid) {
        return Err(format!(
            "{p}: owner {}:{} is now {}:{}",
            sa.st_uid, sa.st_gid, sb.st_uid, sb.st_gid
        ));
    }
    if fmt != libc::S_IFDIR && (sa.st_mtime, sa.st_mtime_nsec) != (sb.st_mtime, sb.st_mtime_nsec) {
        return Err(format!("{p}: mtime changed"));
    }
    match fmt {
        libc::S_IFDIR => {
            let open = |d, what| {
                sys::openat(d, n, sys::O_RDONLY | sys::O_DIRECTORY | sys::O_NOFOLLOW, 0)
                    .map_err(|e: io::Error| format!("{p} ({what}): {e}"))
            };
            let da = open(a, "fresh")?;
            let db = open(b, "stored")?;
            compare(da.as_fd(), db.as_fd(), p)
        }
        libc::S_IFLNK => {
            let la = sys::readlinkat(a, n).map_err(io_s(p))?;
            let lb = sys::readlinkat(b, n).map_err(io_s(p))?;
            if la != lb {
                return Err(format!("{p}: symlink target changed"));
            }
            Ok(())
        }
        libc::S_IFCHR | libc::S_IFBLK => {
            if sa.st_rdev != sb.st_rdev {
                return Err(format!("{p}: device number changed"));
            }
            Ok(())
        }
        libc::S_IFREG => {
            if sa.st_size != sb.st_size {
                return Err(format!("{p}: size {} is now {}", sa.st_size, sb.st_size));
            }
            let fa =
                File::from(sys::openat(a, n, sys::O_RDONLY | sys::O_NOFOLLOW, 0).map_err(io_s(p))?);
            let fb =
                File::from(sys::openat(b, n, sys::O_RDONLY | sys::O_NOFOLLOW, 0).map_err(io_s(p))?);
            if !same_content(fa, fb).map_err(io_s(p))? {
                return Err(format!("{p}: content changed"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn same_content(mut a: File, mut b: File) -> io::Result<bool> {
    let mut ba = vec![0u8; 128 << 10];
    let mut bb = vec![0u8; 128 << 10];
    loop {
        let n = read_full(&mut a, &mut ba)?;
        let m = read_full(&mut b, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
