//! docker-archive manifest.json parsing and the digest/reference parsers.
#![no_main]

use berth_imagefs::{oci, Digest, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = oci::parse_docker_manifest(data) {
        assert!(entries.iter().all(|e| e.layers.len() <= oci::MAX_LAYERS));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = Digest::parse(s) {
            assert_eq!(d.to_string(), s);
        }
        if let Ok(r) = Reference::parse(s) {
            assert!(!r.name.contains(".."));
            assert_eq!(Reference::parse(&r.to_string()), Ok(r));
        }
    }
});
