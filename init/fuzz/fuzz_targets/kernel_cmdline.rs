//! The kernel command line comes from the boot loader; its berth.* overrides must never
//! panic PID 1, and whatever they yield must satisfy the same rules as the config file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let o = berth_init::config::CmdlineOverrides::parse(&text);
    if let Some(h) = &o.hostname {
        assert!(berth_init::config::Hostname::parse(h.as_str()).is_ok());
    }
    for m in &o.modules {
        assert!(berth_init::config::ModuleName::parse(m.as_str()).is_ok());
    }
});
