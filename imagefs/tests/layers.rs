//! Layer application: whiteouts, links, metadata, and the malicious-archive
//! suite (containerd's TestBreakouts classes plus whiteout tricks), each
//! with a sentinel outside the layer root that must stay unchanged.

mod common;

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use berth_imagefs::layer::{apply_layer, apply_staged_layer, LayerError, LayerStats, Limits};
use berth_imagefs::verify::compare;
use berth_imagefs::Digest;
use common::{gzip, tar_of, zstd, Scratch, E};
use tar::EntryType;

/// Applies `tar` onto `s.root` as a stream, and onto a second scratch area from a
/// file with its digest known (the mapped path an import takes for a plain
/// layer), and checks that both ways agree: the
/// same tree and digest, or the same kind of error, with nothing outside either
/// root touched. Every test below thus covers both readers.
fn apply_with(s: &Scratch, tar: &[u8], limits: Limits) -> Result<LayerStats, LayerError> {
    let fd = OwnedFd::from(fs::File::open(&s.root).unwrap());
    let streamed = apply_layer(tar, fd.as_fd(), &limits, &mut |_| {});

    let mapped_scratch = Scratch::new();
    let file = tempfile::tempfile().unwrap();
    (&file).write_all(tar).unwrap();
    let mapped_fd = OwnedFd::from(fs::File::open(&mapped_scratch.root).unwrap());
    // The digest a caller that just wrote the file would know: for a plain
    // tar this takes the mapped path, for a compressed one the stream.
    let mapped = apply_staged_layer(
        &file,
        Digest::of(tar),
        mapped_fd.as_fd(),
        &limits,
        &mut |_| {},
    );
    mapped_scratch.assert_outside_untouched();
    match (&streamed, &mapped) {
        (Ok(a), Ok(b)) => {
            assert_eq!((a.diff_id, a.entries), (b.diff_id, b.entries));
            if let Err(e) = compare(fd.as_fd(), mapped_fd.as_fd(), "") {
                panic!("the mapped layer differs from the streamed one: {e}");
            }
        }
        (Err(a), Err(b)) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "streamed: {a}, mapped: {b}"
        ),
        (a, b) => panic!("streamed: {a:?}, mapped: {b:?}"),
    }
    streamed
}

fn apply(s: &Scratch, tar: &[u8]) -> Result<LayerStats, LayerError> {
    apply_with(s, tar, Limits::default())
}

fn is_whiteout(p: &std::path::Path) -> bool {
    let m = fs::symlink_metadata(p).unwrap();
    m.file_type().is_char_device() && m.rdev() == 0
}

fn opaque(p: &std::path::Path) -> Option<Vec<u8>> {
    xattr::get(p, "trusted.overlay.opaque").unwrap()
}

// ---------- semantics ----------

