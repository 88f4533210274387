//! End-to-end tests of `berth build`: reproducibility across output paths, time zones,
//! umasks and wall-clock time, the initramfs contents, and errors a user meets first.
//!
//! They need the pinned kernel package, which is fetched into the shared cache
//! (`$BERTH_CACHE`, else `~/.cache/berth`) on first use, and static ELFs to stand in for
//! berth-init and berth-helper: copies of `/bin/busybox` from Debian's busybox-static (the
//! pipeline does not care what the binaries do).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const STATIC_ELF: &str = "/bin/busybox";
const RELEASE: &str = "6.1.0-50-cloud-amd64";

/// Runs `berth build` through `sh` so that the umask and TZ apply to the process itself.
/// Stand-ins for the init binary and, beside it, `berth-helper` (busybox with a few bytes
/// appended, so that the two differ): returns the init binary's path.
fn stand_ins(dir: &Path) -> std::path::PathBuf {
    let elf = std::fs::read(STATIC_ELF).expect("busybox-static is installed");
    std::fs::write(dir.join("berth-init"), &elf).unwrap();
    let mut helper = elf;
    helper.extend_from_slice(b"helper");
    std::fs::write(dir.join("berth-helper"), helper).unwrap();
    dir.join("berth-init")
}

fn berth_build(config: &Path, out: &Path, tz: &str, umask: &str, init: &Path) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(r#"umask "$1"; shift; exec "$@""#)
        .arg("sh")
        .arg(umask)
        .arg(BERTH)
        .arg("build")
        .arg(config)
        .arg("-o")
        .arg(out)
        .arg("--init")
        .arg(init)
        .env("TZ", tz)
        .output()
        .expect("run berth")
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "berth failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cpio -t` of a zstd-compressed newc archive.
fn cpio_list(image: &[u8]) -> BTreeSet<String> {
    cpio_names(image).into_iter().collect()
}

/// The member names of a zstd-compressed newc archive, in archive order.
fn cpio_names(image: &[u8]) -> Vec<String> {
    let cpio = zstd::decode_all(image).expect("initramfs is one zstd stream");
    let mut child = Command::new("cpio")
        .args(["-t", "--quiet", "-H", "newc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cpio is installed");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&cpio));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One file of a zstd-compressed newc archive, by extracting it with `cpio -i`.
fn cpio_extract(image: &[u8], member: &str) -> Vec<u8> {
    let cpio = zstd::decode_all(image).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("cpio")
        .args(["-i", "--quiet", "-H", "newc", "--make-directories", member])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&cpio));
    assert!(child.wait().unwrap().success());
    writer.join().unwrap().unwrap();
    std::fs::read(dir.path().join(member)).unwrap()
}

