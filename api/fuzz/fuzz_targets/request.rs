//! What a client controls before any handler runs: the method and path (routing, version
//! prefixes, percent-decoding) and the query string (booleans, numbers, filters in both
//! shapes). Never panics; a routed parameter is never empty and holds no NUL.
#![no_main]

use berth_api::query::Query;
use berth_api::route::{route, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (head, query) = text.split_once('?').unwrap_or((&text, ""));
    let (method, path) = head.split_once(' ').unwrap_or(("GET", head));
    if let Ok((_, r)) = route(method, path) {
        if let Route::ContainerInspect(p) | Route::ImageInspect(p) | Route::ImageRemove(p) = r {
            assert!(!p.is_empty() && !p.contains('\0'));
        }
    }
    let q = Query::parse(Some(query));
    let _ = q.bool("all");
    let _ = q.int("limit");
    let _ = q.filters(&["label", "status", "name"]);
});
