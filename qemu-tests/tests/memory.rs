//! An image larger than the machine's memory: `berth build` sizes it (`memory_mib` in
//! `manifest.json`); booted with too little memory, the kernel cannot unpack the whole
//! initramfs and PID 1 says so in one line naming memory and the need; booted with
//! `memory_mib`, the image is imported and its container runs.
//!
//! The baked data is 64 MiB of zeros in an uncompressed layer: the initramfs and the store
//! hold it at full size in the guest, while the zstd-compressed initramfs stays small and
//! quick to build and to load.

use std::path::Path;
use std::time::Duration;

use berth_imagefs::build::{busybox_entries, layer_tar, write_oci_layout_of, Entry, ShippedLayer};
use berth_imagefs::oci::{RunConfig, MT_OCI_LAYER};
use berth_imagefs::Digest;
use berth_qemu_tests::{build_test_image, require_qemu, Qemu};

const BOOT: Duration = Duration::from_secs(180);
const DATA_BYTES: usize = 64 << 20;
/// Less than twice the baked data: the kernel's tmpfs root (half the memory) cannot hold it.
const SMALL_MIB: u32 = 128;

const CONFIG: &str = r#"version = 1

[shutdown]
timeout = "1s"

[[image]]
path = "big"
name = "big:1"

[[container]]
name = "big"
image = "big:1"
command = ["sh", "-c", "echo data: $(wc -c < /data/zeros) bytes"]
"#;

/// A busybox image with `/data/zeros`, in one uncompressed layer.
fn write_big_layout(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut entries = busybox_entries(&busybox, &["sh", "wc", "echo"]);
    entries.push(Entry::Dir {
        path: "data".into(),
        mode: 0o755,
    });
    entries.push(Entry::File {
        path: "data/zeros".into(),
        mode: 0o644,
        data: vec![0; DATA_BYTES],
    });
    let tar = layer_tar(&entries).unwrap();
    let layer = ShippedLayer {
        diff_id: Digest::of(&tar),
        blob: &tar,
        media_type: MT_OCI_LAYER,
    };
    write_oci_layout_of(dir, &[layer], RunConfig::default(), "1").unwrap();
}

#[test]
fn an_image_too_big_for_the_memory_says_so_and_boots_with_memory_mib() {
    if !require_qemu() {
        return;
    }
    let image = build_test_image("memory", CONFIG, |dir| write_big_layout(&dir.join("big")));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest.json")).unwrap()).unwrap();
    let need = manifest["memory_mib"].as_u64().expect("memory_mib") as u32;
    assert!(need > SMALL_MIB, "memory_mib {need}");

    // Too small: the unpack stops, PID 1 names memory and the need.
    let vm = Qemu::new(image.join("vmlinuz"))
        .name("memory-small")
        .initrd(image.join("initramfs.img"))
        .memory_mib(SMALL_MIB)
        .deadline(Duration::from_secs(240))
        .spawn()
        .expect("start QEMU");
    let line = vm
        .wait_for_line("the initramfs is incomplete", BOOT)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console_dump()));
    assert!(line.contains("give the machine more memory"), "{line}");
    assert!(
        line.contains(&format!("this image needs about {need} MiB")),
        "{line}"
    );
    let console = vm.console();
    assert!(
        console.contains("Initramfs unpacking failed"),
        "the kernel's own line is missing"
    );
    vm.kill();

    // memory_mib: complete, imported, the container runs.
    let vm = Qemu::new(image.join("vmlinuz"))
        .name("memory-enough")
        .initrd(image.join("initramfs.img"))
        .memory_mib(need)
        .deadline(Duration::from_secs(300))
        .spawn()
        .expect("start QEMU");
    vm.wait_for("big | data: 67108864 bytes", BOOT)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console_dump()));
    let console = vm.console();
    assert!(console.contains("initramfs complete"), "{console}");
    assert!(
        !console.contains("the initramfs is incomplete"),
        "{console}"
    );
    vm.kill();
}
