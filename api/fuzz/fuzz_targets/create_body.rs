//! `POST /containers/create` bodies: translation never panics, and whatever it accepts
//! names an image and only mount targets that are absolute paths.
#![no_main]

use berth_api::create::{translate, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = translate(data, Policy::default()) {
        assert!(!spec.image.is_empty());
        assert!(spec.mounts.iter().all(|m| m.target.starts_with('/')));
    }
});