#[test]
fn same_inputs_give_identical_outputs_and_the_expected_image() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("host.toml");
    std::fs::write(
        &config,
        "version = 1\nhostname = \"repro\"\n\n[kernel]\nmodules = [\"dummy\", \"vxlan\"]\n\n\
         [[image]]\npath = \"bb\"\nname = \"busybox\"\n\n\
         [[container]]\nname = \"c\"\nimage = \"busybox\"\n",
    )
    .unwrap();
    busybox_layout(&work.path().join("bb"), "latest");
    let a = work.path().join("a");
    let b = work.path().join("deeper/and/deeper/b-out");

    let init = stand_ins(work.path());
    let first = berth_build(&config, &a, "UTC", "022", &init);
    assert_ok(&first);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_ok(&berth_build(&config, &b, "Pacific/Chatham", "077", &init));

    for name in ["vmlinuz", "initramfs.img", "manifest.json"] {
        let x = std::fs::read(a.join(name)).unwrap();
        let y = std::fs::read(b.join(name)).unwrap();
        assert!(x == y, "{name} differs between the two builds");
    }

    // The manifest names no paths of this machine.
    let manifest = std::fs::read_to_string(a.join("manifest.json")).unwrap();
    assert!(
        !manifest.contains(work.path().to_str().unwrap()),
        "{manifest}"
    );
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let names = |key: &str| -> Vec<String> {
        m[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("outputs"), ["vmlinuz", "initramfs.img"]);
    // The memory need: the baseline, the initramfs twice, at least one container.
    let memory_mib = m["memory_mib"].as_u64().expect("memory_mib is an integer");
    assert!((144..1024).contains(&memory_mib), "memory_mib {memory_mib}");
    assert_eq!(memory_mib % 16, 0);
    let inputs = names("inputs");
    assert_eq!(inputs[0], "host.toml");
    assert_eq!(inputs[1], "init");
    assert_eq!(inputs[2], "usr/lib/berth/berth-helper");
    assert!(inputs[3].starts_with("linux-image-6.1.0-50-cloud-amd64_"));
    let image = std::fs::read(a.join("initramfs.img")).unwrap();
    assert_eq!(
        m["outputs"][1]["size"].as_u64(),
        Some(image.len() as u64),
        "manifest size of initramfs.img"
    );

    // The image has the layout.
    let listing = cpio_list(&image);
    let moddir = format!("lib/modules/{RELEASE}");
    for want in [
        "init".to_owned(),
        "usr/lib/berth/berth-helper".to_owned(),
        "etc/berth/host.toml".to_owned(),
        "dev/console".to_owned(),
        "tmp".to_owned(),
        format!("{moddir}/modules.dep"),
        format!("{moddir}/modules.alias"),
        format!("{moddir}/modules.builtin"),
        format!("{moddir}/kernel/drivers/net/dummy.ko"),
        format!("{moddir}/kernel/drivers/net/vxlan/vxlan.ko"),
    ] {
        assert!(listing.contains(&want), "{want} missing from the initramfs");
    }
    assert_eq!(
        cpio_extract(&image, "etc/berth/host.toml"),
        std::fs::read(&config).unwrap()
    );
    // The record of what was packed, and the end marker as the archive's last entry.
    let record: berth_init::unpack_check::Record =
        serde_json::from_slice(&cpio_extract(&image, "etc/berth/initramfs.json")).unwrap();
    let names_in_order = cpio_names(&image);
    assert_eq!(
        names_in_order.last().map(String::as_str),
        Some("etc/berth/initramfs.end")
    );
    assert_eq!(record.entries, names_in_order.len() as u64);
    assert_eq!(record.memory_mib, memory_mib);
    let baked: Vec<&String> = names_in_order
        .iter()
        .filter(|n| n.starts_with("usr/share/berth/images/0/blobs/"))
        .collect();
    // oci-layout, index.json and the blobs (a directory entry aside).
    assert_eq!(record.baked_files, baked.len() as u64 - 1 + 2);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains(&format!("this image needs about {memory_mib} MiB")),
        "{stderr}"
    );
    assert_eq!(cpio_extract(&image, "init"), std::fs::read(&init).unwrap());
    assert_eq!(
        cpio_extract(&image, "usr/lib/berth/berth-helper"),
        std::fs::read(init.with_file_name("berth-helper")).unwrap()
    );

    // Every module modules.dep names, and every dependency, is in the image; the requested
    // ones have lines, and vxlan's lists its dependencies.
    let dep = String::from_utf8(cpio_extract(&image, &format!("{moddir}/modules.dep"))).unwrap();
    let mut lines = 0;
    for line in dep.lines() {
        let (module, deps) = line.split_once(':').expect("module: deps");
        for path in std::iter::once(module).chain(deps.split_whitespace()) {
            assert!(
                listing.contains(&format!("{moddir}/{path}")),
                "{path} (from modules.dep) is not in the image"
            );
        }
        lines += 1;
    }
    assert!(dep.contains("kernel/drivers/net/dummy.ko:\n"), "{dep}");
    let vxlan = dep
        .lines()
        .find(|l| l.starts_with("kernel/drivers/net/vxlan/vxlan.ko:"))
        .expect("vxlan line");
    assert!(vxlan.contains("kernel/net/ipv4/udp_tunnel.ko"), "{vxlan}");
    assert!(
        vxlan.contains("kernel/net/ipv6/ip6_udp_tunnel.ko"),
        "{vxlan}"
    );
    let ko_files = listing.iter().filter(|p| p.ends_with(".ko")).count();
    assert_eq!(lines, ko_files, "one modules.dep line per module file");
    let alias =
        String::from_utf8(cpio_extract(&image, &format!("{moddir}/modules.alias"))).unwrap();
    assert!(alias.contains("alias rtnl-link-dummy dummy\n"), "{alias}");
}

/// A busybox OCI layout at `dir`, its image named `ref_name`.
fn busybox_layout(dir: &Path, ref_name: &str) {
    berth_imagefs::build::write_busybox_layout(dir, Path::new(STATIC_ELF), ref_name).unwrap();
}

/// An OCI layout at `dir` holding two images: busybox (`full`) and a busybox with only
/// `sh` (`mini`).
fn two_image_layout(dir: &Path) {
    use berth_imagefs::build::{busybox_entries, write_oci_layout};
    let busybox = std::fs::read(STATIC_ELF).unwrap();
    busybox_layout(dir, "full");
    let other = dir.with_extension("tmp");
    let run = berth_imagefs::oci::RunConfig {
        cmd: Some(vec!["sh".into()]),
        ..Default::default()
    };
    write_oci_layout(&other, &busybox_entries(&busybox, &["sh"]), run, "mini").unwrap();
    for blob in std::fs::read_dir(other.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap();
        std::fs::copy(blob.path(), dir.join("blobs/sha256").join(blob.file_name())).unwrap();
    }
    let index = |d: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join("index.json")).unwrap()).unwrap()
    };
    let mut merged = index(dir);
    let second = index(&other)["manifests"][0].clone();
    merged["manifests"].as_array_mut().unwrap().push(second);
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&merged).unwrap()).unwrap();
}