#[test]
fn files_dirs_links_and_metadata() {
    let s = Scratch::new();
    let tar = tar_of(&[
        E::dir("etc/").mode(0o750).mtime(1_500_000_000),
        E::file("etc/passwd", b"root:x:0:0\n")
            .mode(0o640)
            .mtime(1_400_000_000),
        E::symlink("etc/link", "passwd"),
        E::symlink("abs", "/etc/passwd"),
        E::hardlink("etc/hard", "etc/passwd"),
        E::file("implied/parent/file", b"x"),
        E::file("bin/su", b"su").mode(0o4755),
    ]);
    let stats = apply(&s, &tar).unwrap();
    assert_eq!(stats.diff_id, Digest::of(&tar));
    assert_eq!(stats.tar_bytes, tar.len() as u64);
    let r = &s.root;
    assert_eq!(fs::read(r.join("etc/passwd")).unwrap(), b"root:x:0:0\n");
    let pm = fs::metadata(r.join("etc/passwd")).unwrap();
    assert_eq!(pm.mode() & 0o7777, 0o640);
    assert_eq!(pm.mtime(), 1_400_000_000);
    assert_eq!(pm.nlink(), 2);
    assert_eq!(fs::metadata(r.join("etc/hard")).unwrap().ino(), pm.ino());
    let dm = fs::metadata(r.join("etc")).unwrap();
    assert_eq!(dm.mode() & 0o7777, 0o750);
    assert_eq!(
        dm.mtime(),
        1_500_000_000,
        "directory mtime is set after its children"
    );
    assert_eq!(
        fs::read_link(r.join("etc/link")).unwrap().to_str(),
        Some("passwd")
    );
    assert_eq!(
        fs::read_link(r.join("abs")).unwrap().to_str(),
        Some("/etc/passwd")
    );
    assert!(fs::metadata(r.join("implied/parent")).unwrap().is_dir());
    assert_eq!(
        fs::metadata(r.join("bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    s.assert_outside_untouched();
}

#[test]
fn owners_and_xattrs() {
    require_root!();
    let s = Scratch::new();
    let tar = tar_of(&[
        E::file("f", b"x")
            .owner(1234, 5678)
            .mode(0o2755)
            .xattr("user.note", b"hello"),
        E::symlink("l", "f").owner(42, 43),
        E::file("cap", b"x")
            .xattr("trusted.overlay.redirect", b"/etc")
            .xattr("security.selinux", b"x"),
    ]);
    apply(&s, &tar).unwrap();
    let m = fs::metadata(s.root.join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(
        m.mode() & 0o7777,
        0o2755,
        "mode set after chown keeps set-id bits"
    );
    let l = fs::symlink_metadata(s.root.join("l")).unwrap();
    assert_eq!((l.uid(), l.gid()), (42, 43));
    assert_eq!(
        xattr::get(s.root.join("f"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"hello"[..])
    );
    let all: Vec<_> = xattr::list(s.root.join("cap")).unwrap().collect();
    assert!(
        !all.iter()
            .any(|k| k.to_string_lossy().starts_with("trusted.")),
        "trusted.* from an image is dropped: {all:?}"
    );
}

/// Files are created with their mode and skip `fchown`/`fchmod` where those would
/// change nothing: the result must be the same as setting everything explicitly,
/// including modes the umask would strip and a root-owned file in a set-group-ID
/// directory (which would otherwise inherit the directory's group).
#[test]
fn modes_and_owners_survive_the_shortcuts() {
    require_root!();
    let s = Scratch::new();
    let tar = tar_of(&[
        E::dir("shared/").owner(0, 4321).mode(0o2775),
        E::file("shared/root-file", b"x").mode(0o644),
        E::file("shared/theirs", b"x").owner(7, 4321).mode(0o640),
        E::file("open", b"x").mode(0o666),
        E::file("readonly", b"x").mode(0o444),
        E::file("plain", b"x").mode(0o644),
        E::file("setuid", b"x").mode(0o4755),
    ]);
    apply(&s, &tar).unwrap();
    let meta = |p: &str| {
        let m = fs::metadata(s.root.join(p)).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    assert_eq!(meta("shared"), (0o2775, 0, 4321));
    assert_eq!(meta("shared/root-file"), (0o644, 0, 0));
    assert_eq!(meta("shared/theirs"), (0o640, 7, 4321));
    assert_eq!(meta("open"), (0o666, 0, 0), "the umask must not strip bits");
    assert_eq!(meta("readonly"), (0o444, 0, 0));
    assert_eq!(meta("plain"), (0o644, 0, 0));
    assert_eq!(meta("setuid"), (0o4755, 0, 0));
}

#[test]
fn whiteouts_and_opaque_dirs() {
    require_root!(); // trusted.* xattrs and mknod need root
    let s = Scratch::new();
    let tar = tar_of(&[
        E::file("gone-later", b"x"),
        E::dir("d/"),
        E::file("d/keep", b"k"),
        E::file("d/.wh..wh..opq", b""),
        E::file(".wh.deleted", b""),
        E::file("sub/.wh.removed", b""),
        E::file(".wh.gone-later", b""),
        E::symlink("sl", "/outside"),
        E::file(".wh.sl", b""),
        E::file(".wh..wh.plnk", b""),
        E::file("d2/.wh..wh..opq", b""),
    ]);
    apply(&s, &tar).unwrap();
    let r = &s.root;
    assert!(is_whiteout(&r.join("deleted")));
    assert!(is_whiteout(&r.join("sub/removed")));
    assert!(
        is_whiteout(&r.join("gone-later")),
        "a whiteout replaces an entry of the same layer"
    );
    assert!(
        is_whiteout(&r.join("sl")),
        "a whiteout of a symlink replaces the symlink itself"
    );
    assert_eq!(opaque(&r.join("d")).as_deref(), Some(&b"y"[..]));
    assert_eq!(
        opaque(&r.join("d2")).as_deref(),
        Some(&b"y"[..]),
        "opaque marker creates its dir"
    );
    assert_eq!(fs::read(r.join("d/keep")).unwrap(), b"k");
    assert!(!r.join(".wh..wh.plnk").exists());
    assert!(!r.join(".wh.deleted").exists());
    s.assert_outside_untouched();
}

#[test]
fn devices_and_fifos_as_docker() {
    require_root!();
    let s = Scratch::new();
    let tar = tar_of(&[
        E::node(EntryType::Char, "dev/null", 1, 3).mode(0o666),
        E::node(EntryType::Block, "dev/sda", 8, 0).mode(0o660),
        E::node(EntryType::Fifo, "run/fifo", 0, 0).mode(0o600),
    ]);
    apply(&s, &tar).unwrap();
    let n = fs::symlink_metadata(s.root.join("dev/null")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(n.mode() & 0o7777, 0o666);
    assert!(fs::symlink_metadata(s.root.join("dev/sda"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(fs::symlink_metadata(s.root.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    s.assert_outside_untouched();
}

#[test]
fn compressed_layers_hash_the_uncompressed_stream() {
    let tar = tar_of(&[E::file("a", &vec![7u8; 100_000]), E::file("b", b"b")]);
    for blob in [gzip(&tar), zstd(&tar), tar.clone()] {
        let s = Scratch::new();
        let st = apply(&s, &blob).unwrap();
        assert_eq!(st.diff_id, Digest::of(&tar));
        assert_eq!(fs::read(s.root.join("a")).unwrap().len(), 100_000);
    }
}

#[test]
fn entry_replacement_rules() {
    let s = Scratch::new();
    let tar = tar_of(&[
        E::dir("x/"),
        E::file("x/child", b"c"),
        E::file("x", b"now a file"), // a file replaces a whole directory
        E::file("y", b"file"),
        E::dir("y/"), // and a directory replaces a file
        E::dir("z/"),
        E::file("z/keep", b"k"),
        E::dir("z/").mode(0o700), // dir over dir keeps its contents
    ]);
    apply(&s, &tar).unwrap();
    assert_eq!(fs::read(s.root.join("x")).unwrap(), b"now a file");
    assert!(fs::metadata(s.root.join("y")).unwrap().is_dir());
    assert_eq!(fs::read(s.root.join("z/keep")).unwrap(), b"k");
    assert_eq!(
        fs::metadata(s.root.join("z")).unwrap().mode() & 0o7777,
        0o700
    );
}

#[test]
fn replaced_directories_are_resolved_again() {
    // Entries of several directories interleaved, so that each directory's fd is
    // reused from the applier's cache; then directories are replaced under it.
    let s = Scratch::new();
    let tar = tar_of(&[
        E::dir("a/"),
        E::dir("e/"),
        E::file("a/1", b"a1"),
        E::file("e/1", b"e1"),
        E::file("a/2", b"a2"),
        E::symlink("a", "e"), // replaces directory a: a/... now means e/...
        E::file("e/2", b"e2"),
        E::file("a/3", b"through the symlink"),
        E::dir("e/sub/"),
        E::file("e/sub/x", b"x"),
        E::file("e/sub", b"now a file"), // replaces a directory made by an entry
        E::file("e/.wh.1", b""),         // a whiteout removes e/1
        E::file("a/4", b"still through the symlink"),
    ]);
    apply(&s, &tar).unwrap();
    let r = &s.root;
    assert!(fs::symlink_metadata(r.join("a"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(r.join("e/3")).unwrap(), b"through the symlink");
    assert_eq!(
        fs::read(r.join("e/4")).unwrap(),
        b"still through the symlink"
    );
    assert_eq!(fs::read(r.join("e/2")).unwrap(), b"e2");
    assert_eq!(fs::read(r.join("e/sub")).unwrap(), b"now a file");
    assert!(is_whiteout(&r.join("e/1")));
}

// ---------- malicious archives ----------

/// Apply `entries` with a sentinel outside the root; whether the apply
/// errors or not, nothing outside may change.
fn breakout(entries: Vec<E>) -> (Scratch, Result<LayerStats, LayerError>) {
    let s = Scratch::new();
    let tar = tar_of(&entries);
    let r = apply(&s, &tar);
    s.assert_outside_untouched();
    (s, r)
}

fn outside_abs(s: &Scratch) -> String {
    s.outside.to_str().unwrap().to_string()
}

#[test]
fn absolute_and_dotdot_names_stay_inside() {
    let s0 = Scratch::new();
    let abs = format!("{}/sentinel", outside_abs(&s0));
    drop(s0);
    for name in [
        "/outside/sentinel".to_string(),
        "../outside/sentinel".to_string(),
        "../../../../../../../../outside/sentinel".to_string(),
        "a/../../outside/sentinel".to_string(),
        abs.clone(),
    ] {
        let (s, r) = breakout(vec![E::file(&name, b"pwned")]);
        r.unwrap();
        assert!(
            s.root.join("outside/sentinel").exists()
                || s.root.join(abs.trim_start_matches('/')).exists()
        );
    }
}

#[test]
fn symlinked_parents_resolve_inside() {
    let s = Scratch::new();
    let out = outside_abs(&s);
    drop(s);
    let cases: Vec<Vec<E>> = vec![
        // absolute symlink, then a file through it
        vec![E::symlink("x", &out), E::file("x/sentinel", b"pwned")],
        // relative symlink climbing out
        vec![
            E::symlink("x", "../../../../../outside"),
            E::file("x/sentinel", b"pwned"),
        ],
        // a chain of symlinks
        vec![
            E::symlink("a", "b"),
            E::symlink("b", &out),
            E::file("a/sentinel", b"pwned"),
        ],
        vec![
            E::symlink("a", "b/c"),
            E::symlink("b", ".."),
            E::file("a/../outside/sentinel", b"pwned"),
        ],
        // symlink to the root directory, then deep paths
        vec![
            E::symlink("root", "/"),
            E::file(&format!("root{out}/sentinel"), b"pwned"),
        ],
        // symlink in a nested parent
        vec![
            E::dir("d/"),
            E::symlink("d/up", "../.."),
            E::file("d/up/outside/sentinel", b"pwned"),
        ],
        // directory entries through a symlink
        vec![
            E::symlink("x", &out),
            E::dir("x/dir/").mode(0o777),
            E::dir("x/new/"),
        ],
        // chmod of the outside dir through a symlinked path
        vec![E::symlink("x", &out), E::dir("x/").mode(0o777)],
    ];
    for c in cases {
        let (_s, _r) = breakout(c);
    }
}

#[test]
fn symlink_then_file_of_the_same_name() {
    let s = Scratch::new();
    let target = format!("{}/sentinel", outside_abs(&s));
    drop(s);
    let (s, r) = breakout(vec![E::symlink("f", &target), E::file("f", b"pwned")]);
    r.unwrap();
    assert_eq!(fs::read(s.root.join("f")).unwrap(), b"pwned");
    let (s, r) = breakout(vec![
        E::file("f", b"one"),
        E::symlink("f", "../outside/sentinel"),
        E::file("f", b"pwned").mode(0o777),
    ]);
    r.unwrap();
    assert_eq!(fs::read(s.root.join("f")).unwrap(), b"pwned");
    // a hardlink entry over a symlink replaces the symlink, not its target
    let (_s, _r) = breakout(vec![
        E::file("a", b"a"),
        E::symlink("f", &target),
        E::hardlink("f", "a"),
    ]);
}

#[test]
fn hardlinks_cannot_point_out() {
    let s = Scratch::new();
    let out = outside_abs(&s);
    drop(s);
    let cases = vec![
        vec![E::hardlink("h", &format!("{out}/sentinel"))],
        vec![E::hardlink("h", "../outside/sentinel")],
        vec![E::hardlink("h", "../../../../../../../../../etc/passwd")],
        vec![E::symlink("s", &out), E::hardlink("h", "s/sentinel")],
        vec![
            E::symlink("s", &format!("{out}/sentinel")),
            E::hardlink("h", "s"),
            E::file("h", b"pwned"),
        ],
        vec![E::hardlink("h", "")],
        vec![E::dir("d/"), E::hardlink("h", "d")],
    ];
    for c in cases {
        let (s, _r) = breakout(c);
        // whatever was made inside, it is not the sentinel's inode
        if let Ok(m) = fs::symlink_metadata(s.root.join("h")) {
            assert_ne!(
                m.ino(),
                fs::metadata(s.outside.join("sentinel")).unwrap().ino()
            );
        }
    }
    // a hardlink to a symlink links the symlink itself
    let (s, r) = breakout(vec![
        E::symlink("s", "../outside/sentinel"),
        E::hardlink("h", "s"),
    ]);
    r.unwrap();
    assert!(fs::symlink_metadata(s.root.join("h"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn dir_replacing_symlink_and_the_reverse() {
    let s = Scratch::new();
    let out = outside_abs(&s);
    drop(s);
    let (s, r) = breakout(vec![
        E::symlink("d", &out),
        E::dir("d/").mode(0o777),
        E::file("d/sentinel", b"pwned"),
    ]);
    r.unwrap();
    assert!(fs::symlink_metadata(s.root.join("d")).unwrap().is_dir());
    let (s, r) = breakout(vec![
        E::dir("d/"),
        E::file("d/x", b"x"),
        E::symlink("d", &out),
        E::file("d/sentinel", b"pwned"),
        E::file("d/dir/inner", b"pwned"),
    ]);
    // the later file goes through the symlink, resolved inside the root
    let _ = r;
    assert!(fs::symlink_metadata(s.root.join("d"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn whiteout_tricks_are_rejected_or_confined() {
    let s = Scratch::new();
    let out = outside_abs(&s);
    drop(s);
    for name in [
        ".wh..", ".wh...", ".wh.", "d/.wh..", "d/.wh...", "../.wh..", "/.wh...",
    ] {
        let (_s, r) = breakout(vec![E::dir("d/"), E::file(name, b"")]);
        assert!(
            matches!(r, Err(LayerError::BadEntry { .. })),
            "{name} should be rejected, got {r:?}"
        );
    }
    // whiteouts that name things outside through links or dots stay inside
    let confined = vec![
        vec![E::file("../.wh.sentinel", b"")],
        vec![E::file(&format!("{out}/.wh.sentinel"), b"")],
        vec![E::symlink("s", &out), E::file("s/.wh.sentinel", b"")],
        vec![E::symlink("s", &out), E::file("s/.wh..wh..opq", b"")],
        vec![E::symlink("s", "../outside"), E::file("s/.wh.dir", b"")],
        vec![
            E::symlink("s", &format!("{out}/sentinel")),
            E::file(".wh.s", b""),
        ],
        vec![E::file(".wh..wh..opq", b"")],
    ];
    for c in confined {
        let (_s, _r) = breakout(c);
    }
}

#[test]
fn bad_entries_are_refused() {
    // a non-directory naming the root
    let (_s, r) = breakout(vec![E::file("./", b"x")]);
    assert!(r.is_err());
    let (_s, r) = breakout(vec![E::file("../..", b"x")]);
    assert!(r.is_err());
    // out-of-range ids
    let (_s, r) = breakout(vec![E::file("f", b"x").owner(u64::from(u32::MAX), 0)]);
    assert!(matches!(r, Err(LayerError::BadEntry { .. })));
}

// ---------- budgets ----------

#[test]
fn decompression_bomb_stops_at_the_byte_budget() {
    let tar = tar_of(&[E::file("zeros", &vec![0u8; 8 << 20])]);
    let bomb = gzip(&tar);
    assert!(
        bomb.len() < 100_000,
        "a real bomb: {} compressed bytes",
        bomb.len()
    );
    let s = Scratch::new();
    let r = apply_with(
        &s,
        &bomb,
        Limits {
            max_bytes: 1 << 20,
            max_entries: 100,
        },
    );
    assert!(
        matches!(r, Err(LayerError::Budget { what, .. }) if what.contains("bytes")),
        "{r:?}"
    );
    s.assert_outside_untouched();
}

#[test]
fn entry_budget() {
    let entries: Vec<E> = (0..500).map(|i| E::file(&format!("f{i}"), b"")).collect();
    let s = Scratch::new();
    let r = apply_with(
        &s,
        &tar_of(&entries),
        Limits {
            max_bytes: 1 << 30,
            max_entries: 100,
        },
    );
    assert!(
        matches!(
            r,
            Err(LayerError::Budget {
                what: "entries",
                ..
            })
        ),
        "{r:?}"
    );
    assert!(r.unwrap_err().to_string().contains("budget of 100 entries"));
}

#[test]
fn sparse_file_counts_at_its_full_size() {
    // A GNU sparse entry: 512 bytes of data stored, 4 GiB logical size.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_path("sparse").unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(512);
    {
        let g = h.as_gnu_mut().unwrap();
        let real: u64 = 4 << 30;
        // one 512-byte chunk at the very end: a hole before it
        g.sparse[0]
            .offset
            .copy_from_slice(format!("{:011o}\0", real - 512).as_bytes());
        g.sparse[0].numbytes = *b"00000001000\0"; // 512 = 0o1000
        let s = format!("{real:011o}\0");
        g.realsize.copy_from_slice(s.as_bytes());
    }
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[1u8; 512][..]).unwrap();
    let tar = b.into_inner().unwrap();
    let s = Scratch::new();
    let r = apply_with(
        &s,
        &tar,
        Limits {
            max_bytes: 1 << 30,
            max_entries: 100,
        },
    );
    assert!(matches!(r, Err(LayerError::Budget { .. })), "{r:?}");
}

#[test]
fn truncated_and_garbage_streams_fail_cleanly() {
    let tar = tar_of(&[E::file("a", &[1u8; 5000])]);
    let s = Scratch::new();
    assert!(apply(&s, &tar[..1000]).is_err());
    // the content is all there but the padding after it is cut off
    let s = Scratch::new();
    assert!(apply(&s, &tar[..512 + 5000]).is_err());
    // a symlink whose header claims content that is not there
    let mut long = tar_of(&[E::symlink("l", "target")]);
    long[124..135].copy_from_slice(b"00000010000");
    let sum: u32 = long[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    long[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let s = Scratch::new();
    assert!(apply(&s, &long[..1024]).is_err());
    let s = Scratch::new();
    let gz = gzip(&tar);
    assert!(apply(&s, &gz[..gz.len() / 2]).is_err());
    let s = Scratch::new();
    assert!(apply(&s, &[0x1f, 0x8b, 1, 2, 3, 4]).is_err());
    let s = Scratch::new();
    assert!(matches!(
        apply(&s, b"BZh91AY&SY"),
        Err(LayerError::UnsupportedCompression("bzip2"))
    ));
}

/// A layer cut anywhere says "truncated", whether plain, gzip or zstd, and by either
/// reader (`apply` checks that the mapped one agrees).
#[test]
fn a_layer_cut_short_says_truncated() {
    // "a": header at 0, content 512..5512, padding to 5632; "b": header at 5632.
    let tar = tar_of(&[E::file("a", &[1u8; 5000]), E::file("b", b"x")]);
    let (gz, zs) = (gzip(&tar), zstd(&tar));
    let cuts: [(&str, &[u8]); 7] = [
        ("inside the first header", &tar[..300]),
        ("inside the second header", &tar[..5632 + 100]),
        ("inside a file's content", &tar[..1000]),
        ("inside the padding", &tar[..5600]),
        ("gzip, halfway", &gz[..gz.len() / 2]),
        ("gzip, in its trailer", &gz[..gz.len() - 4]),
        ("zstd, halfway", &zs[..zs.len() / 2]),
    ];
    for (cut, bytes) in cuts {
        let s = Scratch::new();
        let err = apply(&s, bytes).expect_err(cut);
        assert!(matches!(err, LayerError::Truncated(_)), "{cut}: {err:?}");
        let line = berth_imagefs::error_chain(&err);
        assert!(line.starts_with("the layer is truncated"), "{cut}: {line}");
    }
    // Garbage in the middle is damage, not truncation.
    let mut bad = tar.clone();
    bad[5632..5632 + 512].fill(b'z');
    let s = Scratch::new();
    let err = apply(&s, &bad).unwrap_err();
    assert!(!matches!(err, LayerError::Truncated(_)), "{err:?}");
}
