//! Did the kernel unpack the whole initramfs?
//!
//! The kernel unpacks the initramfs into a tmpfs before PID 1 runs. When memory runs out
//! it logs `Initramfs unpacking failed: write error`, stops at the entry that failed and
//! starts `/init` anyway, with every later entry missing. Without a check, boot goes on
//! to confusing errors (an image importer that finds half an image). So `berth build`
//! writes two files:
//!
//! - [`RECORD_PATH`], early in the archive (its sorted place): what was packed, in a
//!   [`Record`], and the memory the image needs;
//! - [`END_PATH`], the archive's very last entry. The kernel unpacks in archive order and
//!   stops at the first write error, so this file exists only if everything before it was
//!   written.
//!
//! PID 1 checks both, and the baked images' files against the record (the kernel skips a
//! file it cannot create without stopping, and the images are nearly all of a large
//! archive). The check reads one small file and walks only the baked-images directory (a
//! few dozen entries), so it costs well under a millisecond.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The record of what `berth build` packed, relative to the root.
pub const RECORD_PATH: &str = "etc/berth/initramfs.json";
/// The archive's last entry, relative to the root.
pub const END_PATH: &str = "etc/berth/initramfs.end";
/// The end marker's content.
pub const END_CONTENT: &[u8] = b"berth initramfs end\n";
/// The largest record read; a real one is about 150 bytes.
const MAX_RECORD_BYTES: u64 = 4096;
/// Deeper than any OCI layout (`blobs/sha256/<hex>`): the walk is bounded.
const MAX_DEPTH: usize = 8;

/// What `berth build` put in the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Archive entries (directories, files, devices), the end marker included.
    pub entries: u64,
    /// Bytes of file data in the archive.
    pub bytes: u64,
    /// Regular files under the baked-images directory.
    pub baked_files: u64,
    /// Their bytes.
    pub baked_bytes: u64,
    /// The memory the image needs (`memory_mib` of `manifest.json`).
    pub memory_mib: u64,
}

impl Record {
    /// The record as the build writes it: one line of JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// Files and bytes found under a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub files: u64,
    /// Their sizes. The kernel sets a file's size before it writes the data, so a file
    /// whose write failed has its full size here.
    pub bytes: u64,
    /// The bytes they hold: each file's size or its allocated blocks, the smaller.
    pub stored: u64,
}

/// The outcome of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpacked {
    /// The end marker is there and the baked images are whole.
    Complete(Record),
    /// The record is missing or unreadable: the unpack stopped before it.
    NoRecord,
    /// The record is there, but the end marker or some baked image bytes are not.
    Incomplete { record: Record, found: Tally },
}

/// Checks the initramfs unpacked at `root` (`/` at boot). Never panics; a directory it
/// cannot read counts as empty.
pub fn check(root: &Path) -> Unpacked {
    let Some(record) = read_record(&root.join(RECORD_PATH)) else {
        return Unpacked::NoRecord;
    };
    let baked = root.join(crate::images::BAKED_DIR.trim_start_matches('/'));
    let mut found = Tally::default();
    tally(&baked, 0, &mut found);
    let end_ok = std::fs::read(root.join(END_PATH)).is_ok_and(|b| b == END_CONTENT);
    if end_ok && found.files == record.baked_files && found.bytes == record.baked_bytes {
        Unpacked::Complete(record)
    } else {
        Unpacked::Incomplete { record, found }
    }
}

/// Checks `root` and logs the outcome: one error line if incomplete, else one info line
/// with the time the check took.
pub fn log_check(root: &Path) {
    let started = crate::klog::boot_ms();
    match check(root) {
        outcome @ Unpacked::Complete(_) => log::info!(
            "{outcome} (checked in {:.2} ms)",
            crate::klog::boot_ms() - started
        ),
        outcome => log::error!("{outcome}"),
    }
}

