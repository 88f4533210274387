//! A writer for the "newc" cpio format (SVR4 without CRC), the one the kernel unpacks
//! into its initial rootfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the
//! NUL-terminated name padded to a multiple of 4 bytes, then the data padded likewise.
//! The archive ends with an entry named `TRAILER!!!`. This writer is deterministic by
//! construction: it takes no timestamps or owners from anywhere (mtime 0, uid/gid 0),
//! numbers inodes sequentially from 1, and pads the archive to a multiple of 512 bytes.

use std::io::{self, Write};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind<'a> {
    Dir,
    File(&'a [u8]),
    CharDevice { major: u32, minor: u32 },
}

/// Streams newc entries to `out`.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> CpioWriter<W> {
        CpioWriter {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// Writes one entry. `name` is relative (`etc/berth/host.toml`), `perm` the permission
    /// bits (`0o755`); the type bits come from `kind`.
    pub fn entry(&mut self, name: &str, perm: u32, kind: &EntryKind<'_>) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let (type_bits, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match kind {
            EntryKind::Dir => (S_IFDIR, 2, &[], (0, 0)),
            EntryKind::File(data) => (S_IFREG, 1, data, (0, 0)),
            EntryKind::CharDevice { major, minor } => (S_IFCHR, 1, &[], (*major, *minor)),
        };
        self.write_entry(name, ino, type_bits | (perm & 0o7777), nlink, data, rdev)
    }

    fn write_entry(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        data: &[u8],
        (rdev_major, rdev_minor): (u32, u32),
    ) -> io::Result<()> {
        let too_big = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: too large for cpio"),
            )
        };
        let filesize = u32::try_from(data.len()).map_err(|_| too_big())?;
        let namesize = u32::try_from(name.len() + 1).map_err(|_| too_big())?;
        if name.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?}: NUL in cpio entry name"),
            ));
        }
        // The thirteen header fields, in order (`check` is 0: newc, not crc).
        #[rustfmt::skip]
        let fields = [
            ino,
            mode,
            0,          // uid
            0,          // gid
            nlink,
            0,          // mtime
            filesize,
            0,          // devmajor
            0,          // devminor
            rdev_major,
            rdev_minor,
            namesize,
            0,          // check
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad(4)?;
        self.write(data)?;
        self.pad(4)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, to: u64) -> io::Result<()> {
        let rem = self.written % to;
        if rem != 0 {
            let zeros = [0u8; 512];
            let n = (to - rem) as usize;
            self.write(&zeros[..n])?;
        }
        Ok(())
    }

    /// Writes the trailer, pads to 512 bytes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_entry("TRAILER!!!", 0, 0, 1, &[], (0, 0))?;
        self.pad(512)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// One parsed header: (name, fields), data.
    fn parse(archive: &[u8]) -> Vec<(String, [u32; 13], Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let header = &archive[at..at + 110];
            assert_eq!(&header[..6], b"070701");
            let mut fields = [0u32; 13];
            for (i, f) in fields.iter_mut().enumerate() {
                let hex = std::str::from_utf8(&header[6 + i * 8..14 + i * 8]).unwrap();
                *f = u32::from_str_radix(hex, 16).unwrap();
            }
            let namesize = fields[11] as usize;
            let name_start = at + 110;
            let name = std::str::from_utf8(&archive[name_start..name_start + namesize - 1])
                .unwrap()
                .to_owned();
            assert_eq!(archive[name_start + namesize - 1], 0);
            let data_start = (name_start + namesize).next_multiple_of(4);
            let size = fields[6] as usize;
            let data = archive[data_start..data_start + size].to_vec();
            at = (data_start + size).next_multiple_of(4);
            let done = name == "TRAILER!!!";
            out.push((name, fields, data));
            if done {
                return out;
            }
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.entry("dev", 0o755, &EntryKind::Dir).unwrap();
        w.entry(
            "dev/console",
            0o600,
            &EntryKind::CharDevice { major: 5, minor: 1 },
        )
        .unwrap();
        w.entry("init", 0o755, &EntryKind::File(b"#!/bin/sh\necho hi\n"))
            .unwrap();
        w.entry("tmp", 0o1777, &EntryKind::Dir).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn header_fields_round_trip() {
        let archive = sample();
        assert_eq!(archive.len() % 512, 0);
        let entries = parse(&archive);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "tmp", "TRAILER!!!"]);
        // ino, mode, uid, gid, nlink, mtime, filesize, devmaj, devmin, rdevmaj, rdevmin
        let (_, dev, _) = &entries[0];
        assert_eq!(&dev[..7], &[1, 0o040755, 0, 0, 2, 0, 0]);
        let (_, console, _) = &entries[1];
        assert_eq!(console[1], 0o020600);
        assert_eq!((console[9], console[10]), (5, 1));
        let (_, init, data) = &entries[2];
        assert_eq!(init[0], 3);
        assert_eq!(init[1], 0o100755);
        assert_eq!(init[4], 1);
        assert_eq!(data, b"#!/bin/sh\necho hi\n");
        assert_eq!(entries[3].1[1], 0o041777);
        let trailer = &entries[4].1;
        assert_eq!((trailer[0], trailer[1], trailer[4]), (0, 0, 1));
    }

    fn cpio(args: &[&str], input: &[u8], dir: Option<&std::path::Path>) -> String {
        let mut cmd = Command::new("cpio");
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .expect("cpio is installed (apt-get install cpio)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn gnu_cpio_reads_it_back() {
        let archive = sample();
        let listing = cpio(&["-t", "--quiet", "-H", "newc"], &archive, None);
        assert_eq!(listing, "dev\ndev/console\ninit\ntmp\n");
        let verbose = cpio(&["-tv", "--quiet", "-H", "newc"], &archive, None);
        assert!(verbose.contains("crw-------"), "{verbose}");
        assert!(verbose.contains("5,   1"), "{verbose}");
        assert!(verbose.contains("drwxrwxrwt"), "{verbose}");
        assert!(verbose.contains("-rwxr-xr-x"), "{verbose}");

        // Extract the regular files (not the device node) and compare contents.
        let dir = tempfile::tempdir().unwrap();
        cpio(
            &["-i", "--quiet", "-H", "newc", "--make-directories", "init"],
            &archive,
            Some(dir.path()),
        );
        assert_eq!(
            std::fs::read(dir.path().join("init")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
    }

    #[test]
    fn same_entries_same_bytes() {
        assert_eq!(sample(), sample());
    }
}
