//! Unpack throughput against GNU `tar -x`, side by side in one run.
//!
//! ```text
//! cargo run --release -p berth-imagefs --example bench_unpack -- [MiB] [files]
//! ```
//!
//! First, one layer of many files (default 256 MiB in 2,000 files plus 20,000
//! small ones), written plain, gzip and zstd. For each, GNU tar extracts it
//! (`tar -x`, `tar -xzf`, `tar --zstd -xf`) and berth applies it as an import
//! does: `apply_staged_layer` on the staged blob, which sha256-hashes the stream
//! for the diff_id unless the layer is plain (the import hashed that blob while
//! staging it, and a plain blob's digest is its diff_id). Plain runs once more
//! with the hash, as `berth image verify` re-checks a stored blob. Each run
//! unpacks into a fresh directory, with the page cache warm and a `sync`
//! before it; best of three. Prints MB/s, berth/tar ratios, and the
//! decode-only speed of berth's reader for each format.
//!
//! Then the whole import path on a three-layer image (see [`import_image`]):
//! each layer's unpack inside the import beside `tar -x` of the same blob, and
//! the import's total time. That figure includes committing the layer, whose
//! `syncfs` waits for the disk's writeback: on a disk it shows durability's
//! cost, on a tmpfs the unpack alone.
//!
//! `BERTH_BENCH_DIR` chooses where to unpack (default /var/tmp; /dev/shm takes
//! the disk's writeback noise out of the comparison). The 64-layer overlay
//! mount time is measured by the root test `real_tools::mount_64_and_128_layers`.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_imagefs::build::{write_oci_layout_of, ShippedLayer};
use berth_imagefs::digest::Digest;
use berth_imagefs::import::{import, Event, ImportOptions};
use berth_imagefs::layer::{apply_layer, apply_staged_layer, Limits};
use berth_imagefs::oci::{RunConfig, MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD};
use berth_imagefs::Store;

