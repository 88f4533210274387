//! The image endpoints, served from the image store directly.
//!
//! Images are the API server's own business: listing, inspecting, tagging, removing and
//! loading them are store operations (`berth_imagefs`), safe beside PID 1's containers
//! because the store's locks and holds already make concurrent users safe, and hostile
//! archives are parsed here, in a child PID 1 can restart, never in PID 1. All store
//! work is blocking file I/O, run on tokio's blocking pool.
//!
//! Names are matched as Docker matches them: `busybox`, `busybox:latest` and
//! `docker.io/library/busybox:latest` are one image; an image's id is its config's
//! digest (`sha256:…`, or any unique prefix of its hex), as `docker images` shows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_imagefs::info::{self, ImageInfo};
use berth_imagefs::store::Store;
use berth_imagefs::Digest;
use serde::Serialize;

use crate::handlers::{familiar_image, normalize_image};
use crate::query::Filters;

/// Why an image request failed, in Docker's status classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
}

impl ImageError {
    pub fn status(&self) -> u16 {
        match self {
            ImageError::NotFound(_) => 404,
            ImageError::Conflict(_) => 409,
            ImageError::Invalid(_) => 400,
            ImageError::Store(_) => 500,
        }
    }
}

fn store_err(e: impl std::fmt::Display) -> ImageError {
    ImageError::Store(e.to_string())
}

/// The store, by its directory.
#[derive(Debug, Clone)]
pub struct Images {
    dir: PathBuf,
}

/// One row of `/images/json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    pub id: String,
    pub parent_id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: i64,
    pub size: u64,
    pub shared_size: i64,
    pub virtual_size: u64,
    pub labels: BTreeMap<String, String>,
    pub containers: i64,
}

/// `/images/{name}/json`, in the fields clients read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    pub created: String,
    pub docker_version: String,
    pub author: String,
    pub config: ImageConfig,
    pub architecture: String,
    pub os: String,
    pub size: u64,
    pub virtual_size: u64,
    pub graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    pub metadata: Metadata,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    pub hostname: String,
    pub user: String,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: String,
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    pub labels: BTreeMap<String, String>,
    pub volumes: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    pub name: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    pub last_tag_time: String,
}

/// One entry of `DELETE /images/{name}`'s answer.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub enum DeleteItem {
    Untagged(String),
    Deleted(String),
}

/// The `filters` `/images/json` takes.
pub const IMAGE_FILTERS: &[&str] = &["reference", "dangling", "label"];

impl Images {
    pub fn new(dir: impl Into<PathBuf>) -> Images {
        Images { dir: dir.into() }
    }

    fn store(&self) -> Result<Store, ImageError> {
        Store::open(&self.dir).map_err(store_err)
    }

    /// Every image, newest first.
    pub fn list(&self, filters: &Filters) -> Result<Vec<ImageSummary>, ImageError> {
        let store = self.store()?;
        let mut all = info::list(&store).map_err(store_err)?;
        all.retain(|i| {
            filters.any("reference", |r| {
                i.names.iter().any(|n| reference_matches(r, n))
            }) && filters.labels_match(&i.labels)
                && filters.any("dangling", |d| (d == "true") == i.names.is_empty())
        });
        // As dockerd, a reference filter also narrows each image's names to those it
        // matched (one row per name in `docker images`).
        if let Some(patterns) = filters.get("reference").filter(|p| !p.is_empty()) {
            for i in &mut all {
                i.names
                    .retain(|n| patterns.iter().any(|p| reference_matches(p, n)));
            }
        }
        let mut rows: Vec<ImageSummary> = all.iter().map(summary).collect();
        rows.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(rows)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// [`Images::find`] for the other modules of the crate.
    pub(crate) fn find_in(&self, store: &Store, name: &str) -> Result<ImageInfo, ImageError> {
        self.find(store, name)
    }

    /// The image a client named: a name (normalized as Docker's), or an id.
    fn find(&self, store: &Store, name: &str) -> Result<ImageInfo, ImageError> {
        let all = info::list(store).map_err(store_err)?;
        let wanted = normalize_image(name);
        if let Some(i) = all
            .iter()
            .find(|i| i.names.iter().any(|n| normalize_image(n) == wanted))
        {
            return Ok(i.clone());
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let hits: Vec<&ImageInfo> = all
                .iter()
                .filter(|i| i.config.hex().starts_with(hex) || i.manifest.hex().starts_with(hex))
                .collect();
            match hits.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                _ => {
                    return Err(ImageError::Invalid(format!(
                        "{name} matches more than one image: give more of the id"
                    )))
                }
            }
        }
        Err(ImageError::NotFound(name.to_owned()))
    }

