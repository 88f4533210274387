//! Power cuts during an image import: the store must come back either without the
//! image or with it complete and verified, never with a ref to something half
//! written.
//!
//! A guest runs PID 1's own importer (`berth-helper import-images`, the code that
//! imports baked images at boot) into a store on an ext4 virtio disk, and QEMU is
//! SIGKILLed at points spread over the import. That loses exactly what a power cut
//! loses: everything the guest had not yet written to its disk (its page cache, and
//! ext4's uncommitted journal); writes the guest had issued reached the disk image.
//! After each cut the host mounts the disk (replaying the journal), opens the store
//! and checks it; the next boot imports again onto the same disk, which must repair
//! whatever the cut left. The last boot runs to the end.
//!
//! Needs root (a loop mount) besides QEMU.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_buildroot::cpio::{CpioWriter, EntryKind};
use berth_imagefs::build::{busybox_entries, write_oci_layout, Entry, BUSYBOX_APPLETS};
use berth_imagefs::oci::RunConfig;
use berth_imagefs::verify::{verify_image, VerifyReport};
use berth_imagefs::Store;
use berth_qemu_tests::{build_test_image, require_qemu, require_root, Qemu, Vm};

const REF: &str = "big:1";
const CUTS: u32 = 6;
const STEP: Duration = Duration::from_secs(120);

const CONFIG: &str = r#"version = 1
hostname = "powercut"

[kernel]
modules = ["virtio_pci", "virtio_blk"]

[[image]]
path = "big"
name = "big:1"
"#;

/// Started instead of PID 1 (`rdinit=`): mounts the disk where the store lives and
/// runs the importer on it.
const SCRIPT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /var/lib/berth
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
$B modprobe virtio_pci
$B modprobe virtio_blk
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do $B sleep 0.05; i=$((i+1)); done
if ! $B mount -t ext4 /dev/vda /var/lib/berth; then
  echo "powercut: no disk"
  $B poweroff -f
fi
echo "powercut: import start"
/usr/lib/berth/berth-helper import-images
echo "powercut: import exit $?"
# Nothing syncs the disk for a while: a cut in this window finds on disk only what
# the importer itself made durable.
$B sleep 3
$B umount /var/lib/berth
echo "powercut: unmounted"
$B poweroff -f
"#;

/// An image of a few thousand files: long enough to import (seconds under TCG) that
/// the cuts land in every phase, blobs, unpacking, commit and ref.
fn write_big_layout(dir: &Path) {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut entries = busybox_entries(&busybox, BUSYBOX_APPLETS);
    for d in 0..30 {
        entries.push(Entry::Dir {
            path: format!("data/d{d}"),
            mode: 0o755,
        });
    }
    entries.insert(
        0,
        Entry::Dir {
            path: "data".into(),
            mode: 0o755,
        },
    );
    for i in 0..3000u32 {
        let data: Vec<u8> = (0..4096u32)
            .map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8)
            .collect();
        entries.push(Entry::File {
            path: format!("data/d{}/f{i}", i % 30),
            mode: 0o644,
            data,
        });
    }
    let _ = std::fs::remove_dir_all(dir);
    write_oci_layout(dir, &entries, RunConfig::default(), REF).expect("write the layout");
}

/// An archive holding busybox and the script, then the berth initramfs: the kernel
/// unpacks both (an uncompressed archive must come first, as early microcode does).
fn write_initrd(image: &Path, out: &Path) {
    let berth = std::fs::read(image.join("initramfs.img")).expect("initramfs");
    let mut w = CpioWriter::new(Vec::new());
    let busybox = std::fs::read("/bin/busybox").unwrap();
    w.entry("bin", 0o755, &EntryKind::Dir).unwrap();
    w.entry("bin/busybox", 0o755, &EntryKind::File(&busybox))
        .unwrap();
    w.entry("powercut", 0o755, &EntryKind::File(SCRIPT.as_bytes()))
        .unwrap();
    let mut bytes = w.finish().unwrap();
    bytes.extend(berth);
    std::fs::write(out, bytes).unwrap();
}

fn boot(image: &Path, initrd: &Path, disk: &Path) -> Vm {
    Qemu::new(image.join("vmlinuz"))
        .name("powercut")
        .initrd(initrd)
        .kernel_arg("rdinit=/powercut")
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .deadline(Duration::from_secs(300))
        .spawn()
        .expect("start QEMU")
}

