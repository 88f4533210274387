//! Image config parsing: never panics; a parsed config's diff_ids match the
//! layer count it was checked against.
#![no_main]

use berth_imagefs::oci;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let layers = data.first().map_or(0, |b| *b as usize % 8);
    if let Ok(cfg) = oci::parse_config(data.get(1..).unwrap_or_default(), layers, "fuzz") {
        assert_eq!(cfg.rootfs.diff_ids.len(), layers);
        assert_eq!(cfg.rootfs.kind, "layers");
    }
});