    pub fn inspect(&self, name: &str) -> Result<ImageInspect, ImageError> {
        let store = self.store()?;
        let i = self.find(&store, name)?;
        let (os, arch) = i.platform.split_once('/').unwrap_or(("linux", "amd64"));
        let arch = arch.split('/').next().unwrap_or(arch);
        Ok(ImageInspect {
            id: i.config.to_string(),
            repo_tags: i.names.clone(),
            repo_digests: repo_digests(&i),
            parent: String::new(),
            comment: String::new(),
            created: i
                .created
                .clone()
                .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned()),
            docker_version: String::new(),
            author: String::new(),
            config: ImageConfig {
                hostname: String::new(),
                user: i.user.clone().unwrap_or_default(),
                env: i.env.clone(),
                cmd: i.cmd.clone(),
                entrypoint: i.entrypoint.clone(),
                working_dir: i.working_dir.clone().unwrap_or_default(),
                exposed_ports: i
                    .exposed_ports
                    .iter()
                    .map(|p| (p.clone(), serde_json::json!({})))
                    .collect(),
                labels: i.labels.clone(),
                volumes: BTreeMap::new(),
            },
            architecture: arch.to_owned(),
            os: os.to_owned(),
            size: i.size,
            virtual_size: i.size,
            graph_driver: GraphDriver {
                name: "overlay2".to_owned(),
                data: BTreeMap::new(),
            },
            root_fs: RootFs {
                kind: "layers".to_owned(),
                layers: i.layers.iter().map(|l| l.diff_id.to_string()).collect(),
            },
            metadata: Metadata {
                last_tag_time: "0001-01-01T00:00:00Z".to_owned(),
            },
        })
    }

    /// `POST /images/{name}/tag?repo=…&tag=…`; the image's id.
    pub fn tag(&self, name: &str, repo: &str, tag: Option<&str>) -> Result<String, ImageError> {
        let store = self.store()?;
        let image = self.find(&store, name)?;
        // Stored as Docker shows it: `docker.io/library/x` is `x`.
        let repo = familiar_image(repo);
        let full = match tag.filter(|t| !t.is_empty()) {
            Some(t) => format!("{repo}:{t}"),
            None => repo.to_owned(),
        };
        let reference = berth_imagefs::reference::Reference::parse(&full)
            .map_err(|e| ImageError::Invalid(e.to_string()))?;
        store
            .set_ref(&reference, &image.manifest)
            .map_err(store_err)?;
        Ok(image.config.to_string())
    }

    /// `DELETE /images/{name}`: untags a name, and deletes the image once no name and no
    /// container holds it. An id with several names, or an image a container uses, is
    /// a conflict unless `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<Vec<DeleteItem>, ImageError> {
        let store = self.store()?;
        let image = self.find(&store, name)?;
        let by_name = image
            .names
            .iter()
            .find(|n| normalize_image(n) == normalize_image(name))
            .cloned();
        let untag: Vec<String> = match by_name {
            Some(n) => vec![n],
            None if image.names.len() > 1 && !force => {
                return Err(ImageError::Conflict(format!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    short(&image.config)
                )))
            }
            None => image.names.clone(),
        };
        let holders: Vec<String> = store
            .holds()
            .map_err(store_err)?
            .into_iter()
            .filter(|(_, d)| *d == image.manifest)
            .map(|(holder, _)| holder)
            .collect();
        let last_name = image.names.len() <= untag.len();
        if last_name && !holders.is_empty() && !force {
            return Err(ImageError::Conflict(format!(
                "conflict: unable to remove repository reference {name:?} (must force) - container {} is using its referenced image {}",
                holders.join(", "),
                short(&image.config)
            )));
        }
        let mut items = Vec::new();
        for n in &untag {
            let reference = berth_imagefs::reference::Reference::parse(n)
                .map_err(|e| ImageError::Invalid(e.to_string()))?;
            store.remove_ref(&reference).map_err(store_err)?;
            items.push(DeleteItem::Untagged(n.clone()));
        }
        if last_name && holders.is_empty() {
            store.gc().map_err(store_err)?;
            items.push(DeleteItem::Deleted(image.config.to_string()));
        }
        Ok(items)
    }

    /// Imports an archive (docker-archive or OCI layout tar) at `path`; the names loaded.
    pub fn load(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        let store = self.store()?;
        let opts = berth_imagefs::import::ImportOptions::default();
        let report =
            berth_imagefs::import::import(&store, path, &opts, &mut |_| {}).map_err(|e| {
                ImageError::Invalid(format!(
                    "loading the archive: {}",
                    berth_imagefs::error_chain(&e)
                ))
            })?;
        // Kept as Docker shows names: a `docker.io/library/…` name (which dockerd's own
        // archives carry) becomes its familiar form.
        let familiar = familiar_image(&report.name).to_owned();
        if familiar != report.name {
            let parse = |n: &str| {
                berth_imagefs::reference::Reference::parse(n)
                    .map_err(|e| ImageError::Invalid(e.to_string()))
            };
            store
                .set_ref(&parse(&familiar)?, &report.manifest)
                .map_err(store_err)?;
            store.remove_ref(&parse(&report.name)?).map_err(store_err)?;
        }
        Ok(vec![familiar])
    }

    /// The store's temporary directory, where uploads are staged.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.join("uploads")
    }

    /// How many images the store holds, for `/info`.
    pub fn count(&self) -> u32 {
        self.store()
            .and_then(|s| info::list(&s).map_err(store_err))
            .map(|l| l.len() as u32)
            .unwrap_or(0)
    }
}

