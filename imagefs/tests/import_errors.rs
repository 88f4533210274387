//! What `import` says about what is not an image, or not a whole one: each message
//! names the file and what is wrong with it, and never prints bytes of the file.

mod common;

use std::fs;
use std::path::Path;

use berth_imagefs::import::{import, ImportError, ImportOptions};
use berth_imagefs::{error_chain, LayerError, Reference, Store};
use common::{gzip, oci_layout, tar_dir, tar_of, zstd, E};

fn try_import(store: &Store, path: &Path) -> ImportError {
    let opts = ImportOptions {
        name: Some(Reference::parse("x:1").unwrap()),
        ..Default::default()
    };
    let e = import(store, path, &opts, &mut |_| {}).expect_err("import must fail");
    assert!(store.refs().unwrap().is_empty(), "a ref was written");
    e
}

/// The line a user sees: it names the file, and nothing in it could reach a
/// terminal as a control sequence or quote the marker planted in the input.
fn line_of(e: &ImportError, path: &Path) -> String {
    let line = error_chain(e);
    assert!(
        line.contains(&path.display().to_string()),
        "does not name {}: {line}",
        path.display()
    );
    assert!(!line.chars().any(char::is_control), "{line:?}");
    assert!(!line.contains("EVIL"), "input bytes are quoted: {line}");
    line
}

fn layers() -> Vec<(Vec<u8>, Vec<u8>)> {
    let l1 = tar_of(&[E::dir("etc/"), E::file("etc/hostname", b"berth\n")]);
    let l2 = tar_of(&[E::file("usr/bin/tool", b"#!/bin/sh\n").mode(0o755)]);
    vec![(l1.clone(), gzip(&l1)), (l2.clone(), zstd(&l2))]
}

/// Bytes no tool wrote, with a terminal escape and a marker in them.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    out[..14].copy_from_slice(b"\x1b]0;EVIL\x07\x1b[2J\n");
    out
}

#[test]
fn a_file_that_is_no_tar_is_named_and_not_quoted() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    for (name, bytes) in [
        ("random.bin", noise(4096)),
        ("notes.txt", b"EVIL hello\n".repeat(100)),
        ("short", noise(100)),
        ("short.txt", b"EVIL says hello\n".repeat(20)),
    ] {
        let p = t.path().join(name);
        fs::write(&p, bytes).unwrap();
        let e = try_import(&store, &p);
        assert!(matches!(e, ImportError::NotTar { .. }), "{name}: {e:?}");
        let line = line_of(&e, &p);
        assert!(line.contains("is not a tar archive"), "{line}");
    }
}

#[test]
fn empty_and_compressed_files_say_what_they_are() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let img = oci_layout(&t.path().join("img"), &layers(), None);
    let plain = t.path().join("img.tar");
    tar_dir(&img.dir, &plain);
    let tar = fs::read(&plain).unwrap();

    let empty = t.path().join("empty.tar");
    fs::write(&empty, b"").unwrap();
    let e = try_import(&store, &empty);
    assert!(line_of(&e, &empty).contains("is empty (0 bytes)"), "{e}");

    for (name, bytes, format) in [
        ("img.tar.gz", gzip(&tar), "gzip"),
        ("img.tar.zst", zstd(&tar), "zstd"),
        // a compressed archive cut short is refused as compressed, before anything
        ("cut.tar.gz", gzip(&tar)[..100].to_vec(), "gzip"),
    ] {
        let p = t.path().join(name);
        fs::write(&p, bytes).unwrap();
        let e = try_import(&store, &p);
        let line = line_of(&e, &p);
        assert!(
            line.contains(&format!("is {format}-compressed, not a tar archive")),
            "{line}"
        );
    }
}

/// Where each member of a tar starts: (name, header offset, data offset, size).
fn members(tar: &[u8]) -> Vec<(String, u64, u64, u64)> {
    let mut ar = tar::Archive::new(tar);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let data = e.raw_file_position();
            (name, e.raw_header_position(), data, e.size())
        })
        .collect()
}

