//! The store and import: formats, verification, refs, gc, verify/repair,
//! concurrency, and rejection of malformed documents before anything is
//! committed.

mod common;

use std::fs;
use std::path::Path;

use berth_imagefs::import::{import, ImportError, ImportOptions};
use berth_imagefs::store::StoreError;
use berth_imagefs::{info, verify, Digest, Limits, Reference, Store};
use common::{descriptor, gzip, oci_layout, put_blob, tar_dir, tar_of, zstd, E};

fn opts(name: &str) -> ImportOptions {
    ImportOptions {
        name: Some(Reference::parse(name).unwrap()),
        ..Default::default()
    }
}

fn base_layers() -> Vec<(Vec<u8>, Vec<u8>)> {
    let l1 = tar_of(&[
        E::dir("etc/"),
        E::file("etc/hostname", b"berth\n"),
        E::file("etc/removeme", b"x"),
        E::dir("data/"),
        E::file("data/a", b"a"),
    ]);
    let l2 = tar_of(&[
        E::file("etc/.wh.removeme", b""),
        E::file("usr/bin/tool", b"#!/bin/sh\n").mode(0o755),
    ]);
    vec![(l1.clone(), gzip(&l1)), (l2.clone(), zstd(&l2))]
}

/// No staging left and nothing half-made under layers/.
fn assert_clean(store: &Store) {
    assert_eq!(
        store.staging_entries().unwrap(),
        Vec::<String>::new(),
        "staging not cleaned"
    );
}

fn assert_nothing_committed(store: &Store) {
    assert!(store.refs().unwrap().is_empty());
    assert!(
        store.list_layers().unwrap().is_empty(),
        "a layer was committed"
    );
    assert_clean(store);
}

#[test]
fn import_oci_dir_then_again() {
    let t = tempfile::tempdir().unwrap();
    let img = oci_layout(&t.path().join("img"), &base_layers(), Some("v1"));
    let store = Store::open(t.path().join("store")).unwrap();
    let rep = import(&store, &img.dir, &opts("test/img:v1"), &mut |_| {}).unwrap();
    assert_eq!(rep.manifest, img.manifest);
    assert_eq!((rep.layers, rep.layers_unpacked), (2, 2));
    assert_eq!(store.refs().unwrap()["test/img:v1"], img.manifest);
    assert_clean(&store);
    let root = store.layer_dir_path(&Digest::of(&base_layers()[0].0));
    assert_eq!(fs::read(root.join("etc/hostname")).unwrap(), b"berth\n");
    // the same image again: nothing to unpack
    let rep = import(&store, &img.dir, &opts("test/img:v1"), &mut |_| {}).unwrap();
    assert_eq!(rep.layers_unpacked, 0);
    // name from the annotation and the directory name
    let rep = import(&store, &img.dir, &ImportOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(rep.name, "img:v1");
    let list = info::list(&store).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].names.len(), 2);
    assert_eq!(
        list[0].entrypoint.as_deref(),
        Some(&["/bin/sh".to_string()][..])
    );
    assert_eq!(list[0].exposed_ports, vec!["80/tcp".to_string()]);
    let mut vr = verify::VerifyReport::default();
    verify::verify_image(&store, &img.manifest, &mut vr).unwrap();
    assert!(vr.problems.is_empty(), "{:?}", vr.problems);
    assert_eq!(vr.layers_checked, 2);
}