fn short(d: &Digest) -> String {
    d.hex().get(..12).unwrap_or_default().to_owned()
}

fn repo_digests(i: &ImageInfo) -> Vec<String> {
    i.names
        .iter()
        .map(|n| {
            let repo = n.rsplit_once(':').map_or(n.as_str(), |(r, _)| r);
            format!("{repo}@{}", i.manifest)
        })
        .collect()
}

fn summary(i: &ImageInfo) -> ImageSummary {
    ImageSummary {
        id: i.config.to_string(),
        parent_id: String::new(),
        repo_tags: i.names.clone(),
        repo_digests: repo_digests(i),
        created: i
            .created
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
            .unwrap_or(0),
        size: i.size,
        shared_size: -1,
        virtual_size: i.size,
        labels: i.labels.clone(),
        containers: -1,
    }
}

/// The `reference` filter: `busybox`, `busybox:*`, `*/app:1`, as Docker's glob on the
/// familiar name.
fn reference_matches(pattern: &str, name: &str) -> bool {
    let familiar = familiar_image(name);
    let (repo, _) = familiar.rsplit_once(':').unwrap_or((familiar, "latest"));
    glob(pattern, familiar) || glob(pattern, repo)
}

/// `*` matches any run of characters but `/`; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(after) = text.strip_prefix(head) else {
                return false;
            };
            (0..=after.len())
                .take_while(|&i| !after[..i].contains('/'))
                .filter(|&i| after.is_char_boundary(i))
                .any(|i| glob(rest, &after[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filters_glob_the_familiar_name() {
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busybox:*", "busybox:1.36"));
        assert!(reference_matches("*/app", "me/app:1"));
        assert!(!reference_matches("*", "me/app:1"), "* does not cross /");
        assert!(!reference_matches("busy", "busybox:latest"));
    }
}
