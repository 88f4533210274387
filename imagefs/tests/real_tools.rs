//! Images made by real tools (umoci, skopeo), imported in every form and
//! mounted, then compared file by file with umoci's own unpack; plus the
//! CLI end to end and the 64-layer mount time.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_imagefs::import::{import, ImportOptions};
use berth_imagefs::mount::{mount_image, umount_image};
use berth_imagefs::{verify, Reference, Store};
use common::{gzip, oci_layout, tar_of, E};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn have_tools() -> bool {
    ["umoci", "skopeo"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok())
        && Path::new("/bin/busybox").exists()
}

/// Build busybox:base with umoci: a base layer, a layer deleting a file,
/// and a crafted layer (added with `umoci raw add-layer`) that makes a
/// directory opaque. Returns (layout dir, umoci's own unpack of the result).
fn build_image(t: &Path) -> (PathBuf, PathBuf) {
    let l = t.join("oci");
    let img = format!("{}:base", s(&l));
    run("umoci", &["init", "--layout", s(&l)]);
    run("umoci", &["new", "--image", &img]);
    let b1 = t.join("b1");
    run("umoci", &["unpack", "--image", &img, s(&b1)]);
    let r = b1.join("rootfs");
    fs::create_dir_all(r.join("bin")).unwrap();
    fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    fs::hard_link(r.join("bin/busybox"), r.join("bin/busybox-hard")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", r.join("bin/ls")).unwrap();
    fs::create_dir_all(r.join("etc")).unwrap();
    fs::write(r.join("etc/hostname"), "berth\n").unwrap();
    fs::write(r.join("etc/removeme"), "gone\n").unwrap();
    fs::create_dir_all(r.join("data/dir/sub")).unwrap();
    fs::write(r.join("data/dir/a"), "a").unwrap();
    fs::write(r.join("data/dir/sub/b"), "b").unwrap();
    fs::write(r.join("data/keep"), "k").unwrap();
    fs::set_permissions(r.join("data/keep"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(r.join("data/keep"), Some(1000), Some(1000)).unwrap();
    run("umoci", &["repack", "--image", &img, s(&b1)]);

    let b2 = t.join("b2");
    run("umoci", &["unpack", "--image", &img, s(&b2)]);
    fs::remove_file(b2.join("rootfs/etc/removeme")).unwrap();
    run("umoci", &["repack", "--image", &img, s(&b2)]);

    let opq = tar_of(&[
        E::dir("data/"),
        E::dir("data/dir/"),
        E::file("data/dir/.wh..wh..opq", b""),
        E::file("data/dir/c", b"c"),
    ]);
    let opq_path = t.join("opaque.tar");
    fs::write(&opq_path, opq).unwrap();
    run(
        "umoci",
        &["raw", "add-layer", "--image", &img, s(&opq_path)],
    );
    run(
        "umoci",
        &[
            "config",
            "--image",
            &img,
            "--config.entrypoint",
            "/bin/sh",
            "--config.workingdir",
            "/data",
            "--config.env",
            "A=1",
        ],
    );
    let expect = t.join("expect");
    run("umoci", &["unpack", "--image", &img, s(&expect)]);
    (l, expect.join("rootfs"))
}

/// Compare two trees: names, types, modes, owners, link targets, content.
fn compare_trees(want: &Path, got: &Path, rel: &str) {
    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let (nw, ng) = (names(&want.join(rel)), names(&got.join(rel)));
    assert_eq!(nw, ng, "entries of /{rel}");
    for n in nw {
        let r = if rel.is_empty() {
            n.clone()
        } else {
            format!("{rel}/{n}")
        };
        let (mw, mg) = (
            fs::symlink_metadata(want.join(&r)).unwrap(),
            fs::symlink_metadata(got.join(&r)).unwrap(),
        );
        assert_eq!(mw.file_type(), mg.file_type(), "type of /{r}");
        assert_eq!(mw.mode(), mg.mode(), "mode of /{r}");
        assert_eq!((mw.uid(), mw.gid()), (mg.uid(), mg.gid()), "owner of /{r}");
        if mw.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(want.join(&r)).unwrap(),
                fs::read_link(got.join(&r)).unwrap(),
                "/{r}"
            );
        } else if mw.is_file() {
            assert_eq!(mw.mtime(), mg.mtime(), "mtime of /{r}");
            assert!(
                fs::read(want.join(&r)).unwrap() == fs::read(got.join(&r)).unwrap(),
                "content of /{r}"
            );
        } else if mw.is_dir() {
            compare_trees(want, got, &r);
        }
    }
}

fn check_mounted(mnt: &Path, expect: &Path) {
    compare_trees(expect, mnt, "");
    assert_eq!(
        fs::read(mnt.join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        fs::read(mnt.join("bin/busybox-hard")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        fs::read_link(mnt.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_to_string(mnt.join("etc/hostname")).unwrap(),
        "berth\n"
    );
    assert!(
        !mnt.join("etc/removeme").exists(),
        "deleted by the second layer"
    );
    let mut dir: Vec<_> = fs::read_dir(mnt.join("data/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    dir.sort();
    assert_eq!(dir, vec!["c"], "data/dir is opaque in the third layer");
    assert_eq!(fs::read_to_string(mnt.join("data/keep")).unwrap(), "k");
    let err = fs::write(mnt.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn umoci_and_skopeo_images_in_every_form() {
    require_root!();
    if !have_tools() {
        if std::env::var("BERTH_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("umoci, skopeo and /bin/busybox are required");
        }
        eprintln!("skipping: umoci/skopeo/busybox not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (layout, expect) = build_image(t.path());
    let oci_tar = t.path().join("img.oci.tar");
    let docker_tar = t.path().join("img.docker.tar");
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:base", s(&layout)),
            &format!("oci-archive:{}:base", s(&oci_tar)),
        ],
    );
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:base", s(&layout)),
            &format!("docker-archive:{}:busybox:test", s(&docker_tar)),
        ],
    );
    let mut diff_ids = Vec::new();
    for (i, (src, name)) in [
        (&layout, None),
        (&oci_tar, None),
        (&docker_tar, Some("docker.io/library/busybox:test")),
    ]
    .iter()
    .enumerate()
    {
        let store = Store::open(t.path().join(format!("store{i}"))).unwrap();
        let rep = import(&store, src, &ImportOptions::default(), &mut |_| {}).unwrap();
        if let Some(n) = name {
            assert_eq!(rep.name, *n);
        }
        assert_eq!(rep.layers, 3);
        let m = store.manifest(&rep.manifest).unwrap();
        diff_ids.push(store.config(&m).unwrap().rootfs.diff_ids);
        let info = berth_imagefs::info::describe(&store, &rep.manifest, vec![]).unwrap();
        assert_eq!(
            info.entrypoint.as_deref(),
            Some(&["/bin/sh".to_string()][..])
        );
        assert_eq!(info.working_dir.as_deref(), Some("/data"));
        let mnt = t.path().join(format!("mnt{i}"));
        fs::create_dir(&mnt).unwrap();
        mount_image(&store, &rep.manifest, &mnt, None).unwrap();
        let res = std::panic::catch_unwind(|| check_mounted(&mnt, &expect));
        // gc while mounted keeps the image (the mount holds it)
        store
            .remove_ref(&Reference::parse(&rep.name).unwrap())
            .unwrap();
        assert_eq!(store.gc().unwrap().layers_removed, 0);
        umount_image(&store, &mnt).unwrap();
        res.unwrap();
        assert_eq!(store.gc().unwrap().layers_removed, 3);
    }
    assert!(
        diff_ids.windows(2).all(|w| w[0] == w[1]),
        "same layers in every form"
    );
}

#[test]
fn cli_end_to_end() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let l1 = tar_of(&[E::dir("etc/"), E::file("etc/os-release", b"berth\n")]);
    let l2 = tar_of(&[E::file("etc/.wh.os-release", b""), E::file("hello", b"hi")]);
    let img = oci_layout(
        &t.path().join("img"),
        &[(l1.clone(), gzip(&l1)), (l2.clone(), l2.clone())],
        None,
    );
    let store = t.path().join("store");
    let bin = env!("CARGO_BIN_EXE_berth-image");
    let cli = |args: &[&str]| -> (bool, String) {
        let out = Command::new(bin)
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(&["import", s(&img.dir), "--name", "demo:1", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "demo:1");
    assert_eq!(v["manifest"], img.manifest.to_string());
    let (ok, out) = cli(&["ls"]);
    assert!(
        ok && out.contains("demo:1") && out.contains(&img.manifest.short()),
        "{out}"
    );
    let (ok, out) = cli(&["inspect", "demo:1", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 2);
    assert_eq!(v["exposed_ports"][0], "80/tcp");
    let (ok, out) = cli(&["inspect", "demo:1"]);
    assert!(ok && out.contains("entrypoint:   [\"/bin/sh\"]"), "{out}");
    let (ok, out) = cli(&["verify"]);
    assert!(ok && out.contains("demo:1: ok"), "{out}");
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let (ok, out) = cli(&["mount", "demo:1", s(&mnt)]);
    assert!(ok, "{out}");
    let mounted = (
        fs::read(mnt.join("hello")).ok(),
        mnt.join("etc/os-release").exists(),
    );
    let (ok, out) = cli(&["umount", s(&mnt)]);
    assert!(ok, "{out}");
    assert_eq!(mounted, (Some(b"hi".to_vec()), false));
    // tamper, verify fails with exit 1, import repairs
    fs::write(
        Store::open(&store)
            .unwrap()
            .layer_dir_path(&berth_imagefs::Digest::of(&l2))
            .join("hello"),
        b"HI",
    )
    .unwrap();
    let (ok, out) = cli(&["verify", "demo:1"]);
    assert!(!ok && out.contains("DAMAGED"), "{out}");
    let (ok, out) = cli(&["import", s(&img.dir), "--name", "demo:1"]);
    assert!(ok && out.contains("1 unpacked"), "{out}");
    let (ok, out) = cli(&["verify", "demo:1", "--json"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["inspect", "nope:1"]);
    assert!(!ok && out.contains("no image named nope:1"), "{out}");
    let (ok, out) = cli(&["rm", "../../etc"]);
    assert!(!ok && out.contains("invalid image name"), "{out}");
    let (ok, out) = cli(&["rm", "demo:1"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["gc", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layers_removed"], 2);
}

#[test]
fn mount_64_and_128_layers() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let layers: Vec<(Vec<u8>, Vec<u8>)> = (0..128)
        .map(|i| {
            let l = tar_of(&[
                E::file(&format!("f{i:03}"), format!("{i}").as_bytes()),
                E::file("top", format!("{i}").as_bytes()),
            ]);
            (l.clone(), l)
        })
        .collect();
    // the store path is deliberately long-ish, like /var/lib/berth
    let store = Store::open(t.path().join("var-lib-berth")).unwrap();
    let img64 = oci_layout(&t.path().join("i64"), &layers[..64], None);
    let img128 = oci_layout(&t.path().join("i128"), &layers, None);
    let r64 = import(&store, &img64.dir, &ImportOptions::default(), &mut |_| {}).unwrap();
    let r128 = import(&store, &img128.dir, &ImportOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(r128.layers_unpacked, 64);
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut best = Duration::MAX;
    for _ in 0..20 {
        let start = Instant::now();
        let plan = mount_image(&store, &r64.manifest, &mnt, None).unwrap();
        best = best.min(start.elapsed());
        assert!(plan.data.len() < 4096);
        assert_eq!(
            fs::read_to_string(mnt.join("top")).unwrap(),
            "63",
            "top layer wins"
        );
        umount_image(&store, &mnt).unwrap();
    }
    eprintln!("64-layer overlay mount (resolve + links + hold + mount(2)), best of 20: {best:?}");
    let ls = links(&store, &r64.manifest);
    let mut raw = Duration::MAX;
    for _ in 0..20 {
        let start = Instant::now();
        nix::mount::mount(
            Some("overlay"),
            &mnt,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(
                berth_imagefs::mount::plan_for_store(&store, &ls, None)
                    .unwrap()
                    .data
                    .as_str(),
            ),
        )
        .unwrap();
        raw = raw.min(start.elapsed());
        nix::mount::umount(&mnt).unwrap();
    }
    eprintln!("64-layer overlay mount(2) alone, best of 20: {raw:?}");
    assert!(
        best < Duration::from_millis(50),
        "64-layer mount took {best:?}"
    );
    mount_image(&store, &r128.manifest, &mnt, None).unwrap();
    assert_eq!(fs::read_to_string(mnt.join("top")).unwrap(), "127");
    assert_eq!(fs::read_to_string(mnt.join("f000")).unwrap(), "0");
    umount_image(&store, &mnt).unwrap();
    let mut vr = verify::VerifyReport::default();
    verify::verify_image(&store, &r64.manifest, &mut vr).unwrap();
    assert!(vr.problems.is_empty());
}

fn links(store: &Store, m: &berth_imagefs::Digest) -> Vec<String> {
    let man = store.manifest(m).unwrap();
    store
        .config(&man)
        .unwrap()
        .rootfs
        .diff_ids
        .iter()
        .map(|d| store.ensure_link(d).unwrap())
        .collect()
}

#[test]
fn writable_container_mount() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let l1 = tar_of(&[E::dir("etc/"), E::file("etc/motd", b"lower\n")]);
    let img = oci_layout(&t.path().join("img"), &[(l1.clone(), gzip(&l1))], None);
    let store = Store::open(t.path().join("s")).unwrap();
    let rep = import(&store, &img.dir, &ImportOptions::default(), &mut |_| {}).unwrap();
    let c = t.path().join("c1");
    let upper = berth_imagefs::mount::Upper {
        upperdir: c.join("upper"),
        workdir: c.join("work"),
        volatile: false,
    };
    fs::create_dir_all(&upper.upperdir).unwrap();
    fs::create_dir_all(&upper.workdir).unwrap();
    let rootfs = c.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    mount_image(&store, &rep.manifest, &rootfs, Some(&upper)).unwrap();
    fs::write(rootfs.join("etc/motd"), b"changed\n").unwrap();
    fs::write(rootfs.join("new"), b"n").unwrap();
    umount_image(&store, &rootfs).unwrap();
    assert_eq!(
        fs::read(upper.upperdir.join("etc/motd")).unwrap(),
        b"changed\n"
    );
    assert_eq!(fs::read(upper.upperdir.join("new")).unwrap(), b"n");
    let layer = store.layer_dir_path(&berth_imagefs::Digest::of(&l1));
    assert_eq!(
        fs::read(layer.join("etc/motd")).unwrap(),
        b"lower\n",
        "the stored layer is untouched"
    );
    let mut vr = verify::VerifyReport::default();
    verify::verify_image(&store, &rep.manifest, &mut vr).unwrap();
    assert!(vr.problems.is_empty(), "{:?}", vr.problems);
}