#[test]
fn import_oci_tar_and_docker_archive() {
    let t = tempfile::tempdir().unwrap();
    let layers = base_layers();
    let img = oci_layout(&t.path().join("img"), &layers, None);
    let oci_tar = t.path().join("img.oci.tar");
    tar_dir(&img.dir, &oci_tar);
    let store = Store::open(t.path().join("s1")).unwrap();
    let rep = import(&store, &oci_tar, &ImportOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(rep.name, "img:latest");
    assert_eq!(rep.manifest, img.manifest);

    // docker-archive: manifest.json, <hex>.json, <id>/layer.tar, with a
    // symlinked duplicate layer as older `docker save` wrote.
    let d = t.path().join("docker");
    fs::create_dir_all(d.join("l1")).unwrap();
    fs::create_dir_all(d.join("l2")).unwrap();
    fs::write(d.join("l1/layer.tar"), &layers[0].0).unwrap();
    fs::write(d.join("l2/layer.tar"), &layers[1].0).unwrap();
    let cfg_name = format!("{}.json", Digest::of(&img.config_bytes).hex());
    fs::write(d.join(&cfg_name), &img.config_bytes).unwrap();
    let manifest = serde_json::json!([{"Config": cfg_name, "RepoTags": ["docker.io/library/thing:7"], "Layers": ["l1/layer.tar", "l2/layer.tar"]}]);
    fs::write(
        d.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let dtar = t.path().join("docker.tar");
    tar_dir(&d, &dtar);
    let store = Store::open(t.path().join("s2")).unwrap();
    let rep = import(&store, &dtar, &ImportOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(rep.name, "docker.io/library/thing:7");
    assert_eq!(rep.layers_unpacked, 2);
    let info = info::describe(&store, &rep.manifest, vec![]).unwrap();
    assert_eq!(info.layers[0].diff_id, Digest::of(&layers[0].0));
    let mut vr = verify::VerifyReport::default();
    verify::verify_image(&store, &rep.manifest, &mut vr).unwrap();
    assert!(vr.problems.is_empty(), "{:?}", vr.problems);
}

fn corrupt_blob(dir: &Path, d: &Digest) {
    let p = dir.join("blobs/sha256").join(d.hex());
    let mut b = fs::read(&p).unwrap();
    let n = b.len() - 1;
    b[n] ^= 0xff;
    fs::write(p, b).unwrap();
}

#[test]
fn blob_digest_and_size_mismatches_commit_nothing() {
    let t = tempfile::tempdir().unwrap();
    // corrupted layer blob (same size)
    let img = oci_layout(&t.path().join("a"), &base_layers(), None);
    corrupt_blob(&img.dir, &img.layer_blobs[0].0);
    let store = Store::open(t.path().join("s")).unwrap();
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, ImportError::Store(StoreError::BlobDigest { expected, .. }) if expected == img.layer_blobs[0].0),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(&img.layer_blobs[0].0.to_string()),
        "error names the blob: {e}"
    );
    assert_nothing_committed(&store);

    // a layer blob longer than its descriptor says
    let img = oci_layout(&t.path().join("b"), &base_layers(), None);
    let p = img
        .dir
        .join("blobs/sha256")
        .join(img.layer_blobs[1].0.hex());
    let mut b = fs::read(&p).unwrap();
    b.extend_from_slice(b"trailing");
    fs::write(&p, b).unwrap();
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, ImportError::Store(StoreError::BlobSize { .. })),
        "{e:?}"
    );
    assert!(store.refs().unwrap().is_empty());
    assert_clean(&store);

    // corrupted config and manifest
    let img = oci_layout(&t.path().join("c"), &base_layers(), None);
    corrupt_blob(&img.dir, &Digest::of(&img.config_bytes));
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    assert!(matches!(e, ImportError::DescriptorMismatch { .. }), "{e:?}");
    let img = oci_layout(&t.path().join("d"), &base_layers(), None);
    corrupt_blob(&img.dir, &img.manifest);
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    assert!(matches!(e, ImportError::DescriptorMismatch { .. }), "{e:?}");
    assert!(store.refs().unwrap().is_empty());
    assert_clean(&store);
}

#[test]
fn diff_id_mismatch_leaves_no_layer() {
    // the shipped blob is a different tar than the one the diff_id names,
    // compressed and plain (where the blob's own digest stands in for the hash)
    let other = tar_of(&[E::file("evil", b"x")]);
    for shipped in [gzip(&other), other.clone()] {
        diff_id_mismatch_leaves_no_layer_when_shipped_as(&other, shipped);
    }
}

fn diff_id_mismatch_leaves_no_layer_when_shipped_as(other: &[u8], shipped: Vec<u8>) {
    let t = tempfile::tempdir().unwrap();
    let mut layers = base_layers();
    layers[1].1 = shipped;
    let img = oci_layout(&t.path().join("a"), &layers, None);
    let store = Store::open(t.path().join("s")).unwrap();
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    match &e {
        ImportError::Layer {
            index: 1, source, ..
        } => {
            assert!(
                source.to_string().contains("uncompressed layer is"),
                "{source}"
            )
        }
        _ => panic!("{e:?}"),
    }
    assert!(store.refs().unwrap().is_empty());
    assert!(!store.has_layer(&Digest::of(other)).unwrap());
    assert!(!store.has_layer(&Digest::of(&layers[1].0)).unwrap());
    assert!(
        !store.has_blob(&img.layer_blobs[1].0).unwrap(),
        "the bad layer's blob is not committed"
    );
    assert_clean(&store);
}

