//! The initramfs: what berth puts in it, and how it is packed.
//!
//! ```text
//! /                                   (the kernel's rootfs; entries sorted by path)
//! ├── init                            berth-init, 0755: the kernel execs it as PID 1
//! ├── dev/          0755
//! │   ├── console   c 5:1 0600        PID 1's stdio, opened before devtmpfs is mounted
//! │   └── null      c 1:3 0666
//! ├── etc/berth/host.toml   0644      the config, byte for byte
//! ├── etc/berth/initramfs.json        what was packed and the memory it needs, and
//! ├── etc/berth/initramfs.end         the archive's LAST entry: PID 1 checks both
//! │                                   (`berth_init::unpack_check`)
//! ├── lib/modules/<release>/
//! │   ├── kernel/…/*.ko   0644        the selected modules and their dependencies
//! │   ├── modules.dep                 depmod format, see [`crate::modules`]
//! │   ├── modules.alias
//! │   └── modules.builtin             copied from the kernel package
//! ├── proc/ sys/ run/ root/ var/      0755, empty: mount points and state
//! ├── tmp/          1777
//! └── usr/
//!     ├── lib/berth/berth-helper  0755   netd and the image importer, which PID 1 starts
//!     └── share/berth/images/           the `[[image]]`s baked in (see `build`)
//! ```
//!
//! Every directory is 0755 unless listed, and parent directories precede their children
//! (path order guarantees it: a parent is a prefix of its child), except
//! `initramfs.end`, written after everything else. The cpio archive
//! ([`crate::cpio`]) is compressed with zstd at [`ZSTD_LEVEL`], single-threaded, with the
//! content size and a checksum in the frame header: the kernel's `CONFIG_RD_ZSTD`
//! decompressor reads standard zstd frames (`lib/decompress_unzstd.c`).

use std::collections::BTreeMap;

use berth_init::helper::helper_path_in_root;

use crate::cpio::{CpioWriter, EntryKind};
use crate::modules::Module;

/// The zstd level. Measured on the cpio of a real image (berth-init 1.6 MB, the default
/// modules and `dummy`: 33 modules, 5,265,920 bytes uncompressed), with the zstd 1.5.4 CLI,
/// single-threaded, on this project's 2-core build machine:
///
/// | level | size        | compress | decompress |
/// |-------|-------------|----------|------------|
/// | 3     | 1,693,595 B | 0.02 s   | < 0.01 s   |
/// | 9     | 1,535,606 B | 0.11 s   | 0.01 s     |
/// | 19    | 1,372,147 B | 1.98 s   | 0.01 s     |
///
/// (the `zstd` crate's bundled libzstd gives 1,362,385 B at 19). Level 19 is 19% smaller
/// than level 3; decompression speed does not depend on the level, so the guest boots as
/// fast, and the image is smaller to store and ship. The cost is ~2 s of build time,
/// paid once per build. Levels 20-22 ("ultra") would raise the window above 8 MiB, which
/// the kernel's decompressor must allocate at boot, for little gain. The kernel accepts
/// these frames: `berth boot` of a level-19 image unpacks it and runs `/init`.
///
/// Inside the guest (QEMU TCG, the kernel's "Trying to unpack rootfs" to "Freeing initrd
/// memory", two boots each): uncompressed 57–74 ms (5.0 MiB), lz4 -9 67–109 ms (1.9 MiB),
/// zstd -3 137–157 ms, zstd -19 122–136 ms (1.3 MiB). An uncompressed archive unpacks about
/// 60 ms faster under emulation, but the unpack overlaps the kernel's other init work and the
/// time PID 1 starts varied by ±250 ms between boots, more than the difference; zstd-19
/// keeps the image a quarter of the size. Re-measure with `make bench` when the image grows.
pub const ZSTD_LEVEL: i32 = 19;

/// The empty directories of the layout and their modes.
pub const EMPTY_DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o755),
    ("sys", 0o755),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("etc", 0o755),
    ("etc/berth", 0o755),
    ("lib", 0o755),
    ("lib/modules", 0o755),
    ("root", 0o755),
    ("var", 0o755),
];

/// Why the initramfs could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("invalid initramfs path {path:?}: use a relative path without empty, . or .. parts")]
    InvalidPath { path: String },
    #[error("initramfs path {path} is added twice")]
    Duplicate { path: String },
    #[error("initramfs path {path} needs {parent} to be a directory, but it is not")]
    NotADirectory { path: String, parent: String },
    #[error("cannot write the cpio archive: {source}")]
    Cpio { source: std::io::Error },
    #[error("cannot zstd-compress the initramfs at level {level}: {source}")]
    Compress { level: i32, source: std::io::Error },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { perm: u32 },
    File { perm: u32, data: Vec<u8> },
    CharDevice { perm: u32, major: u32, minor: u32 },
}

/// An initramfs tree being assembled in memory, kept sorted by path, and the one file
/// written after all of them (see [`Initramfs::last_file`]).
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Node>,
    last: Option<(String, Vec<u8>)>,
}