/// Mounts the disk image (replaying ext4's journal, as the next boot would), opens
/// the store and checks that the image is either absent or complete. Returns
/// whether it was there.
fn check_store(disk: &Path, mnt: &Path, cut: &str) -> bool {
    std::fs::create_dir_all(mnt).unwrap();
    let fsck = Command::new("fsck.ext4")
        .args(["-f", "-y"])
        .arg(disk)
        .output()
        .unwrap();
    // 0: clean; 1: errors corrected (a journal replay counts). Anything else is a
    // filesystem berth cannot be blamed for, and a broken test setup.
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "{cut}: fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let mount = Command::new("mount")
        .args(["-o", "loop"])
        .arg(disk)
        .arg(mnt)
        .status()
        .unwrap();
    assert!(mount.success(), "{cut}: mounting the disk image");
    let present = (|| {
        // Opening the store empties its staging area, as the importer's next run does.
        let store = Store::open(mnt).unwrap_or_else(|e| panic!("{cut}: open: {e}"));
        let staged: Vec<_> = std::fs::read_dir(mnt.join("tmp")).unwrap().collect();
        assert!(
            staged.is_empty(),
            "{cut}: staging left after open: {staged:?}"
        );
        let refs = store.refs().unwrap_or_else(|e| panic!("{cut}: refs: {e}"));
        let Some(manifest) = refs.get(REF) else {
            return false;
        };
        let mut report = VerifyReport::default();
        verify_image(&store, manifest, &mut report)
            .unwrap_or_else(|e| panic!("{cut}: verify: {e}"));
        assert!(
            report.problems.is_empty() && report.layers_checked == 1,
            "{cut}: {REF} is in the store but broken: {:?}",
            report.problems
        );
        true
    })();
    let umount = Command::new("umount").arg(mnt).status().unwrap();
    assert!(umount.success());
    present
}

#[test]
fn an_import_cut_at_any_point_leaves_the_image_absent_or_whole() {
    if !require_qemu() {
        return;
    }
    if !require_root() {
        return;
    }
    let image = build_test_image("powercut", CONFIG, |dir| write_big_layout(&dir.join("big")));
    let work: PathBuf = image.parent().unwrap().to_path_buf();
    let initrd = work.join("powercut-initramfs.img");
    write_initrd(&image, &initrd);
    let disk = work.join("disk.img");
    let mnt = work.join("mnt");
    let _ = Command::new("umount").arg(&mnt).status();
    std::fs::write(&disk, []).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.set_len(256 << 20).unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(mkfs.success());

    // A first, uncut import on a scratch copy measures how long one takes.
    let scratch = work.join("scratch.img");
    std::fs::copy(&disk, &scratch).unwrap();
    let vm = boot(&image, &initrd, &scratch);
    vm.wait_for("powercut: import start", STEP).unwrap();
    let started = Instant::now();
    let done = vm.wait_for_line("powercut: import exit", STEP).unwrap();
    let import = started.elapsed();
    assert!(done.contains("import exit 0"), "{done}");
    vm.wait_for("powercut: unmounted", STEP).unwrap();
    let _ = vm.wait_exit(STEP);
    assert!(check_store(&scratch, &mnt, "uncut import"));
    let _ = std::fs::remove_file(&scratch);

    // Cuts spread from the start of the import to just past its end (the guest then
    // waits before unmounting, so the last cut still finds only what the importer
    // made durable itself).
    let mut outcomes = Vec::new();
    for cut in 0..CUTS {
        let at = import.mul_f64(f64::from(cut) / f64::from(CUTS - 1) * 1.2);
        let vm = boot(&image, &initrd, &disk);
        vm.wait_for("powercut: import start", STEP).unwrap();
        std::thread::sleep(at);
        vm.kill();
        // Gone before its disk is looked at.
        let _ = vm.wait_exit(STEP);
        let label = format!("cut {cut} at {} ms", at.as_millis());
        outcomes.push((label.clone(), check_store(&disk, &mnt, &label)));
    }
    eprintln!(
        "import took {} ms; after each cut, image present: {outcomes:?}",
        import.as_millis()
    );

    // The last boot finishes the import on whatever the cuts left.
    let vm = boot(&image, &initrd, &disk);
    let done = vm.wait_for_line("powercut: import exit", STEP).unwrap();
    assert!(done.contains("import exit 0"), "{done}");
    vm.wait_for("powercut: unmounted", STEP).unwrap();
    let _ = vm.wait_exit(STEP);
    assert!(check_store(&disk, &mnt, "final import"));
}