/// Plain layers: a blob staged by this import was hashed while it was written,
/// and that digest is the diff_id; a blob already in the store is hashed again
/// when its layer is unpacked, so an altered one is caught.
#[test]
fn plain_layers_import_and_a_stored_blob_is_hashed_again() {
    let t = tempfile::tempdir().unwrap();
    let layers: Vec<_> = base_layers()
        .into_iter()
        .map(|(plain, _)| (plain.clone(), plain))
        .collect();
    let img = oci_layout(&t.path().join("a"), &layers, None);
    let store = Store::open(t.path().join("s")).unwrap();
    import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap();
    let l0 = Digest::of(&layers[0].0);
    let root = store.layer_dir_path(&l0);
    assert_eq!(fs::read(root.join("etc/hostname")).unwrap(), b"berth\n");
    assert_eq!(fs::read(root.join("data/a")).unwrap(), b"a");

    // Alter the stored blob's file content (the tar stays well-formed: header
    // checksums do not cover content), drop its layer, import again.
    store.remove_layer(&l0).unwrap();
    let blob = store.blob_path(&l0);
    let mut bytes = fs::read(&blob).unwrap();
    let at = bytes.windows(6).position(|w| w == b"berth\n").unwrap();
    bytes[at..at + 6].copy_from_slice(b"evil!\n");
    fs::write(&blob, &bytes).unwrap();
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    match &e {
        ImportError::Layer {
            index: 0, source, ..
        } => assert!(
            source.to_string().contains("uncompressed layer is"),
            "{source}"
        ),
        _ => panic!("{e:?}"),
    }
    assert!(!store.has_layer(&l0).unwrap());
    assert_clean(&store);
}

#[test]
fn layer_budget_at_import_removes_the_partial_layer() {
    let t = tempfile::tempdir().unwrap();
    let big = tar_of(&[
        E::file("a", &[1u8; 4096]),
        E::file("zeros", &vec![0u8; 4 << 20]),
    ]);
    let img = oci_layout(&t.path().join("a"), &[(big.clone(), gzip(&big))], None);
    let store = Store::open(t.path().join("s")).unwrap();
    let mut o = opts("x");
    o.limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 10,
    };
    let e = import(&store, &img.dir, &o, &mut |_| {}).unwrap_err();
    let msg = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(msg.contains("budget"), "{msg}");
    assert_nothing_committed(&store);
    assert_eq!(store.list_blobs().unwrap(), vec![]);
}