#[test]
fn an_archive_cut_short_says_truncated() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let img = oci_layout(&t.path().join("img"), &layers(), None);
    let whole = t.path().join("img.tar");
    tar_dir(&img.dir, &whole);
    let tar = fs::read(&whole).unwrap();
    let m = members(&tar);
    // the largest member, so that its data and its padding are both worth cutting
    let (name, header, data, size) = m.iter().max_by_key(|m| m.3).unwrap().clone();
    assert!(size % 512 != 0, "{name}: no padding to cut");
    let padding_end = (data + size).next_multiple_of(512);
    let cuts = [
        (120, "inside its first tar header"),
        (300, "inside its first tar header"),
        (header + 100, "inside the tar header after"),
        (data + size / 2, "inside the data of member"),
        (padding_end - 1, "inside the padding after member"),
    ];
    for (at, expected) in cuts {
        let p = t.path().join(format!("cut-{at}.tar"));
        fs::write(&p, &tar[..at as usize]).unwrap();
        let e = try_import(&store, &p);
        assert!(matches!(e, ImportError::Truncated { .. }), "{at}: {e:?}");
        let line = line_of(&e, &p);
        assert!(line.contains("is truncated: it ends"), "{line}");
        assert!(line.contains(expected), "{at}: {line}");
    }
}

#[test]
fn a_damaged_header_is_told_by_offset_not_quoted() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let img = oci_layout(&t.path().join("img"), &layers(), None);
    let whole = t.path().join("img.tar");
    tar_dir(&img.dir, &whole);
    let mut tar = fs::read(&whole).unwrap();
    let (_, header, ..) = members(&tar)[2].clone();
    // A header of escape sequences: the tar reader's own message would quote them.
    let garbage = b"\x1b[31mEVIL\x1b]0;x\x07".repeat(40);
    tar[header as usize..header as usize + 512].copy_from_slice(&garbage[..512]);
    let p = t.path().join("damaged.tar");
    fs::write(&p, &tar).unwrap();
    let e = try_import(&store, &p);
    assert!(matches!(e, ImportError::BadHeader { .. }), "{e:?}");
    let line = line_of(&e, &p);
    assert!(
        line.contains(&format!("the tar header at offset {header}")),
        "{line}"
    );
}

#[test]
fn a_layer_cut_short_inside_an_archive_says_truncated() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let layer = tar_of(&[E::file("big", &noise(20_000))]);
    for (name, blob) in [("gz", gzip(&layer)), ("zst", zstd(&layer))] {
        // docker-archive: the layer's digest is taken from the member as it is, so
        // the cut shows when it is unpacked.
        let d = t.path().join(format!("docker-{name}"));
        fs::create_dir_all(d.join("l1")).unwrap();
        fs::write(d.join("l1/layer.tar"), &blob[..blob.len() / 2]).unwrap();
        let config = common::config_json(&[berth_imagefs::Digest::of(&layer)], "amd64");
        fs::write(d.join("config.json"), &config).unwrap();
        let manifest = serde_json::json!([{"Config": "config.json", "Layers": ["l1/layer.tar"]}]);
        fs::write(d.join("manifest.json"), manifest.to_string()).unwrap();
        let p = t.path().join(format!("docker-{name}.tar"));
        tar_dir(&d, &p);
        let e = try_import(&store, &p);
        assert!(
            matches!(
                &e,
                ImportError::Layer {
                    source: LayerError::Truncated(_),
                    ..
                }
            ),
            "{name}: {e:?}"
        );
        assert!(error_chain(&e).contains("the layer is truncated"), "{e}");
    }
}

#[test]
fn what_is_not_a_layout_or_an_archive_names_what_it_lacks() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let empty = t.path().join("empty-dir");
    fs::create_dir(&empty).unwrap();
    let e = try_import(&store, &empty);
    assert!(
        line_of(&e, &empty).contains("is not an OCI image layout: the directory is empty"),
        "{e}"
    );
    let other = t.path().join("photos");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("cat.jpg"), b"meow").unwrap();
    let e = try_import(&store, &other);
    assert!(
        line_of(&e, &other).contains("it has no index.json, oci-layout or blobs/"),
        "{e}"
    );

    // A docker-archive without its manifest.json: layers and config, no index.
    let d = t.path().join("docker");
    fs::create_dir_all(d.join("l1")).unwrap();
    fs::write(d.join("l1/layer.tar"), &layers()[0].0).unwrap();
    fs::write(d.join("config.json"), b"{}").unwrap();
    let p = t.path().join("docker.tar");
    tar_dir(&d, &p);
    let e = try_import(&store, &p);
    assert!(matches!(e, ImportError::UnknownFormat { .. }), "{e:?}");
    assert!(
        line_of(&e, &p)
            .contains("neither index.json (OCI layout) nor manifest.json (docker-archive)"),
        "{e}"
    );
}