fn read_record(path: &Path) -> Option<Record> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Adds the regular files under `dir` (symlinks not followed) to `out`.
fn tally(dir: &Path, depth: usize, out: &mut Tally) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            tally(&entry.path(), depth + 1, out);
        } else if meta.is_file() {
            out.files = out.files.saturating_add(1);
            out.bytes = out.bytes.saturating_add(meta.len());
            let allocated = meta.blocks().saturating_mul(512);
            out.stored = out.stored.saturating_add(meta.len().min(allocated));
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

impl fmt::Display for Unpacked {
    /// The one line PID 1 logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unpacked::Complete(r) => write!(
                f,
                "initramfs complete: {} entries, {:.1} MiB ({} baked image files, {:.1} MiB)",
                r.entries,
                r.bytes as f64 / MIB,
                r.baked_files,
                r.baked_bytes as f64 / MIB
            ),
            Unpacked::NoRecord => write!(
                f,
                "the initramfs is incomplete (the kernel could not unpack all of it: /{RECORD_PATH} is missing): give the machine more memory (berth boot --memory); `berth build` prints how much this image needs"
            ),
            Unpacked::Incomplete { record, found } => write!(
                f,
                "the initramfs is incomplete (the kernel could not unpack all of it: {} of {} baked image files, {:.1} of {:.1} MiB): give the machine more memory; this image needs about {} MiB (berth boot --memory {})",
                found.files,
                record.baked_files,
                found.stored as f64 / MIB,
                record.baked_bytes as f64 / MIB,
                record.memory_mib,
                record.memory_mib
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(baked_files: u64, baked_bytes: u64) -> Record {
        Record {
            entries: 40,
            bytes: 2_000_000,
            baked_files,
            baked_bytes,
            memory_mib: 300,
        }
    }

    /// An unpacked initramfs with two baked files of 3 and 5 bytes.
    fn root(with_end: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let baked = dir.path().join("usr/share/berth/images/0/blobs/sha256");
        std::fs::create_dir_all(&baked).unwrap();
        std::fs::create_dir_all(dir.path().join("etc/berth")).unwrap();
        std::fs::write(baked.join("a"), b"abc").unwrap();
        std::fs::write(
            dir.path().join("usr/share/berth/images/0/index.json"),
            b"{}{}{",
        )
        .unwrap();
        std::fs::write(dir.path().join(RECORD_PATH), record(2, 8).to_json()).unwrap();
        if with_end {
            std::fs::write(dir.path().join(END_PATH), END_CONTENT).unwrap();
        }
        dir
    }

    #[test]
    fn a_whole_initramfs_is_complete() {
        let dir = root(true);
        assert_eq!(check(dir.path()), Unpacked::Complete(record(2, 8)));
    }

    #[test]
    fn a_missing_end_marker_is_incomplete_and_names_memory() {
        let dir = root(false);
        let outcome = check(dir.path());
        assert_eq!(
            outcome,
            Unpacked::Incomplete {
                record: record(2, 8),
                found: Tally {
                    files: 2,
                    bytes: 8,
                    stored: 8
                }
            }
        );
        let line = outcome.to_string();
        assert!(line.starts_with("the initramfs is incomplete"), "{line}");
        assert!(line.contains("more memory"), "{line}");
        assert!(line.contains("about 300 MiB"), "{line}");
    }

    #[test]
    fn a_short_or_missing_baked_file_is_incomplete() {
        let dir = root(true);
        let blob = dir.path().join("usr/share/berth/images/0/blobs/sha256/a");
        std::fs::write(&blob, b"ab").unwrap();
        assert!(matches!(
            check(dir.path()),
            Unpacked::Incomplete {
                found: Tally {
                    files: 2,
                    bytes: 7,
                    ..
                },
                ..
            }
        ));
        std::fs::remove_file(&blob).unwrap();
        let line = check(dir.path()).to_string();
        assert!(line.contains("1 of 2 baked image files"), "{line}");
    }

    /// What the kernel leaves when a write fails: the file at its full size (it sizes
    /// the file first), its data missing. The line counts what is stored.
    #[test]
    fn a_file_sized_but_not_written_counts_as_missing_bytes() {
        let dir = root(false);
        let blob = dir.path().join("usr/share/berth/images/0/blobs/sha256/big");
        std::fs::File::create(&blob)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let line = check(dir.path()).to_string();
        assert!(
            line.contains("3 of 2 baked image files, 0.0 of 0.0 MiB"),
            "{line}"
        );
    }

    #[test]
    fn a_missing_or_garbled_record_is_incomplete() {
        let dir = root(true);
        std::fs::write(dir.path().join(RECORD_PATH), b"{\"entries\": 4").unwrap();
        assert_eq!(check(dir.path()), Unpacked::NoRecord);
        std::fs::remove_file(dir.path().join(RECORD_PATH)).unwrap();
        assert_eq!(check(dir.path()), Unpacked::NoRecord);
        assert!(Unpacked::NoRecord.to_string().contains("more memory"));
    }

    #[test]
    fn the_record_round_trips() {
        let r = record(7, 1 << 30);
        assert_eq!(serde_json::from_slice::<Record>(&r.to_json()).unwrap(), r);
    }
}