fn write_index(dir: &Path, index: serde_json::Value) {
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn malformed_documents_are_rejected_before_any_path() {
    let t = tempfile::tempdir().unwrap();
    let img = oci_layout(&t.path().join("a"), &base_layers(), None);
    let store = Store::open(t.path().join("s")).unwrap();
    let good = fs::read(img.dir.join("index.json")).unwrap();
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let hex = img.manifest.hex();
    for bad in [
        "sha256:../../../../etc/passwd".to_string(),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha512:{hex}"),
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{hex}00"),
        hex.clone(),
    ] {
        write_index(
            &img.dir,
            serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": mt, "digest": bad, "size": 10}]}),
        );
        let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
        assert!(matches!(e, ImportError::Document(_)), "{bad}: {e:?}");
    }
    // both an index and a manifest
    write_index(
        &img.dir,
        serde_json::json!({"schemaVersion": 2, "manifests": [], "config": descriptor("application/vnd.oci.image.config.v1+json", &img.config_bytes), "layers": []}),
    );
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    assert!(
        e.source_chain_contains("both an index and a manifest"),
        "{e:?}"
    );
    // a manifest blob that claims to be an index
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
    m["manifests"] = serde_json::json!([]);
    let mb = serde_json::to_vec(&m).unwrap();
    put_blob(&img.dir, &mb);
    write_index(
        &img.dir,
        serde_json::json!({"schemaVersion": 2, "manifests": [descriptor(mt, &mb)]}),
    );
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    assert!(
        e.source_chain_contains("both an index and a manifest"),
        "{e:?}"
    );
    // descriptor media type disagreeing with the document
    write_index(
        &img.dir,
        serde_json::json!({"schemaVersion": 2, "manifests": [descriptor("application/vnd.oci.image.index.v1+json", &img.manifest_bytes)]}),
    );
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    assert!(e.source_chain_contains("was referenced as"), "{e:?}");
    // oversized index.json
    let mut huge = br#"{"schemaVersion":2,"manifests":[],"x":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 5 << 20));
    huge.extend_from_slice(b"\"}");
    fs::write(img.dir.join("index.json"), huge).unwrap();
    let e = import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap_err();
    assert!(e.source_chain_contains("limit"), "{e:?}");
    fs::write(img.dir.join("index.json"), &good).unwrap();
    // oversized config: descriptor says so, nothing is read
    assert_nothing_committed(&store);
    assert_eq!(
        store.list_blobs().unwrap(),
        vec![],
        "no blob committed from rejected documents"
    );
    import(&store, &img.dir, &opts("x"), &mut |_| {}).unwrap();
}

trait ChainExt {
    fn source_chain_contains(&self, s: &str) -> bool;
}

impl ChainExt for ImportError {
    fn source_chain_contains(&self, s: &str) -> bool {
        let mut e: Option<&dyn std::error::Error> = Some(self);
        while let Some(x) = e {
            if x.to_string().contains(s) {
                return true;
            }
            e = x.source();
        }
        false
    }
}

#[test]
fn index_platform_selection() {
    let t = tempfile::tempdir().unwrap();
    let amd = oci_layout(&t.path().join("img"), &base_layers(), None);
    // a second, arm64 image in the same layout
    let l = tar_of(&[E::file("arch", b"arm64")]);
    let lb = gzip(&l);
    put_blob(&amd.dir, &lb);
    let cfg = common::config_json(&[Digest::of(&l)], "arm64");
    put_blob(&amd.dir, &cfg);
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &cfg),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &lb)],
    }))
    .unwrap();
    let arm_manifest = put_blob(&amd.dir, &m);
    let mut d_arm = descriptor("application/vnd.oci.image.manifest.v1+json", &m);
    d_arm["platform"] =
        serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
    let mut d_amd = descriptor(
        "application/vnd.oci.image.manifest.v1+json",
        &amd.manifest_bytes,
    );
    d_amd["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    // nested: index.json -> image index blob -> manifests
    let inner = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [d_arm, d_amd]})).unwrap();
    put_blob(&amd.dir, &inner);
    write_index(
        &amd.dir,
        serde_json::json!({"schemaVersion": 2, "manifests": [descriptor("application/vnd.oci.image.index.v1+json", &inner)]}),
    );
    let store = Store::open(t.path().join("s")).unwrap();
    let rep = import(&store, &amd.dir, &opts("multi"), &mut |_| {}).unwrap();
    assert_eq!(rep.manifest, amd.manifest, "linux/amd64 by default");
    let mut o = opts("multi:arm");
    o.platform = berth_imagefs::oci::Platform::parse("linux/arm64");
    let rep = import(&store, &amd.dir, &o, &mut |_| {}).unwrap();
    assert_eq!(rep.manifest, arm_manifest);
    o.platform = berth_imagefs::oci::Platform::parse("linux/s390x");
    let e = import(&store, &amd.dir, &o, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ImportError::NoPlatform { .. }), "{e:?}");
    assert!(e.to_string().contains("linux/arm64/v8"), "{e}");
}

