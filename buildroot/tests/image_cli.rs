//! `berth image` is the imagefs CLI mounted in the `berth` tool: the wiring, end to end.
//! (The store's behaviour is tested in imagefs itself.)

use std::process::Command;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

#[test]
fn berth_image_lists_an_empty_store_and_names_a_missing_ref() {
    let store = tempfile::tempdir().unwrap();
    let ls = Command::new(BERTH)
        .args(["image", "--json", "--store"])
        .arg(store.path())
        .arg("ls")
        .output()
        .unwrap();
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls --json is JSON");
    assert_eq!(listed, serde_json::json!([]), "a new store lists no images");

    let inspect = Command::new(BERTH)
        .args(["image", "--store"])
        .arg(store.path())
        .args(["inspect", "no-such-image:1.0"])
        .output()
        .unwrap();
    assert!(!inspect.status.success());
    let err = String::from_utf8_lossy(&inspect.stderr);
    assert!(
        err.contains("no-such-image"),
        "error must name the ref: {err}"
    );
}
