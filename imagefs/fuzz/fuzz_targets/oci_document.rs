//! Index/manifest parsing: never panics; whatever parses has only valid
//! digests and a bounded layer count.
#![no_main]

use berth_imagefs::oci::{self, Document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let as_refs = [
        None,
        Some(oci::MT_OCI_INDEX),
        Some(oci::MT_OCI_MANIFEST),
        Some(oci::MT_DOCKER_MANIFEST),
    ];
    let which = data.first().map_or(0, |b| *b as usize % as_refs.len());
    let body = data.get(1..).unwrap_or_default();
    if let Ok(doc) = oci::parse_document(body, as_refs[which], "fuzz") {
        match doc {
            Document::Manifest(m) => {
                assert!(m.layers.len() <= oci::MAX_LAYERS);
                for l in &m.layers {
                    assert!(oci::is_layer_type(&l.media_type));
                    assert_eq!(l.digest.to_string().len(), 71);
                }
            }
            Document::Index(i) => {
                for d in &i.manifests {
                    assert!(!d.digest.hex().contains('/'));
                }
            }
        }
    }
});