/// What the kernel leaves of a layout when the initramfs does not fit in memory:
/// files in name order (blobs/, index.json, oci-layout), the last ones missing or
/// cut short.
#[test]
fn a_layout_cut_short_is_an_incomplete_image() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    const CUT_SHORT: &str =
        "an image cut short, for example an initramfs that did not fit in memory";

    let img = oci_layout(&t.path().join("busybox.oci"), &layers(), None);
    fs::remove_file(img.dir.join("index.json")).unwrap();
    fs::remove_file(img.dir.join("oci-layout")).unwrap();
    let e = try_import(&store, &img.dir);
    assert!(
        matches!(
            e,
            ImportError::Incomplete {
                blobs_present: 4,
                ..
            }
        ),
        "{e:?}"
    );
    let line = line_of(&e, &img.dir);
    assert!(
        line.contains("is an incomplete image: index.json is missing (blobs present: 4)"),
        "{line}"
    );
    assert!(line.contains(CUT_SHORT), "{line}");
    assert!(e.names_path());

    // The index is there, a layer's blob is not.
    let img = oci_layout(&t.path().join("b.oci"), &layers(), None);
    let (layer, ..) = &img.layer_blobs[1];
    fs::remove_file(img.dir.join("blobs/sha256").join(layer.hex())).unwrap();
    let e = try_import(&store, &img.dir);
    let line = line_of(&e, &img.dir);
    assert!(
        line.contains(&format!(
            "is an incomplete image: blob {layer} (layer 1) is missing (blobs present: 3)"
        )),
        "{line}"
    );
    assert!(line.contains(CUT_SHORT), "{line}");

    // The manifest's blob is missing.
    let img = oci_layout(&t.path().join("c.oci"), &layers(), None);
    fs::remove_file(img.dir.join("blobs/sha256").join(img.manifest.hex())).unwrap();
    let e = try_import(&store, &img.dir);
    let line = line_of(&e, &img.dir);
    assert!(
        line.contains(&format!("blob {} (manifest) is missing", img.manifest)),
        "{line}"
    );

    // A blob written only in part (into a new store: the one above holds layer 0).
    let store = Store::open(t.path().join("s2")).unwrap();
    let img = oci_layout(&t.path().join("d.oci"), &layers(), None);
    let (layer, blob, _) = &img.layer_blobs[0];
    let p = img.dir.join("blobs/sha256").join(layer.hex());
    fs::write(&p, &blob[..10]).unwrap();
    let e = try_import(&store, &img.dir);
    let line = line_of(&e, &img.dir);
    assert!(
        line.contains(&format!(
            "blob {layer} (layer 0) is cut short: 10 of {} bytes",
            blob.len()
        )),
        "{line}"
    );
    assert!(store.staging_entries().unwrap().is_empty());
}

/// Every cut of an archive that is not on a 512-byte boundary, from the end of the
/// first header's mode field to the end of the last member, is reported as truncated.
#[test]
fn every_cut_of_an_archive_says_truncated() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let img = oci_layout(&t.path().join("img"), &layers(), None);
    let whole = t.path().join("img.tar");
    tar_dir(&img.dir, &whole);
    let tar = fs::read(&whole).unwrap();
    let (_, _, data, size) = members(&tar).last().unwrap().clone();
    let end = (data + size).next_multiple_of(512) as usize;
    let p = t.path().join("cut.tar");
    let mut cuts = 0;
    for at in (108..end).step_by(7).filter(|at| at % 512 != 0) {
        fs::write(&p, &tar[..at]).unwrap();
        let e = try_import(&store, &p);
        assert!(matches!(e, ImportError::Truncated { .. }), "{at}: {e:?}");
        cuts += 1;
    }
    assert!(cuts > 100, "{cuts}");
}

/// Bytes of an archive changed at random: whatever the import says, it does not
/// panic and prints no control character.
#[test]
fn damaged_archives_never_print_control_characters() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("s")).unwrap();
    let img = oci_layout(&t.path().join("img"), &layers(), None);
    let whole = t.path().join("img.tar");
    tar_dir(&img.dir, &whole);
    let tar = fs::read(&whole).unwrap();
    let noise = noise(4 * 300);
    let p = t.path().join("damaged.tar");
    for (i, n) in noise.chunks(4).enumerate() {
        let mut bad = tar.clone();
        let at = u32::from_le_bytes([n[0], n[1], n[2], 0]) as usize % tar.len();
        let run = 1 + usize::from(n[3] % 16);
        for (k, b) in bad.iter_mut().skip(at).take(run).enumerate() {
            *b = noise[(i * 7 + k) % noise.len()];
        }
        fs::write(&p, &bad).unwrap();
        let opts = ImportOptions {
            name: Some(Reference::parse("x:1").unwrap()),
            ..Default::default()
        };
        if let Err(e) = import(&store, &p, &opts, &mut |_| {}) {
            let line = error_chain(&e);
            assert!(!line.chars().any(char::is_control), "{at}: {line:?}");
        }
    }
}
