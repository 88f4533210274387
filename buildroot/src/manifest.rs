//! `manifest.json`: what went into a build and what came out, by name, size and SHA-256.
//!
//! ```json
//! {
//!   "berth_version": "0.1.0",
//!   "kernel_release": "6.1.0-50-cloud-amd64",
//!   "memory_mib": 144,
//!   "inputs": [{"name": "host.toml", "size": 12, "sha256": "…"}, …],
//!   "outputs": [{"name": "vmlinuz", "size": …, "sha256": "…"}, …]
//! }
//! ```
//!
//! Names carry no absolute paths and the file carries no timestamps, so the manifest is
//! byte-identical whenever the inputs are. Inputs are listed as: the config (its file
//! name), the init binary (`init`), the kernel package (its Debian file name), then every
//! module included, by its path in the image (`lib/modules/<release>/kernel/…`), sorted.
//! `memory_mib` is the memory the image needs to unpack and run its baked images, computed
//! by [`crate::memory`]; `berth boot` gives the machine at least that by default.

use serde::Serialize;

use crate::hash::sha256_hex;

/// One file, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl FileRecord {
    /// Records `bytes` under `name`.
    pub fn of(name: impl Into<String>, bytes: &[u8]) -> FileRecord {
        FileRecord {
            name: name.into(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub berth_version: String,
    pub kernel_release: String,
    /// The memory the image needs to unpack and run its baked images, in MiB (see
    /// [`crate::memory`]); `berth boot` gives at least this by default.
    pub memory_mib: u64,
    pub inputs: Vec<FileRecord>,
    pub outputs: Vec<FileRecord>,
}

impl Manifest {
    /// Pretty JSON with a final newline. Serialising these plain structs cannot fail.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_stable() {
        let m = Manifest {
            berth_version: "0.1.0".into(),
            kernel_release: "6.1.0-t".into(),
            memory_mib: 144,
            inputs: vec![FileRecord::of("host.toml", b"")],
            outputs: vec![FileRecord::of("vmlinuz", b"abc")],
        };
        let text = String::from_utf8(m.to_json()).unwrap();
        assert_eq!(
            text,
            r#"{
  "berth_version": "0.1.0",
  "kernel_release": "6.1.0-t",
  "memory_mib": 144,
  "inputs": [
    {
      "name": "host.toml",
      "size": 0,
      "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    }
  ],
  "outputs": [
    {
      "name": "vmlinuz",
      "size": 3,
      "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    }
  ]
}
"#
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["outputs"][0]["size"], 3);
        assert_eq!(back["memory_mib"], 144);
    }
}
