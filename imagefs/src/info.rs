//! What `ls` and `inspect` show about a stored image.

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerInfo {
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
    pub unpacked: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageInfo {
    pub names: Vec<String>,
    pub manifest: Digest,
    pub config: Digest,
    pub platform: String,
    pub created: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub layers: Vec<LayerInfo>,
    /// Sum of the layer blob sizes.
    pub size: u64,
}

/// Describe the image `manifest`; `names` are the refs that point at it.
pub fn describe(
    store: &Store,
    manifest: &Digest,
    names: Vec<String>,
) -> Result<ImageInfo, StoreError> {
    let m = store.manifest(manifest)?;
    let cfg = store.config(&m)?;
    let run = cfg.config.clone().unwrap_or_default();
    let mut layers = Vec::new();
    for (l, d) in m.layers.iter().zip(&cfg.rootfs.diff_ids) {
        layers.push(LayerInfo {
            digest: l.digest,
            diff_id: *d,
            media_type: l.media_type.clone(),
            size: l.size,
            unpacked: store.has_layer(d)?,
        });
    }
    let mut platform = format!("{}/{}", cfg.os, cfg.architecture);
    if let Some(v) = &cfg.variant {
        platform.push('/');
        platform.push_str(v);
    }
    Ok(ImageInfo {
        names,
        manifest: *manifest,
        config: m.config.digest,
        platform,
        created: cfg.created.clone(),
        entrypoint: run.entrypoint,
        cmd: run.cmd,
        env: run.env.unwrap_or_default(),
        working_dir: run.working_dir.filter(|s| !s.is_empty()),
        user: run.user.filter(|s| !s.is_empty()),
        exposed_ports: run
            .exposed_ports
            .map(|p| p.into_keys().collect())
            .unwrap_or_default(),
        labels: run.labels.unwrap_or_default(),
        size: layers.iter().map(|l| l.size).sum(),
        layers,
    })
}

/// Every ref'd image, grouped by manifest.
pub fn list(store: &Store) -> Result<Vec<ImageInfo>, StoreError> {
    let mut by_manifest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for (name, d) in store.refs()? {
        by_manifest.entry(d).or_default().push(name);
    }
    by_manifest
        .into_iter()
        .map(|(d, names)| describe(store, &d, names))
        .collect()
}
