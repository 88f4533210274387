//! Helpers shared by the integration tests: a raw tar writer that can say
//! anything (absolute names, `..`, links anywhere), OCI layout builders,
//! root checks and a sentinel outside the layer root.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_imagefs::Digest;
use tar::{EntryType, Header};

/// Skip (or, with BERTH_REQUIRE_ROOT=1, fail) a test that needs root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            if std::env::var("BERTH_REQUIRE_ROOT").as_deref() == Ok("1") {
                panic!("this test needs root and BERTH_REQUIRE_ROOT=1");
            }
            eprintln!("skipping: needs root");
            return;
        }
    };
}

/// One crafted tar entry.
#[derive(Clone)]
pub struct E {
    pub kind: EntryType,
    pub name: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: Vec<u8>,
    pub dev: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
}

impl E {
    fn new(kind: EntryType, name: &str) -> E {
        E {
            kind,
            name: name.as_bytes().to_vec(),
            link: None,
            mode: if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            data: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    pub fn file(name: &str, data: &[u8]) -> E {
        let mut e = E::new(EntryType::Regular, name);
        e.data = data.to_vec();
        e
    }
    pub fn dir(name: &str) -> E {
        E::new(EntryType::Directory, name)
    }
    pub fn symlink(name: &str, target: &str) -> E {
        let mut e = E::new(EntryType::Symlink, name);
        e.link = Some(target.as_bytes().to_vec());
        e.mode = 0o777;
        e
    }
    pub fn hardlink(name: &str, target: &str) -> E {
        let mut e = E::new(EntryType::Link, name);
        e.link = Some(target.as_bytes().to_vec());
        e
    }
    pub fn node(kind: EntryType, name: &str, major: u32, minor: u32) -> E {
        let mut e = E::new(kind, name);
        e.dev = (major, minor);
        e
    }
    pub fn mode(mut self, m: u32) -> E {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> E {
        self.mtime = t;
        self
    }
    pub fn xattr(mut self, k: &str, v: &[u8]) -> E {
        self.pax.push((format!("SCHILY.xattr.{k}"), v.to_vec()));
        self
    }
}

/// Write entries as a tar, names and link targets byte for byte.
pub fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut pax = e.pax.clone();
        if e.name.len() > 99 {
            pax.push(("path".into(), e.name.clone()));
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        {
            let old = h.as_old_mut();
            let n = e.name.len().min(99);
            old.name = [0; 100];
            old.name[..n].copy_from_slice(&e.name[..n]);
        }
        if let Some(l) = &e.link {
            h.set_link_name_literal(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).unwrap()
}

/// A scratch area: `root/` (the layer), `outside/sentinel` and
/// `outside/dir/` that nothing may touch.
pub struct Scratch {
    pub _tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub root: PathBuf,
    pub outside: PathBuf,
    snapshot: Vec<(PathBuf, u32, u64, i64, u64, Vec<u8>)>,
}

impl Scratch {
    pub fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::create_dir(outside.join("dir")).unwrap();
        fs::write(outside.join("sentinel"), b"do not touch").unwrap();
        fs::write(outside.join("dir/inner"), b"inner").unwrap();
        let mut s = Scratch {
            _tmp: tmp,
            base,
            root,
            outside,
            snapshot: Vec::new(),
        };
        s.snapshot = s.take_snapshot();
        s
    }

    fn take_snapshot(&self) -> Vec<(PathBuf, u32, u64, i64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.base.clone()];
        while let Some(p) = stack.pop() {
            for e in fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                let path = e.path();
                if path == self.root {
                    continue;
                }
                let m = fs::symlink_metadata(&path).unwrap();
                let content = if m.is_file() {
                    fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                let xattr = xattr_names(&path);
                out.push((
                    path.clone(),
                    m.mode(),
                    m.nlink(),
                    m.mtime(),
                    m.uid() as u64,
                    [content, xattr].concat(),
                ));
                if m.is_dir() {
                    stack.push(path);
                }
            }
        }
        // base itself: a new entry in it would show in the listing above,
        // but its mode must not change either.
        let m = fs::symlink_metadata(&self.base).unwrap();
        out.push((
            self.base.clone(),
            m.mode(),
            m.nlink(),
            0,
            m.uid() as u64,
            Vec::new(),
        ));
        out.sort();
        out
    }

    /// Panic if anything outside `root/` changed.
    pub fn assert_outside_untouched(&self) {
        let now = self.take_snapshot();
        assert_eq!(
            now, self.snapshot,
            "something outside the layer root changed"
        );
    }
}

fn xattr_names(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for k in xattr::list(p).unwrap() {
        out.extend_from_slice(k.as_encoded_bytes());
        out.push(b'=');
        out.extend(xattr::get(p, &k).unwrap().unwrap_or_default());
        out.push(0);
    }
    out
}

/// Build an OCI image layout directory from layer blobs (as shipped) and
/// their uncompressed tars; returns the manifest digest.
pub struct OciImage {
    pub dir: PathBuf,
    pub manifest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub layer_blobs: Vec<(Digest, Vec<u8>, &'static str)>,
}

pub fn media_type_of(blob: &[u8]) -> &'static str {
    match blob {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}

pub fn config_json(diff_ids: &[Digest], arch: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "echo hi"], "Env": ["PATH=/bin"], "WorkingDir": "/", "ExposedPorts": {"80/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
    }))
    .unwrap()
}

/// Write `bytes` as a blob of the layout at `dir`.
pub fn put_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    d
}

pub fn descriptor(mt: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": mt, "digest": Digest::of(bytes).to_string(), "size": bytes.len()})
}

/// Layers given as (uncompressed tar, shipped blob).
pub fn oci_layout(dir: &Path, layers: &[(Vec<u8>, Vec<u8>)], ref_name: Option<&str>) -> OciImage {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let diff_ids: Vec<Digest> = layers.iter().map(|(t, _)| Digest::of(t)).collect();
    let config = config_json(&diff_ids, "amd64");
    put_blob(dir, &config);
    let mut lds = Vec::new();
    let mut layer_blobs = Vec::new();
    for (_, blob) in layers {
        let d = put_blob(dir, blob);
        let mt = media_type_of(blob);
        lds.push(descriptor(mt, blob));
        layer_blobs.push((d, blob.clone(), mt));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": lds,
    }))
    .unwrap();
    let md = put_blob(dir, &manifest);
    let mut mdesc = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    if let Some(r) = ref_name {
        mdesc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": r});
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [mdesc]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    OciImage {
        dir: dir.to_path_buf(),
        manifest: md,
        manifest_bytes: manifest,
        config_bytes: config,
        layer_blobs,
    }
}

/// Pack a directory tree as a tar file (for OCI-layout-as-tar tests).
pub fn tar_dir(src: &Path, out: &Path) {
    let f = fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    b.append_dir_all(".", src).unwrap();
    b.finish().unwrap();
}