fn check_path(path: &str) -> Result<(), InitramfsError> {
    let valid = !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if valid {
        Ok(())
    } else {
        Err(InitramfsError::InvalidPath {
            path: path.to_owned(),
        })
    }
}

impl Initramfs {
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    /// Creates the missing parents of `path` as 0755 directories.
    fn parents(&mut self, path: &str) -> Result<(), InitramfsError> {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            let parent = &path[..end + slash];
            match self.entries.get(parent) {
                None => {
                    self.entries
                        .insert(parent.to_owned(), Node::Dir { perm: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => {
                    return Err(InitramfsError::NotADirectory {
                        path: path.to_owned(),
                        parent: parent.to_owned(),
                    })
                }
            }
            end += slash + 1;
        }
        Ok(())
    }

    fn insert(&mut self, path: &str, node: Node) -> Result<(), InitramfsError> {
        check_path(path)?;
        self.parents(path)?;
        match (self.entries.get(path), &node) {
            (None, _) => {}
            // Naming a directory that exists (perhaps as someone's parent) sets its mode.
            (Some(Node::Dir { .. }), Node::Dir { .. }) => {}
            (Some(_), _) => {
                return Err(InitramfsError::Duplicate {
                    path: path.to_owned(),
                })
            }
        }
        self.entries.insert(path.to_owned(), node);
        Ok(())
    }

    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), InitramfsError> {
        self.insert(path, Node::Dir { perm })
    }

    pub fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> Result<(), InitramfsError> {
        self.insert(path, Node::File { perm, data })
    }

    pub fn char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), InitramfsError> {
        self.insert(path, Node::CharDevice { perm, major, minor })
    }

    /// Sets the archive's last entry, a 0644 file written after every other entry
    /// whatever its name: the kernel unpacks in order and stops at the first write
    /// error, so the file exists in the guest only if all of the archive was unpacked.
    /// Its parent must be a directory of the tree.
    pub fn last_file(&mut self, path: &str, data: Vec<u8>) -> Result<(), InitramfsError> {
        check_path(path)?;
        if self.entries.contains_key(path) || self.last.is_some() {
            return Err(InitramfsError::Duplicate {
                path: path.to_owned(),
            });
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !matches!(self.entries.get(parent), Some(Node::Dir { .. })) {
                return Err(InitramfsError::NotADirectory {
                    path: path.to_owned(),
                    parent: parent.to_owned(),
                });
            }
        }
        self.last = Some((path.to_owned(), data));
        Ok(())
    }

