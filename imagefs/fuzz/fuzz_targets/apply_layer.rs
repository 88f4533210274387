//! Layer application on arbitrary bytes (plain, or gzip/zstd by magic):
//! never panics, stays within small budgets, and never writes outside the
//! layer root: a sentinel beside the root must be unchanged.
#![no_main]

use std::fs;
use std::os::fd::{AsFd, OwnedFd};

use berth_imagefs::layer::{apply_layer, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("sentinel"), b"x").unwrap();
    let fd = OwnedFd::from(fs::File::open(&root).unwrap());
    let limits = Limits {
        max_bytes: 8 << 20,
        max_entries: 1000,
    };
    let _ = apply_layer(data, fd.as_fd(), &limits, &mut |_| {});
    let names: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "something appeared beside the layer root: {names:?}"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    assert_eq!(fs::read(outside.join("sentinel")).unwrap(), b"x");
});
