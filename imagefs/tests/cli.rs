//! `berth image` as a user meets it (the standalone `berth-image`, the same code the
//! `berth` tool mounts): what reading commands need of the store, what a user who
//! may not write it is told, and what an import of a non-image prints.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use berth_imagefs::import::{import, ImportOptions};
use berth_imagefs::{Reference, Store};
use common::{descriptor, gzip, oci_layout, put_blob, tar_of, E};

const BIN: &str = env!("CARGO_BIN_EXE_berth-image");

fn image(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

/// The same command as the unprivileged user `nobody`.
fn image_as_nobody(store: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn listing_a_store_that_does_not_exist_says_so_and_creates_nothing() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("no/such/store");
    for args in [&["ls"][..], &["inspect", "busybox"]] {
        let out = image(&missing, args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("store {} does not exist", missing.display())),
            "{err}"
        );
        assert!(!t.path().join("no").exists(), "{args:?} created the store");
    }
    // An existing directory with no images is an empty store, as before.
    let out = image(t.path(), &["ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no images\n");
}

#[test]
fn importing_a_random_file_prints_none_of_its_bytes() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("download.bin");
    let mut bytes = b"\x1b]0;EVIL\x07\x1b[2J".to_vec();
    bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    fs::write(&file, &bytes).unwrap();
    let out = image(&t.path().join("s"), &["import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err,
        format!(
            "berth image: error: {} is not a tar archive: its first 512 bytes are not a tar header\n",
            file.display()
        )
    );
}

#[test]
fn a_readable_store_lists_for_other_users_and_refuses_their_writes() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let layer = tar_of(&[E::file("etc/hostname", b"berth\n")]);
    let img = oci_layout(
        &t.path().join("img"),
        &[(layer.clone(), gzip(&layer))],
        None,
    );
    let store_dir = t.path().join("store");
    let store = Store::open(&store_dir).unwrap();
    let opts = ImportOptions {
        name: Some(Reference::parse("web:1").unwrap()),
        ..Default::default()
    };
    import(&store, &img.dir, &opts, &mut |_| {}).unwrap();
    // Made readable by all, as an admin would (`chmod -R a+rX`), except what berth
    // keeps private: its lock files (0600). And staging left by an import that was
    // killed, which only a writer may clean.
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&store_dir)
        .status()
        .unwrap();
    for lock in ["lock", "refs.lock"] {
        fs::set_permissions(store_dir.join(lock), fs::Permissions::from_mode(0o600)).unwrap();
    }
    fs::create_dir(store_dir.join("tmp/layer-killed")).unwrap();

    let ls = image_as_nobody(&store_dir, &["ls"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let listed = String::from_utf8_lossy(&ls.stdout);
    assert!(listed.lines().any(|l| l.starts_with("web:1 ")), "{listed}");
    let inspect = image_as_nobody(&store_dir, &["inspect", "web:1"]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    assert!(
        store_dir.join("tmp/layer-killed").is_dir(),
        "a reader cleaned staging"
    );

    let not_writable = format!(
        "berth image: error: permission denied: {} is not writable by this user\n",
        store_dir.display()
    );
    for args in [
        &["rm", "web:1"][..],
        &["gc"],
        &["import", img.dir.to_str().unwrap()],
    ] {
        let out = image_as_nobody(&store_dir, args);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr(&out), not_writable, "{args:?}");
    }
    assert_eq!(store.refs().unwrap().len(), 1);
}

/// An image whose config holds terminal escapes: `ls` and `inspect` show them escaped.
#[test]
fn inspect_and_ls_escape_what_an_image_config_says() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let layer = tar_of(&[E::file("a", b"a")]);
    put_blob(&dir, &layer);
    let evil = "\x1b]0;owned\x07\x1b[2J";
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": format!("amd64{evil}"), "os": "linux",
        "config": {"Env": [format!("A={evil}")], "Cmd": ["sh", evil], "User": evil, "WorkingDir": evil},
        "rootfs": {"type": "layers", "diff_ids": [berth_imagefs::Digest::of(&layer).to_string()]},
    }))
    .unwrap();
    put_blob(&dir, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))
    .unwrap();
    put_blob(&dir, &manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest)]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    let store = t.path().join("s");
    let out = image(
        &store,
        &["import", "--name", "odd:1", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [&["inspect", "odd:1"][..], &["ls"]] {
        let out = image(&store, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?}: {text:?}"
        );
        assert!(text.contains("\\u{1b}]0;owned"), "{args:?}: {text}");
    }
}
