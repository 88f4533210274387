//! Kill -9 during an import, at several points; after reopening, the
//! image is either absent or complete and verified, and staging is empty.
//!
//! The child is this test binary re-run on `kill_child_helper`, which
//! imports with an observer that announces a chosen event on stdout and
//! then sleeps until the parent SIGKILLs it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use berth_imagefs::import::{import, Event, ImportOptions};
use berth_imagefs::{verify, Reference, Store};
use common::{gzip, oci_layout, tar_of, E};

const PAUSED: &str = "BERTH-CHILD-PAUSED";

fn step_of(e: &Event) -> &'static str {
    match e {
        Event::Resolved { .. } => "resolved",
        Event::BlobProgress { .. } => "blob-progress",
        Event::BlobStored { .. } => "blob-stored",
        Event::LayerUnpacking { .. } => "layer-unpacking",
        Event::LayerProgress { .. } => "layer-progress",
        Event::LayerUnpacked { .. } => "layer-unpacked",
        Event::LayerPresent { .. } => "layer-present",
        Event::ImageStored { .. } => "image-stored",
        Event::RefWritten { .. } => "ref-written",
    }
}

/// Runs only as the child of `kill_during_import`.
#[test]
fn kill_child_helper() {
    let (Ok(store), Ok(image), Ok(at)) = (
        std::env::var("BERTH_KILL_STORE"),
        std::env::var("BERTH_KILL_IMAGE"),
        std::env::var("BERTH_KILL_AT"),
    ) else {
        return;
    };
    let store = Store::open(store).unwrap();
    let opts = ImportOptions {
        name: Some(Reference::parse("crash:test").unwrap()),
        ..Default::default()
    };
    let mut seen = 0;
    let skip: usize = std::env::var("BERTH_KILL_SKIP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    import(&store, Path::new(&image), &opts, &mut |e| {
        if step_of(e) == at {
            if seen == skip {
                println!("\n{PAUSED}");
                use std::io::Write;
                std::io::stdout().flush().unwrap();
                std::thread::sleep(std::time::Duration::from_secs(120));
            }
            seen += 1;
        }
    })
    .unwrap();
    println!("\nBERTH-CHILD-DONE");
}

fn big_layers() -> Vec<(Vec<u8>, Vec<u8>)> {
    // Uncompressed so the blob copy and the unpack both report progress
    // (every 8 and 4 MiB) before they finish.
    let mut entries = vec![E::dir("big/")];
    for i in 0..3 {
        let content: Vec<u8> = (0..4 << 20)
            .map(|j: u32| (j.wrapping_mul(2654435761) >> (i + 3)) as u8)
            .collect();
        entries.push(E::file(&format!("big/{i}"), &content));
    }
    let l1 = tar_of(&entries);
    let l2 = tar_of(&[E::file("small", b"s"), E::file("big/.wh.0", b"")]);
    vec![(l1.clone(), l1), (l2.clone(), gzip(&l2))]
}

#[test]
fn kill_during_import() {
    let t = tempfile::tempdir().unwrap();
    let img = oci_layout(&t.path().join("img"), &big_layers(), None);
    let exe = std::env::current_exe().unwrap();
    let points = [
        ("resolved", 0),
        ("blob-progress", 0),
        ("blob-stored", 0),
        ("layer-unpacking", 0),
        ("layer-progress", 0),
        ("layer-progress", 1),
        ("layer-unpacked", 0),
        ("blob-stored", 1),
        ("layer-unpacked", 1),
        ("image-stored", 0),
        ("ref-written", 0),
    ];
    for (n, (at, skip)) in points.iter().enumerate() {
        let store_dir = t.path().join(format!("store{n}"));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill_child_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BERTH_KILL_STORE", &store_dir)
            .env("BERTH_KILL_IMAGE", &img.dir)
            .env("BERTH_KILL_AT", at)
            .env("BERTH_KILL_SKIP", skip.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut paused = false;
        for line in out.lines() {
            let line = line.unwrap();
            if line == PAUSED {
                paused = true;
                break;
            }
            if line == "BERTH-CHILD-DONE" {
                let _ = child.kill();
                panic!("child finished without reaching {at}#{skip}");
            }
        }
        assert!(paused, "child never reached {at}#{skip}");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let store = Store::open(&store_dir).unwrap();
        assert_eq!(
            store.staging_entries().unwrap(),
            Vec::<String>::new(),
            "{at}#{skip}: staging left"
        );
        let refs = store.refs().unwrap();
        match refs.get("crash:test") {
            None => assert!(*at != "ref-written", "ref missing after it was written"),
            Some(d) => {
                assert_eq!(*d, img.manifest);
                let mut vr = verify::VerifyReport::default();
                verify::verify_image(&store, d, &mut vr).unwrap();
                assert!(vr.problems.is_empty(), "{at}#{skip}: {:?}", vr.problems);
            }
        }
        // Every committed layer is whole (verify re-applies and compares).
        for l in store.list_layers().unwrap() {
            assert!(store.open_layer(&l).is_ok());
        }
        // And a fresh import completes and verifies.
        let opts = ImportOptions {
            name: Some(Reference::parse("crash:test").unwrap()),
            ..Default::default()
        };
        import(&store, &img.dir, &opts, &mut |_| {}).unwrap();
        let mut vr = verify::VerifyReport::default();
        verify::verify_image(&store, &img.manifest, &mut vr).unwrap();
        assert!(
            vr.problems.is_empty(),
            "{at}#{skip} after re-import: {:?}",
            vr.problems
        );
        assert_eq!(vr.layers_checked, 2);
    }
}
