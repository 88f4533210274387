//! `docker save`: images as one tar that both `docker load` formats read.
//!
//! ```text
//! oci-layout                       {"imageLayoutVersion": "1.0.0"}
//! index.json                       an OCI index naming each image's manifest
//! manifest.json                    docker-archive: [{"Config", "RepoTags", "Layers"}]
//! blobs/sha256/<hex>               manifests, configs and layers, as stored
//! ```
//!
//! This is the layout dockerd 25 and later write. Blobs go out as the store keeps them
//! (layers possibly gzip or zstd compressed), each once however many images share it;
//! every entry has mode 0644, owner 0 and time 0, so the same images make the same bytes.

use std::collections::BTreeSet;
use std::io::Write;

use berth_imagefs::store::Store;
use berth_imagefs::Digest;
use serde_json::json;

use crate::images::{ImageError, Images};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What one image contributes.
pub struct SavedImage {
    pub names: Vec<String>,
    pub manifest: Digest,
    pub manifest_media_type: String,
    pub manifest_size: u64,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

impl Images {
    /// Resolves every name first, so that a missing image is a 404 before any byte is
    /// sent.
    pub fn plan_save(&self, names: &[String]) -> Result<Vec<SavedImage>, ImageError> {
        let store = Store::open(self.dir()).map_err(|e| ImageError::Store(e.to_string()))?;
        let mut out: Vec<SavedImage> = Vec::new();
        for name in names {
            let info = self.find_in(&store, name)?;
            let manifest = store
                .manifest(&info.manifest)
                .map_err(|e| ImageError::Store(e.to_string()))?;
            // Tags asked for by name; all of the image's names when asked by id.
            let tags: Vec<String> = match info
                .names
                .iter()
                .find(|n| crate::handlers::same_image(n, name))
            {
                Some(n) => vec![n.clone()],
                None => info.names.clone(),
            };
            if let Some(seen) = out.iter_mut().find(|s| s.manifest == info.manifest) {
                for t in tags {
                    if !seen.names.contains(&t) {
                        seen.names.push(t);
                    }
                }
                continue;
            }
            let manifest_size = std::fs::metadata(store.blob_path(&info.manifest))
                .map(|m| m.len())
                .map_err(|e| ImageError::Store(e.to_string()))?;
            out.push(SavedImage {
                names: tags,
                manifest: info.manifest,
                manifest_media_type: manifest
                    .media_type
                    .clone()
                    .unwrap_or_else(|| OCI_MANIFEST.to_owned()),
                manifest_size,
                config: manifest.config.digest,
                layers: manifest.layers.iter().map(|l| l.digest).collect(),
            });
        }
        Ok(out)
    }

    /// Writes the archive of `plan` to `out`.
    pub fn write_save(&self, plan: &[SavedImage], out: impl Write) -> std::io::Result<()> {
        let store = Store::open(self.dir()).map_err(std::io::Error::other)?;
        let mut tar = tar::Builder::new(out);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": plan.iter().flat_map(|img| {
                let tags: Vec<&String> = img.names.iter().collect();
                let each = if tags.is_empty() { vec![None] } else { tags.into_iter().map(Some).collect() };
                each.into_iter().map(move |name| {
                    let mut d = json!({
                        "mediaType": img.manifest_media_type,
                        "digest": img.manifest.to_string(),
                        "size": img.manifest_size,
                    });
                    if let Some(n) = name {
                        let full = crate::handlers::normalize_image(n);
                        let tag = full.rsplit_once(':').map(|(_, t)| t.to_owned()).unwrap_or_default();
                        d["annotations"] = json!({
                            "io.containerd.image.name": full,
                            "org.opencontainers.image.ref.name": tag,
                        });
                    }
                    d
                })
            }).collect::<Vec<_>>(),
        });
        let manifest_json: Vec<serde_json::Value> = plan
            .iter()
            .map(|img| {
                json!({
                    "Config": blob_path(&img.config),
                    "RepoTags": img.names,
                    "Layers": img.layers.iter().map(blob_path).collect::<Vec<_>>(),
                })
            })
            .collect();
        append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(&mut tar, "index.json", index.to_string().as_bytes())?;
        append_bytes(
            &mut tar,
            "manifest.json",
            serde_json::Value::from(manifest_json)
                .to_string()
                .as_bytes(),
        )?;
        append_dir(&mut tar, "blobs/")?;
        append_dir(&mut tar, "blobs/sha256/")?;
        let mut written = BTreeSet::new();
        for img in plan {
            for d in std::iter::once(&img.manifest)
                .chain(std::iter::once(&img.config))
                .chain(img.layers.iter())
            {
                if !written.insert(*d) {
                    continue;
                }
                let file = store.open_blob(d).map_err(std::io::Error::other)?;
                let size = file.metadata()?.len();
                let mut header = header(size, 0o644, tar::EntryType::Regular);
                tar.append_data(&mut header, blob_path(d), file)?;
            }
        }
        tar.into_inner()?.flush()
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
    tar.append_data(&mut h, path, bytes)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> std::io::Result<()> {
    let mut h = header(0, 0o755, tar::EntryType::Directory);
    tar.append_data(&mut h, path, std::io::empty())
}