    /// The paths, in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries
            .keys()
            .map(String::as_str)
            .chain(self.last.iter().map(|(p, _)| p.as_str()))
    }

    /// The regular files under `prefix/` (all of them for `""`), their sizes, in order.
    pub fn file_sizes<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = u64> + 'a {
        self.entries
            .iter()
            .filter(move |(path, _)| {
                prefix.is_empty()
                    || path
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .filter_map(|(_, node)| match node {
                Node::File { data, .. } => Some(data.len() as u64),
                _ => None,
            })
            .chain(
                self.last
                    .iter()
                    .filter(move |(path, _)| prefix.is_empty() || path.starts_with(prefix))
                    .map(|(_, data)| data.len() as u64),
            )
    }

    /// How many entries the archive holds (the trailer aside).
    pub fn len(&self) -> usize {
        self.entries.len() + usize::from(self.last.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The uncompressed newc archive.
    pub fn to_cpio(&self) -> Result<Vec<u8>, InitramfsError> {
        let mut w = CpioWriter::new(Vec::new());
        for (path, node) in &self.entries {
            let (perm, kind) = match node {
                Node::Dir { perm } => (*perm, EntryKind::Dir),
                Node::File { perm, data } => (*perm, EntryKind::File(data)),
                Node::CharDevice { perm, major, minor } => (
                    *perm,
                    EntryKind::CharDevice {
                        major: *major,
                        minor: *minor,
                    },
                ),
            };
            w.entry(path, perm, &kind)
                .map_err(|source| InitramfsError::Cpio { source })?;
        }
        if let Some((path, data)) = &self.last {
            w.entry(path, 0o644, &EntryKind::File(data))
                .map_err(|source| InitramfsError::Cpio { source })?;
        }
        w.finish().map_err(|source| InitramfsError::Cpio { source })
    }
}

/// The generated module index files.
#[derive(Debug, Clone)]
pub struct ModuleIndexFiles {
    pub dep: String,
    pub alias: String,
    pub builtin: Vec<u8>,
}

/// Assembles berth's layout (see the module doc).
pub fn berth_layout(
    init: Vec<u8>,
    helper: Vec<u8>,
    config: Vec<u8>,
    release: &str,
    modules: &BTreeMap<String, Module>,
    index: &ModuleIndexFiles,
) -> Result<Initramfs, InitramfsError> {
    let mut fs = Initramfs::new();
    for (dir, perm) in EMPTY_DIRS {
        fs.dir(dir, *perm)?;
    }
    fs.char_device("dev/console", 0o600, 5, 1)?;
    fs.char_device("dev/null", 0o666, 1, 3)?;
    fs.file("init", 0o755, init)?;
    fs.file(helper_path_in_root(), 0o755, helper)?;
    fs.file("etc/berth/host.toml", 0o644, config)?;
    let moddir = format!("lib/modules/{release}");
    fs.dir(&moddir, 0o755)?;
    for module in modules.values() {
        fs.file(
            &format!("{moddir}/{}", module.path),
            0o644,
            module.bytes.clone(),
        )?;
    }
    fs.file(
        &format!("{moddir}/modules.dep"),
        0o644,
        index.dep.clone().into_bytes(),
    )?;
    fs.file(
        &format!("{moddir}/modules.alias"),
        0o644,
        index.alias.clone().into_bytes(),
    )?;
    fs.file(
        &format!("{moddir}/modules.builtin"),
        0o644,
        index.builtin.clone(),
    )?;
    Ok(fs)
}

/// Compresses `data` into one zstd frame at `level`: single-threaded (so the output does
/// not depend on the machine), with the content size and a checksum.
pub fn compress(data: &[u8], level: i32) -> Result<Vec<u8>, InitramfsError> {
    let err = |source| InitramfsError::Compress { level, source };
    let mut c = zstd::bulk::Compressor::new(level).map_err(err)?;
    c.include_contentsize(true).map_err(err)?;
    c.include_checksum(true).map_err(err)?;
    c.compress(data).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_paths_are_checked() {
        let mut fs = Initramfs::new();
        fs.file("lib/modules/6.1/kernel/net/dummy.ko", 0o644, vec![1])
            .unwrap();
        fs.dir("etc", 0o700).unwrap();
        fs.dir("etc-old", 0o755).unwrap();
        fs.file("etc/x", 0o644, vec![]).unwrap();
        let paths: Vec<_> = fs.paths().collect();
        assert_eq!(
            paths,
            [
                "etc",
                "etc-old",
                "etc/x",
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel",
                "lib/modules/6.1/kernel/net",
                "lib/modules/6.1/kernel/net/dummy.ko"
            ]
        );
        for bad in ["", "/init", "a//b", "a/../b", "./a", "a/"] {
            assert!(
                matches!(
                    fs.file(bad, 0o644, vec![]),
                    Err(InitramfsError::InvalidPath { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            fs.file("etc/x", 0o644, vec![]),
            Err(InitramfsError::Duplicate { .. })
        ));
        assert!(matches!(
            fs.file("etc/x/y", 0o644, vec![]),
            Err(InitramfsError::NotADirectory { .. })
        ));
    }

    #[test]
    fn the_last_file_comes_after_every_other_entry() {
        let mut fs = Initramfs::new();
        fs.dir("etc/berth", 0o755).unwrap();
        fs.file("usr/share/big", 0o644, vec![7; 10]).unwrap();
        fs.last_file("etc/berth/end", b"end".to_vec()).unwrap();
        let paths: Vec<_> = fs.paths().collect();
        assert_eq!(paths.last(), Some(&"etc/berth/end"));
        // In the archive too: its header follows the big file's data.
        let cpio = fs.to_cpio().unwrap();
        let find = |needle: &[u8]| cpio.windows(needle.len()).position(|w| w == needle);
        assert!(find(b"etc/berth/end\0").unwrap() > find(b"usr/share/big\0").unwrap());
        assert_eq!(fs.len(), 6);
        assert_eq!(fs.file_sizes("").sum::<u64>(), 13);
        assert_eq!(fs.file_sizes("usr/share").collect::<Vec<_>>(), [10]);
        assert_eq!(fs.file_sizes("usr/sha").count(), 0);
        // One last file, under an existing directory.
        assert!(fs.last_file("etc/berth/again", vec![]).is_err());
        let mut other = Initramfs::new();
        assert!(matches!(
            other.last_file("nowhere/end", vec![]),
            Err(InitramfsError::NotADirectory { .. })
        ));
    }

    #[test]
    fn layout_has_devices_and_dirs() {
        let index = ModuleIndexFiles {
            dep: String::new(),
            alias: String::new(),
            builtin: Vec::new(),
        };
        let fs = berth_layout(
            b"ELF".to_vec(),
            b"ELF helper".to_vec(),
            b"version = 1\n".to_vec(),
            "6.1.0-t",
            &BTreeMap::new(),
            &index,
        )
        .unwrap();
        let paths: Vec<_> = fs.paths().collect();
        for want in [
            "dev/console",
            "dev/null",
            "init",
            "usr/lib/berth/berth-helper",
            "etc/berth/host.toml",
            "lib/modules/6.1.0-t/modules.dep",
            "tmp",
            "var",
            "root",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        assert_eq!(fs.entries["tmp"], Node::Dir { perm: 0o1777 });
        assert_eq!(
            fs.entries["dev/console"],
            Node::CharDevice {
                perm: 0o600,
                major: 5,
                minor: 1
            }
        );
    }

    #[test]
    fn compression_round_trips_with_content_size() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let packed = compress(&data, 3).unwrap();
        assert_eq!(packed, compress(&data, 3).unwrap());
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&packed).ok(),
            Some(Some(data.len() as u64))
        );
        assert_eq!(zstd::decode_all(packed.as_slice()).unwrap(), data);
    }
}