#[test]
fn mistakes_in_images_and_containers_stop_the_build() {
    let work = tempfile::tempdir().unwrap();
    let init = stand_ins(work.path());
    busybox_layout(&work.path().join("bb"), "latest");
    two_image_layout(&work.path().join("two"));
    let good = "version = 1\n\n[[image]]\npath = \"bb\"\nname = \"busybox\"\n\n\
                [[container]]\nname = \"web\"\nimage = \"busybox:latest\"\n\
                command = [\"httpd\", \"-f\"]\nuser = \"nobody\"\n";
    let config = work.path().join("host.toml");
    let build = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = work.path().join("out");
        let _ = std::fs::remove_dir_all(&out);
        berth_build(&config, &out, "UTC", "022", &init)
    };
    let refused = |text: &str, key: &str, message: &str| {
        let out = build(text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}\nbuilt:\n{stderr}");
        assert!(stderr.contains(&format!("key `{key}`")), "{key}: {stderr}");
        assert!(stderr.contains(message), "{message}: {stderr}");
        assert!(!work.path().join("out/manifest.json").exists());
    };
    let out = build(good);
    assert_ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning:"));

    refused(
        &good.replace("image = \"busybox:latest\"", "image = \"nginx:1\""),
        "container[0].image",
        "image \"nginx:1\" is not baked by any [[image]] (the baked images are busybox:latest)",
    );
    refused(
        &good.replace("\"httpd\", ", "\"nginx\", "),
        "container[0].command",
        "program \"nginx\" is not a file in image busybox:latest",
    );
    refused(
        &good.replace("\"nobody\"", "\"www-data\""),
        "container[0].user",
        "user \"www-data\" is not in the image's /etc/passwd",
    );
    refused(
        &good.replace(
            "\n\n[[container]]",
            "\n\n[[image]]\npath = \"two\"\nname = \"busybox:latest\"\nselect = \"full\"\n\n[[container]]",
        ),
        "image[1].name",
        "already baked by image[0]",
    );

    // A layout of two images: `select` picks one, and the selected one is checked.
    let two = good.replace("path = \"bb\"", "path = \"two\"");
    let out = build(&two.replace(
        "name = \"busybox\"\n",
        "name = \"busybox\"\nselect = \"nope\"\n",
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("[[image]] 0") && stderr.contains("\"nope\""),
        "{stderr}"
    );
    refused(
        &two.replace(
            "name = \"busybox\"\n",
            "name = \"busybox\"\nselect = \"mini\"\n",
        ),
        "container[0].command",
        "program \"httpd\" is not a file",
    );

    // The full image selected, with limits above the machine: built, with a warning
    // naming each key.
    let out = build(
        &two.replace(
            "name = \"busybox\"\n",
            "name = \"busybox\"\nselect = \"full\"\n",
        )
        .replace(
            "user = \"nobody\"\n",
            "user = \"nobody\"\nmemory = \"4G\"\ncpus = 2\n",
        ),
    );
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("key `container[0].memory`: 4096 MiB is more than the"),
        "{stderr}"
    );
    assert!(
        stderr.contains("key `container[0].cpus`: 2 is more than the 1 CPU"),
        "{stderr}"
    );
}

#[test]
fn unknown_module_is_named_with_a_suggestion() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("host.toml");
    std::fs::write(&config, "version = 1\n[kernel]\nmodules = [\"dumy\"]\n").unwrap();
    let init = stand_ins(work.path());
    let out = berth_build(&config, &work.path().join("out"), "UTC", "022", &init);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("module `dumy`"), "{stderr}");
    assert!(stderr.contains("did you mean dummy"), "{stderr}");
    assert!(!work.path().join("out/manifest.json").exists());
}

#[test]
fn config_and_init_errors_stop_the_build() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("host.toml");
    std::fs::write(&config, "version = 1\nhostnme = \"x\"\n").unwrap();
    let init = stand_ins(work.path());
    let out = berth_build(&config, &work.path().join("out"), "UTC", "022", &init);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("hostnme"),
        "{stderr}"
    );

    std::fs::write(&config, "version = 1\n").unwrap();
    let out = berth_build(
        &config,
        &work.path().join("out"),
        "UTC",
        "022",
        Path::new("/bin/sh"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dynamically linked"), "{stderr}");

    // An init binary without its helper beside it.
    std::fs::remove_file(init.with_file_name("berth-helper")).unwrap();
    let out = berth_build(&config, &work.path().join("out"), "UTC", "022", &init);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no berth-helper next to the init binary")
            && stderr.contains(&init.with_file_name("berth-helper").display().to_string()),
        "{stderr}"
    );
    assert!(!work.path().join("out/manifest.json").exists());
}