#[test]
fn rm_gc_and_shared_layers() {
    let t = tempfile::tempdir().unwrap();
    let layers = base_layers();
    let a = oci_layout(&t.path().join("a"), &layers, None);
    let extra = tar_of(&[E::file("only-b", b"b")]);
    let mut lb = layers.clone();
    lb.push((extra.clone(), gzip(&extra)));
    let b = oci_layout(&t.path().join("b"), &lb, None);
    let store = Store::open(t.path().join("s")).unwrap();
    import(&store, &a.dir, &opts("a"), &mut |_| {}).unwrap();
    let rb = import(&store, &b.dir, &opts("b"), &mut |_| {}).unwrap();
    assert_eq!(rb.layers_unpacked, 1, "shared layers are unpacked once");
    assert_eq!(store.list_layers().unwrap().len(), 3);
    // nothing to collect while both are named
    let g = store.gc().unwrap();
    assert_eq!((g.blobs_removed, g.layers_removed), (0, 0));
    store.remove_ref(&Reference::parse("b").unwrap()).unwrap();
    assert!(matches!(
        store.remove_ref(&Reference::parse("b").unwrap()),
        Err(StoreError::UnknownRef(_))
    ));
    // a hold keeps b alive
    store.hold("container-1", &b.manifest).unwrap();
    assert_eq!(store.gc().unwrap().layers_removed, 0);
    store.release("container-1").unwrap();
    // a volatile mount hold whose mount point is not mounted is stale
    store
        .hold_volatile("mount-stale", &b.manifest, &t.path().join("not-mounted"))
        .unwrap();
    assert!(store.holds().unwrap().contains_key("mount-stale"));
    let g = store.gc().unwrap();
    assert!(!store.holds().unwrap().contains_key("mount-stale"));
    assert_eq!(g.layers_removed, 1);
    assert_eq!(
        g.blobs_removed, 3,
        "b's manifest, config and its own layer blob"
    );
    assert!(!store.has_layer(&Digest::of(&extra)).unwrap());
    let mut vr = verify::VerifyReport::default();
    verify::verify_image(&store, &a.manifest, &mut vr).unwrap();
    assert!(vr.problems.is_empty(), "{:?}", vr.problems);
    assert_clean(&store);
    assert!(store.hold("../x", &a.manifest).is_err());
}

#[test]
fn verify_finds_tampering_and_reimport_repairs() {
    let t = tempfile::tempdir().unwrap();
    let img = oci_layout(&t.path().join("a"), &base_layers(), None);
    let store = Store::open(t.path().join("s")).unwrap();
    import(&store, &img.dir, &opts("a"), &mut |_| {}).unwrap();
    let l0 = Digest::of(&base_layers()[0].0);
    let ldir = store.layer_dir_path(&l0);
    for tamper in [
        |d: &Path| fs::write(d.join("etc/hostname"), b"evil!\n").unwrap(), // same size, new bytes
        |d: &Path| fs::write(d.join("data/new"), b"").unwrap(),            // an extra file
        |d: &Path| fs::write(d.join("data/\x1b[2J\x1b]0;x\x07"), b"").unwrap(), // named to fool a terminal
        |d: &Path| fs::remove_file(d.join("data/a")).unwrap(),                  // a missing file
        |d: &Path| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(d.join("data/a"), fs::Permissions::from_mode(0o777)).unwrap()
        },
    ] {
        tamper(&ldir);
        let mut vr = verify::VerifyReport::default();
        verify::verify_image(&store, &img.manifest, &mut vr).unwrap();
        assert_eq!(vr.problems.len(), 1, "{:?}", vr.problems);
        assert_eq!(vr.problems[0].kind, "layer");
        let detail = &vr.problems[0].detail;
        assert!(!detail.chars().any(char::is_control), "{detail:?}");
        assert!(!store.has_layer(&l0).unwrap(), "damaged layer removed");
        let rep = import(&store, &img.dir, &opts("a"), &mut |_| {}).unwrap();
        assert_eq!(rep.layers_unpacked, 1, "re-import repairs");
        let mut vr = verify::VerifyReport::default();
        verify::verify_image(&store, &img.manifest, &mut vr).unwrap();
        assert!(vr.problems.is_empty(), "{:?}", vr.problems);
    }
    // a blob altered in the store
    let blob = img.layer_blobs[1].0;
    corrupt_blob(store.root(), &blob);
    let mut vr = verify::VerifyReport::default();
    verify::verify_image(&store, &img.manifest, &mut vr).unwrap();
    assert!(
        vr.problems
            .iter()
            .any(|p| p.kind == "blob" && p.digest == blob),
        "{:?}",
        vr.problems
    );
    assert!(!store.has_blob(&blob).unwrap());
    import(&store, &img.dir, &opts("a"), &mut |_| {}).unwrap();
    let mut vr = verify::VerifyReport::default();
    verify::verify_image(&store, &img.manifest, &mut vr).unwrap();
    assert!(vr.problems.is_empty(), "{:?}", vr.problems);
    assert_clean(&store);
}