/// A layer of `files` files sharing `mib` MiB, plus `small` files of 100 bytes,
/// every path under `prefix` (so that layers built with different prefixes differ).
fn build_tar(mib: usize, files: usize, small: usize, prefix: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let per = (mib << 20) / files;
    let mut seed = 0x9e3779b97f4a7c15u64;
    // half-compressible content: runs of random bytes and repeats
    let mut content = vec![0u8; per];
    for d in 0..files / 100 + 1 {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, format!("{prefix}d{d}/"), &[][..])
            .unwrap();
    }
    for i in 0..files {
        for chunk in content.chunks_mut(64) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let v = seed.to_le_bytes();
            for (j, c) in chunk.iter_mut().enumerate() {
                *c = if j < 24 {
                    v[j % 8]
                } else {
                    b'a' + (j % 7) as u8
                };
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(per as u64);
        b.append_data(
            &mut h,
            format!("{prefix}d{}/f{i}", i / 100),
            content.as_slice(),
        )
        .unwrap();
    }
    for i in 0..small {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(100);
        b.append_data(
            &mut h,
            format!("{prefix}d{}/small{i}", i % (files / 100 + 1)),
            &[b'x'; 100][..],
        )
        .unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

fn sync() {
    Command::new("sync").status().unwrap();
}

fn time_tar(archive: &Path, flags: &[&str], dest: &Path) -> Duration {
    let _ = fs::remove_dir_all(dest);
    fs::create_dir_all(dest).unwrap();
    sync();
    let start = Instant::now();
    let st = Command::new("tar")
        .args(flags)
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .status()
        .unwrap();
    let d = start.elapsed();
    assert!(st.success());
    d
}

/// `staged`: the archive's own sha256, as an import knows it for a blob it has
/// just staged (the digest was computed while the blob was written); `None`
/// for a stored blob, which is hashed while applied.
fn time_berth(archive: &Path, staged: Option<Digest>, dest: &Path) -> Duration {
    let _ = fs::remove_dir_all(dest);
    fs::create_dir_all(dest).unwrap();
    sync();
    let start = Instant::now();
    let f = fs::File::open(archive).unwrap();
    let root = OwnedFd::from(fs::File::open(dest).unwrap());
    let limits = Limits::default();
    match staged {
        Some(digest) => apply_staged_layer(&f, digest, root.as_fd(), &limits, &mut |_| {}),
        None => apply_layer(f, root.as_fd(), &limits, &mut |_| {}),
    }
    .unwrap();
    start.elapsed()
}

/// berth's decompressing reader alone, into nothing: what the decoder costs, apart from
/// creating files (which is where a whole unpack spends most of its time). Best of three.
fn time_decode(file: &Path) -> Duration {
    use std::io::Read;
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let (_, mut r) = berth_imagefs::layer::decompress(fs::File::open(file).unwrap()).unwrap();
        let mut buf = vec![0u8; 256 << 10];
        while r.read(&mut buf).unwrap() > 0 {}
        best = best.min(start.elapsed());
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let files: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let base = std::env::var("BERTH_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".to_owned());
    let dir = tempfile::tempdir_in(&base).unwrap();
    let d = dir.path();
    let tar = build_tar(mib, files, 20_000, "");
    let mb = tar.len() as f64 / 1e6;
    fs::write(d.join("l.tar"), &tar).unwrap();
    fs::write(d.join("l.tar.gz"), gzip(&tar)).unwrap();
    fs::write(d.join("l.tar.zst"), zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    println!(
        "layer: {mb:.0} MB uncompressed, {} entries",
        files + 20_000 + files / 100 + 1
    );
    println!("unpacking into {base}");
    println!(
        "{:<13} {:>10} {:>10} {:>7} {:>16}",
        "format", "tar MB/s", "berth MB/s", "ratio", "decode-only MB/s"
    );
    // "import": the blob was just staged, so its digest is known and a plain layer
    // is not hashed again. "rehash": a blob that has been on disk (`berth image
    // verify`, or a layer unpacked again from a stored blob) is hashed while applied.
    for (name, file, flags, rehash) in [
        ("plain import", "l.tar", vec!["-xf"], false),
        ("plain rehash", "l.tar", vec!["-xf"], true),
        ("gzip", "l.tar.gz", vec!["-xzf"], false),
        ("zstd", "l.tar.zst", vec!["--zstd", "-xf"], false),
    ] {
        let a = d.join(file);
        let known = (!rehash).then(|| Digest::of(&fs::read(&a).unwrap()));
        // warm the cache and take the best of three for each
        let mut t = Duration::MAX;
        let mut b = Duration::MAX;
        for _ in 0..3 {
            t = t.min(time_tar(&a, &flags, &d.join("out-tar")));
            b = b.min(time_berth(&a, known, &d.join("out-berth")));
        }
        let (tr, br) = (mb / t.as_secs_f64(), mb / b.as_secs_f64());
        let decode = mb / time_decode(&a).as_secs_f64();
        println!(
            "{name:<13} {tr:>10.0} {br:>10.0} {:>6.2}x {decode:>16.0}",
            br / tr
        );
    }
    import_image(d, mib, files);
}

/// The whole import path on a multi-layer image: an OCI layout of three
/// different layers, a third of the size each, shipped plain, gzip and zstd, is
/// imported into a fresh store (blobs copied and verified, layers unpacked,
/// synced and committed). Each layer's unpack, from `LayerUnpacking` to
/// `LayerUnpacked` (which includes committing it), is set beside `tar -x` of
/// the same blob. Best of three.
fn import_image(d: &Path, mib: usize, files: usize) {
    let tars: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .map(|p| build_tar(mib / 3, files / 3, 20_000 / 3, p))
        .collect();
    let blobs = [
        tars[0].clone(),
        gzip(&tars[1]),
        zstd::encode_all(&tars[2][..], 3).unwrap(),
    ];
    let kinds = [
        ("plain", MT_OCI_LAYER, vec!["-xf"]),
        ("gzip", MT_OCI_LAYER_GZIP, vec!["-xzf"]),
        ("zstd", MT_OCI_LAYER_ZSTD, vec!["--zstd", "-xf"]),
    ];
    let layers: Vec<ShippedLayer<'_>> = tars
        .iter()
        .zip(&blobs)
        .zip(&kinds)
        .map(|((tar, blob), kind)| ShippedLayer {
            diff_id: Digest::of(tar),
            blob,
            media_type: kind.1,
        })
        .collect();
    let img = d.join("img");
    write_oci_layout_of(&img, &layers, RunConfig::default(), "bench:latest").unwrap();
    let total_mb = tars.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    println!();
    println!(
        "import of a {}-layer image, {total_mb:.0} MB uncompressed, into a fresh store:",
        tars.len()
    );

    let mut unpack = [Duration::MAX; 3];
    let mut whole = Duration::MAX;
    for _ in 0..3 {
        let store_dir = d.join("store");
        let _ = fs::remove_dir_all(&store_dir);
        let store = Store::open(&store_dir).unwrap();
        sync();
        let mut started = [None; 3];
        let mut took = [Duration::MAX; 3];
        let start = Instant::now();
        import(&store, &img, &ImportOptions::default(), &mut |e| match e {
            Event::LayerUnpacking { index } => started[*index] = Some(Instant::now()),
            Event::LayerUnpacked { index, .. } => {
                took[*index] = started[*index].map_or(Duration::MAX, |t| t.elapsed())
            }
            _ => {}
        })
        .unwrap();
        whole = whole.min(start.elapsed());
        for (best, t) in unpack.iter_mut().zip(took) {
            *best = (*best).min(t);
        }
    }
    println!(
        "{:<13} {:>10} {:>10} {:>7}",
        "layer", "tar MB/s", "berth MB/s", "ratio"
    );
    for ((tar, layer), ((name, _, flags), berth)) in
        tars.iter().zip(&layers).zip(kinds.iter().zip(unpack))
    {
        let blob = img.join("blobs/sha256").join(Digest::of(layer.blob).hex());
        let mut t = Duration::MAX;
        for _ in 0..3 {
            t = t.min(time_tar(&blob, flags, &d.join("out-tar")));
        }
        let mb = tar.len() as f64 / 1e6;
        let (tr, br) = (mb / t.as_secs_f64(), mb / berth.as_secs_f64());
        println!("{name:<13} {tr:>10.0} {br:>10.0} {:>6.2}x", br / tr);
    }
    println!(
        "whole import (copy and verify blobs, unpack, commit): {:.0} ms, {:.0} MB/s",
        whole.as_secs_f64() * 1e3,
        total_mb / whole.as_secs_f64()
    );
}
