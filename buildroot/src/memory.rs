//! How much memory an image needs to boot and run its baked images: `memory_mib` in
//! `manifest.json`, which `berth boot` uses (at least 256 MiB) when `--memory` is not
//! given. Computed from what the build knows, following where the bytes live in the
//! guest (everything is memory: there is no disk):
//!
//! 1. The kernel unpacks the initramfs into its rootfs, a tmpfs: the unpacked archive
//!    `U` (each file rounded up to whole pages, plus an inode and dentry per entry),
//!    while the compressed image (smaller than `U`) is still in memory.
//! 2. PID 1 copies the rootfs into a fresh tmpfs before freeing the original
//!    (`berth_init::switch_root`): `2 × U` at the peak.
//! 3. The importer copies each baked image into the store, a tmpfs at `/var/lib/berth`:
//!    its blobs as shipped plus its layers unpacked, `S`, measured on the build's own
//!    scratch import. The rootfs keeps its copy: `U + S`.
//! 4. The containers run: each gets [`CONTAINER_ALLOWANCE_MIB`], or its `memory` limit
//!    if that is smaller, `C`.
//!
//! A tmpfs holds at most half the machine's memory by default (the rootfs, the new root
//! and the store alike), so `U` and `S` each need twice their size. The need is then
//!
//! ```text
//! memory_mib = BASELINE + max(2·U, U + S + C, 2·S), rounded up to 16 MiB
//! ```
//!
//! where [`BASELINE_MIB`] covers the kernel, its reserved memory and PID 1 with its
//! helpers, measured on a small image (see the constant).

use std::path::Path;

const MIB: u64 = 1 << 20;
/// tmpfs stores whole pages.
const PAGE: u64 = 4096;
/// What a tmpfs entry costs besides its data (inode, dentry, a directory's page), a
/// generous round figure.
const ENTRY_COST: u64 = 2048;

/// The kernel (its code, page tables, reserved and per-CPU memory), PID 1, netd and the
/// importer. Measured with QEMU TCG, 1 CPU, the pinned kernel: the kernel reserves about
/// 47 MiB whatever the machine's size (`Memory: 50288K/97784K available … 47236K
/// reserved` at 96 MiB); an image with nothing baked (10.5 MiB unpacked) boots to
/// "ready" at 96 MiB and not at 64. 96 MiB is that fixed part with room for PID 1, its
/// helpers and the page cache.
///
/// Checked against an image baking 64 MiB of data in an uncompressed layer (`U` 76.7 MiB,
/// `S` 132 MiB, one container; `memory_mib` 368): at 128 and 192 MiB the unpack fails
/// (and at 192 the switch of root then runs out of memory), at 256 and 288 the store's
/// tmpfs (half the memory) is too small for the import, at 320 and 368 the container
/// runs. The formula is on the safe side by about 50 MiB there.
pub const BASELINE_MIB: u64 = 96;
/// What a container without a smaller `memory` limit is counted for: a shell, a small
/// server and its page cache.
pub const CONTAINER_ALLOWANCE_MIB: u64 = 32;
/// `memory_mib` is a multiple of this.
const ROUND_MIB: u64 = 16;

/// The need and its parts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeed {
    /// The unpacked initramfs in a tmpfs.
    pub unpacked: u64,
    /// The store after the baked images are imported.
    pub store: u64,
    /// The containers' allowances.
    pub containers: u64,
    /// The total, in MiB.
    pub mib: u64,
}

/// What files of these sizes, and `entries` entries in all, take in a tmpfs.
pub fn tmpfs_bytes(file_sizes: impl Iterator<Item = u64>, entries: u64) -> u64 {
    let data: u64 = file_sizes.map(|s| s.div_ceil(PAGE) * PAGE).sum();
    data + entries * ENTRY_COST
}

/// What the tree at `dir` (not following symlinks) would take in a tmpfs.
pub fn tree_tmpfs_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut sizes = Vec::new();
    let mut entries = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let meta = e.metadata()?;
            entries += 1;
            if meta.is_dir() {
                pending.push(e.path());
            } else if meta.is_file() {
                sizes.push(meta.len());
            }
        }
    }
    Ok(tmpfs_bytes(sizes.into_iter(), entries))
}

/// The need of an image whose initramfs takes `unpacked` bytes in a tmpfs, whose store
/// takes `store` bytes once the baked images are imported, with containers of these
/// `memory` limits (`None`: no limit).
pub fn need(unpacked: u64, store: u64, limits: &[Option<u64>]) -> MemoryNeed {
    let allowance = CONTAINER_ALLOWANCE_MIB * MIB;
    let containers: u64 = limits
        .iter()
        .map(|l| l.map_or(allowance, |l| l.min(allowance)))
        .sum();
    let peak = (2 * unpacked)
        .max(unpacked + store + containers)
        .max(2 * store);
    let mib = BASELINE_MIB + peak.div_ceil(MIB);
    MemoryNeed {
        unpacked,
        store,
        containers,
        mib: mib.div_ceil(ROUND_MIB) * ROUND_MIB,
    }
}

impl std::fmt::Display for MemoryNeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / MIB as f64;
        write!(
            f,
            "{} MiB: {BASELINE_MIB} MiB for the kernel and PID 1, the initramfs unpacked {:.1} MiB (twice while PID 1 leaves it), the imported images {:.1} MiB, the containers {:.0} MiB",
            self.mib,
            mib(self.unpacked),
            mib(self.store),
            mib(self.containers)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_take_whole_pages() {
        assert_eq!(tmpfs_bytes([1, 4096, 4097].into_iter(), 0), 4 * 4096);
        assert_eq!(tmpfs_bytes([0].into_iter(), 3), 3 * ENTRY_COST);
    }

    #[test]
    fn the_largest_phase_decides() {
        // A small image: the baseline and one container.
        let small = need(6 * MIB, MIB, &[None]);
        assert_eq!(small.mib, 96 + 48);
        // A big initramfs: its copy at the switch is the peak.
        assert_eq!(need(100 * MIB, 10 * MIB, &[]).mib, 96 + 208);
        // A big store (layers unpacked from small blobs): half the RAM must hold it.
        assert_eq!(need(20 * MIB, 150 * MIB, &[]).mib, 96 + 304);
        // Containers count their limit when it is below the allowance.
        let limited = need(MIB, 0, &[Some(8 * MIB), Some(1 << 30)]);
        assert_eq!(limited.containers, 40 * MIB);
        assert_eq!(limited.mib % ROUND_MIB, 0);
    }

    #[test]
    fn a_tree_is_measured_as_tmpfs_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), vec![0; 5000]).unwrap();
        assert_eq!(
            tree_tmpfs_bytes(dir.path()).unwrap(),
            2 * PAGE + 2 * ENTRY_COST
        );
    }
}
