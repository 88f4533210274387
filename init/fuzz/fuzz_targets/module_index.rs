//! The module index files and device modaliases reach PID 1 from the image and the kernel;
//! parsing them and matching aliases (fnmatch) must neither panic nor run away.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{1}');
    let (dep, alias, builtin, modalias) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let index = berth_init::modindex::ModuleIndex::parse(dep, alias, builtin);
    for name in index.modules_for_alias(modalias) {
        let _ = index.load_order(name);
    }
    let _ = berth_init::modindex::fnmatch(alias.as_bytes(), modalias.as_bytes());
});
