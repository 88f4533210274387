//! Guest memory: the `--memory` value, the default taken from the build, and the limits.
//!
//! `--memory` takes MiB (`512`) or a size with a binary suffix (`512M`, `512MiB`, `1G`,
//! `1GiB`, case-insensitive). Values below [`MIN_MIB`] cannot boot a berth image (the
//! kernel and the unpacked initramfs alone need more) and are refused, as are values above
//! [`MAX_MIB`] or above this machine's memory: QEMU would start and the guest would be
//! killed or swap to a halt later, far from the cause.

use std::path::Path;
use std::str::FromStr;

/// The default guest memory, MiB, when the build needs no more.
pub const DEFAULT_MIB: u64 = 256;

/// The least memory `berth boot` accepts, MiB.
pub const MIN_MIB: u64 = 64;

/// The most memory `berth boot` accepts, MiB (1 TiB), whatever the machine.
pub const MAX_MIB: u64 = 1 << 20;

/// A `--memory` value in MiB, within [`MIN_MIB`]..=[`MAX_MIB`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMib(pub u64);

/// Why a `--memory` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("not a size: give MiB (512) or a size with M or G (512M, 1G)")]
    NotASize,
    #[error("a berth guest needs at least {MIN_MIB} MiB")]
    TooSmall,
    #[error("more than the {MAX_MIB} MiB berth boot accepts")]
    TooLarge,
}

impl FromStr for MemoryMib {
    type Err = MemoryError;

    fn from_str(s: &str) -> Result<MemoryMib, MemoryError> {
        let text = s.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        if number.is_empty() {
            return Err(MemoryError::NotASize);
        }
        let shift = match unit.to_ascii_lowercase().as_str() {
            "" | "m" | "mb" | "mib" => 0,
            "g" | "gb" | "gib" => 10,
            _ => return Err(MemoryError::NotASize),
        };
        // Too many digits for u64 is "too large", not "not a size".
        let mib = number
            .parse::<u64>()
            .map_err(|_| MemoryError::TooLarge)?
            .checked_mul(1 << shift)
            .ok_or(MemoryError::TooLarge)?;
        if mib < MIN_MIB {
            return Err(MemoryError::TooSmall);
        }
        if mib > MAX_MIB {
            return Err(MemoryError::TooLarge);
        }
        Ok(MemoryMib(mib))
    }
}

/// What the guest gets: `asked` if given, else the larger of [`DEFAULT_MIB`] and what the
/// build needs. An explicit value below the need is kept (the user may know better) and
/// returned as the second value for a warning.
pub fn choose(asked: Option<MemoryMib>, needed: Option<u64>) -> (u64, Option<u64>) {
    let needed = needed.filter(|&n| n > 0);
    match asked {
        Some(MemoryMib(mib)) => (mib, needed.filter(|&n| mib < n)),
        None => (DEFAULT_MIB.max(needed.unwrap_or(0)), None),
    }
}

/// This machine's memory in MiB (`MemTotal` in `/proc/meminfo`), if it can be read.
pub fn host_mib() -> Option<u64> {
    host_mib_from(&std::fs::read_to_string(Path::new("/proc/meminfo")).ok()?)
}

fn host_mib_from(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_mib() {
        for (text, mib) in [
            ("512", 512),
            ("64", 64),
            ("512M", 512),
            ("512m", 512),
            ("512MiB", 512),
            ("1G", 1024),
            ("2gib", 2048),
            (" 300 ", 300),
        ] {
            assert_eq!(text.parse::<MemoryMib>(), Ok(MemoryMib(mib)), "{text}");
        }
    }

    #[test]
    fn nonsense_is_refused_with_the_reason() {
        for text in ["0", "63", "0G", "1K"] {
            let err = text.parse::<MemoryMib>().unwrap_err();
            assert!(
                matches!(err, MemoryError::TooSmall | MemoryError::NotASize),
                "{text}: {err}"
            );
        }
        assert!("0"
            .parse::<MemoryMib>()
            .unwrap_err()
            .to_string()
            .contains("at least 64 MiB"));
        for text in ["", "M", "-1", "1.5G", "lots", "512 M B", "0x100", "1T"] {
            assert!(
                matches!(text.parse::<MemoryMib>(), Err(MemoryError::NotASize)),
                "{text}"
            );
        }
        for text in [
            "1048577",
            "2048G",
            "99999999999999999999",
            "18014398509481984G",
        ] {
            assert!(
                matches!(text.parse::<MemoryMib>(), Err(MemoryError::TooLarge)),
                "{text}"
            );
        }
    }

    #[test]
    fn default_follows_the_build_and_an_explicit_value_below_it_warns() {
        // No memory_mib in the manifest: the plain default.
        assert_eq!(choose(None, None), (256, None));
        assert_eq!(choose(None, Some(0)), (256, None));
        // A small image still gets the default, a large one what it needs.
        assert_eq!(choose(None, Some(100)), (256, None));
        assert_eq!(choose(None, Some(1024)), (1024, None));
        // Explicit values win; below the need they are kept with the need to warn about.
        assert_eq!(choose(Some(MemoryMib(512)), Some(1024)), (512, Some(1024)));
        assert_eq!(choose(Some(MemoryMib(2048)), Some(1024)), (2048, None));
        assert_eq!(choose(Some(MemoryMib(128)), None), (128, None));
    }

    #[test]
    fn host_memory_from_meminfo() {
        let meminfo = "MemTotal:        8029184 kB\nMemFree:  1 kB\n";
        assert_eq!(host_mib_from(meminfo), Some(7841));
        assert_eq!(host_mib_from("MemFree: 1 kB\n"), None);
        assert!(host_mib().is_some_and(|m| m > 0));
    }
}
