//! `import` of an arbitrary file as an image archive: the outer tar's index, the
//! OCI or docker-archive documents in it, and the layers. It never panics, commits
//! nothing without a ref, and its error line holds no control character (nothing of
//! the file reaches a terminal raw).
#![no_main]

use berth_imagefs::import::{import, ImportOptions};
use berth_imagefs::{error_chain, Limits, Reference, Store};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("image.tar");
    std::fs::write(&archive, data).unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let opts = ImportOptions {
        name: Some(Reference::parse("fuzz:1").unwrap()),
        limits: Limits {
            max_bytes: 8 << 20,
            max_entries: 1000,
        },
        ..Default::default()
    };
    match import(&store, &archive, &opts, &mut |_| {}) {
        Ok(_) => assert_eq!(store.refs().unwrap().len(), 1),
        Err(e) => {
            let line = error_chain(&e);
            assert!(!line.chars().any(char::is_control), "{line:?}");
            assert!(store.refs().unwrap().is_empty());
        }
    }
});
