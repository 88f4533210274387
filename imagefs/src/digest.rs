//! Content digests.
//!
//! The store only ever speaks `sha256`. A [`Digest`] is parsed strictly —
//! the literal prefix `sha256:` followed by exactly 64 lowercase hex
//! characters — so that once a value has this type it is safe to build a
//! path component from it. Anything else (`sha256:../../x`, uppercase hex,
//! a wrong length, `sha512:`, an empty string) is rejected here, before any
//! path exists.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Why a string is not a digest we accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest \"{0}\" does not use the sha256 algorithm")]
    Algorithm(String),
    #[error("digest \"{0}\" is not 64 hex characters after sha256:")]
    Length(String),
    #[error("digest \"{0}\" has characters other than lowercase hex")]
    Charset(String),
}

/// A `sha256:<64 lowercase hex>` digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Parse strictly; see the module docs.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError::Algorithm(truncate(s)))?;
        Self::from_hex(hex).map_err(|e| match e {
            DigestError::Length(_) => DigestError::Length(truncate(s)),
            DigestError::Charset(_) => DigestError::Charset(truncate(s)),
            other => other,
        })
    }

    /// Parse the 64-character hex part alone (as found in blob file names).
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        let b = hex.as_bytes();
        if b.len() != 64 {
            return Err(DigestError::Length(truncate(hex)));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = nibble(pair[0]).ok_or_else(|| DigestError::Charset(truncate(hex)))?;
            let lo = nibble(pair[1]).ok_or_else(|| DigestError::Charset(truncate(hex)))?;
            out[i] = hi << 4 | lo;
        }
        Ok(Digest(out))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The 64 hex characters, without the algorithm.
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }

    /// The first 12 hex characters, for people.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Keep error messages bounded when the input is hostile.
/// A rejected digest as its error quotes it: escaped and bounded (it comes from an
/// image's documents).
fn truncate(s: &str) -> String {
    crate::text::printable(s, 80)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 with a byte count.
#[derive(Default, Clone)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, buf: &[u8]) {
        self.inner.update(buf);
        self.len += buf.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(self) -> Digest {
        Digest(self.inner.finalize().into())
    }
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }
    pub fn into_parts(self) -> (R, Hasher) {
        (self.inner, self.hasher)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }
    pub fn into_parts(self) -> (W, Hasher) {
        (self.inner, self.hasher)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_round_trips() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn rejects_everything_else() {
        let bad = [
            "",
            "sha256:",
            "sha256:../../x",
            "sha256:../../../../../../../../../../../../../../../../../../../../../../etc/x",
            &EMPTY.to_uppercase(),
            &EMPTY.replace("sha256:", "SHA256:"),
            &EMPTY.replace("sha256:", "sha512:"),
            &EMPTY.replace("sha256:", ""),
            &format!("{EMPTY}0"),
            &EMPTY[..EMPTY.len() - 1],
            &EMPTY.replace('e', "E"),
            &EMPTY.replacen('e', "/", 1),
            &EMPTY.replacen('e', "g", 1),
            &format!(" {EMPTY}"),
            &format!("{}\0", &EMPTY[..EMPTY.len() - 1]),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85é",
        ];
        for b in bad {
            assert!(Digest::parse(b).is_err(), "accepted {b:?}");
        }
    }

    #[test]
    fn a_rejected_digest_is_quoted_escaped_and_bounded() {
        let e = Digest::parse(&format!("sha256:\x1b]0;x\x07{}", "f".repeat(500))).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.starts_with("digest \"sha256:\\u{1b}]0;x\\u{7}fff"),
            "{shown}"
        );
        assert!(shown.len() < 200, "{shown}");
    }

    #[test]
    fn serde_is_strict() {
        let ok: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(ok.to_string(), EMPTY);
        assert!(serde_json::from_str::<Digest>("\"sha256:../x\"").is_err());
    }
}