/// `verify` prints where a layer differs: a name from the image, escaped.
#[test]
fn verify_shows_a_damaged_file_by_an_escaped_name() {
    let t = tempfile::tempdir().unwrap();
    let layer = tar_of(&[E::file("odd\x1b]0;owned\x07\x1b[2J", b"a")]);
    let img = oci_layout(&t.path().join("a"), &[(layer.clone(), gzip(&layer))], None);
    let store = Store::open(t.path().join("s")).unwrap();
    import(&store, &img.dir, &opts("a"), &mut |_| {}).unwrap();
    let ldir = store.layer_dir_path(&Digest::of(&layer));
    fs::write(ldir.join("odd\x1b]0;owned\x07\x1b[2J"), b"b").unwrap();
    let mut vr = verify::VerifyReport::default();
    verify::verify_image(&store, &img.manifest, &mut vr).unwrap();
    assert_eq!(vr.problems.len(), 1, "{:?}", vr.problems);
    let detail = &vr.problems[0].detail;
    assert!(detail.contains("odd\\u{1b}]0;owned"), "{detail:?}");
    assert!(!detail.chars().any(char::is_control), "{detail:?}");
}

#[test]
fn concurrent_imports_sharing_layers() {
    let t = tempfile::tempdir().unwrap();
    let layers = base_layers();
    let mut imgs = Vec::new();
    for i in 0..4 {
        let extra = tar_of(&[E::file(&format!("only-{i}"), &vec![i as u8; 300_000])]);
        let mut l = layers.clone();
        l.push((extra.clone(), zstd(&extra)));
        imgs.push(oci_layout(&t.path().join(format!("img{i}")), &l, None));
    }
    let store_path = t.path().join("s");
    Store::open(&store_path).unwrap();
    std::thread::scope(|s| {
        for (i, img) in imgs.iter().enumerate() {
            for round in 0..2 {
                let sp = store_path.clone();
                s.spawn(move || {
                    let store = Store::open(&sp).unwrap();
                    import(
                        &store,
                        &img.dir,
                        &opts(&format!("img{i}:r{round}")),
                        &mut |_| {},
                    )
                    .unwrap();
                });
            }
        }
    });
    let store = Store::open(&store_path).unwrap();
    assert_eq!(store.refs().unwrap().len(), 8);
    assert_eq!(store.list_layers().unwrap().len(), 6);
    for img in &imgs {
        let mut vr = verify::VerifyReport::default();
        verify::verify_image(&store, &img.manifest, &mut vr).unwrap();
        assert!(vr.problems.is_empty(), "{:?}", vr.problems);
    }
    assert_clean(&store);
}

#[test]
fn open_cleans_stale_staging_but_not_a_live_imports() {
    let t = tempfile::tempdir().unwrap();
    let sp = t.path().join("s");
    Store::open(&sp).unwrap();
    fs::create_dir_all(sp.join("tmp/layer-stale/diff/x")).unwrap();
    fs::write(sp.join("tmp/blob-stale"), b"partial").unwrap();
    let store = Store::open(&sp).unwrap();
    assert_clean(&store);
    // while someone holds the import lock, open leaves tmp alone
    let guard = store.lock_shared().unwrap();
    fs::create_dir_all(sp.join("tmp/layer-live")).unwrap();
    let other = Store::open(&sp).unwrap();
    assert_eq!(
        other.staging_entries().unwrap(),
        vec!["layer-live".to_string()]
    );
    drop(guard);
    let again = Store::open(&sp).unwrap();
    assert_clean(&again);
}

#[test]
fn resolve_refs_and_digests() {
    let t = tempfile::tempdir().unwrap();
    let img = oci_layout(&t.path().join("a"), &base_layers(), None);
    let store = Store::open(t.path().join("s")).unwrap();
    import(&store, &img.dir, &opts("busybox:1"), &mut |_| {}).unwrap();
    assert_eq!(store.resolve("busybox:1").unwrap().1, img.manifest);
    assert_eq!(
        store.resolve(&img.manifest.to_string()).unwrap().1,
        img.manifest
    );
    assert_eq!(
        store.resolve(&img.manifest.hex()[..12]).unwrap().1,
        img.manifest
    );
    assert!(
        store.resolve("busybox").is_err(),
        "busybox means busybox:latest"
    );
    assert!(store.resolve("sha256:../../x").is_err());
}
