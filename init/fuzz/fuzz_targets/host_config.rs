//! PID 1 parses /etc/berth/host.toml at every boot: no bytes may panic it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = berth_init::config::HostConfig::parse(text, std::path::Path::new("fuzz.toml"));
    }
});
