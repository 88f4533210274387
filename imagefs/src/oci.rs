//! OCI and Docker image documents: parsing with size limits and the
//! ambiguity checks of the image-spec.
//!
//! Every document read from outside goes through [`read_limited`] (or an
//! equivalent size check) before `serde_json` sees it, and digests inside
//! are [`Digest`]s, so a malformed digest fails the parse itself.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Largest manifest or index accepted (containerd uses the same bound).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// Most layers an image may have; overlayfs stacks at most 500 and
/// Docker has long refused more than 127.
pub const MAX_LAYERS: usize = 128;
/// Nested indexes followed at most this deep.
pub const MAX_INDEX_DEPTH: usize = 4;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge { what: String, limit: u64 },
    #[error("reading {what}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {what}")]
    Parse {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} is both an index and a manifest")]
    Ambiguous { what: String },
    #[error("{what} is neither an index nor a manifest")]
    NotADocument { what: String },
    #[error("{what} has media type \"{found}\" but was referenced as \"{expected}\"")]
    MediaTypeMismatch {
        what: String,
        expected: String,
        found: String,
    },
    #[error("{what} has unsupported media type \"{media_type}\"")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{what} has unsupported schema version {version}")]
    SchemaVersion { what: String, version: u64 },
    #[error("{what} has {count} layers, more than the limit of {limit}")]
    TooManyLayers {
        what: String,
        count: usize,
        limit: usize,
    },
}

/// A string from a document, as an error message quotes it.
fn shown(s: &str) -> String {
    crate::text::printable(s, crate::text::MAX_SHOWN)
}

/// Read at most `limit` bytes; more is an error, not a truncation.
pub fn read_limited(mut r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>, OciError> {
    let mut buf = Vec::new();
    (&mut r)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| OciError::Read {
            what: what.to_string(),
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(OciError::TooLarge {
            what: what.to_string(),
            limit,
        });
    }
    Ok(buf)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut it = s.split('/');
        let os = it.next().filter(|s| !s.is_empty())?;
        let arch = it.next().filter(|s| !s.is_empty())?;
        let variant = it.next().map(str::to_string);
        if it.next().is_some() {
            return None;
        }
        Some(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant,
        })
    }

    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    /// Does a candidate described by `other` satisfy this wanted platform?
    /// A wanted variant must match; no wanted variant accepts any.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get("org.opencontainers.image.ref.name")
            .map(String::as_str)
    }

    /// The full name `docker save` (25+) and containerd record, if any.
    pub fn full_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get("io.containerd.image.name")
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A parsed index or image manifest.
#[derive(Debug, Clone)]
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

/// Only the keys that decide what a document is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    layers: Option<serde::de::IgnoredAny>,
    config: Option<serde::de::IgnoredAny>,
    fs_layers: Option<serde::de::IgnoredAny>,
}

fn is_index_type(mt: &str) -> bool {
    mt == MT_OCI_INDEX || mt == MT_DOCKER_LIST
}

fn is_manifest_type(mt: &str) -> bool {
    mt == MT_OCI_MANIFEST || mt == MT_DOCKER_MANIFEST
}

/// Parse an index or manifest. `referenced_as` is the media type of the
/// descriptor that pointed here, if any; it must agree with the
/// document's own `mediaType` and shape (CVE-2021-41190).
pub fn parse_document(
    bytes: &[u8],
    referenced_as: Option<&str>,
    what: &str,
) -> Result<Document, OciError> {
    let parse_err = |source| OciError::Parse {
        what: what.to_string(),
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(parse_err)?;
    let has_index_keys = probe.manifests.is_some();
    let has_manifest_keys =
        probe.layers.is_some() || probe.config.is_some() || probe.fs_layers.is_some();
    if has_index_keys && has_manifest_keys {
        return Err(OciError::Ambiguous { what: what.into() });
    }
    if probe.fs_layers.is_some() {
        return Err(OciError::UnsupportedMediaType {
            what: what.into(),
            media_type: "docker schema 1".into(),
        });
    }
    if let (Some(found), Some(expected)) = (probe.media_type.as_deref(), referenced_as) {
        if found != expected {
            return Err(OciError::MediaTypeMismatch {
                what: what.into(),
                expected: shown(expected),
                found: shown(found),
            });
        }
    }
    let declared = probe.media_type.as_deref().or(referenced_as);
    if let Some(mt) = declared {
        let shape_ok =
            (has_index_keys && is_index_type(mt)) || (has_manifest_keys && is_manifest_type(mt));
        if !shape_ok {
            if !is_index_type(mt) && !is_manifest_type(mt) {
                return Err(OciError::UnsupportedMediaType {
                    what: what.into(),
                    media_type: shown(mt),
                });
            }
            return Err(OciError::MediaTypeMismatch {
                what: what.into(),
                expected: shown(mt),
                found: if has_index_keys {
                    "an index"
                } else {
                    "a manifest"
                }
                .into(),
            });
        }
    }
    let doc = if has_index_keys {
        Document::Index(serde_json::from_slice(bytes).map_err(parse_err)?)
    } else if has_manifest_keys {
        Document::Manifest(serde_json::from_slice(bytes).map_err(parse_err)?)
    } else {
        return Err(OciError::NotADocument { what: what.into() });
    };
    let version = match &doc {
        Document::Index(i) => i.schema_version,
        Document::Manifest(m) => m.schema_version,
    };
    if version != 2 {
        return Err(OciError::SchemaVersion {
            what: what.into(),
            version,
        });
    }
    if let Document::Manifest(m) = &doc {
        check_manifest(m, what)?;
    }
    Ok(doc)
}

fn check_manifest(m: &Manifest, what: &str) -> Result<(), OciError> {
    if m.layers.len() > MAX_LAYERS {
        return Err(OciError::TooManyLayers {
            what: what.into(),
            count: m.layers.len(),
            limit: MAX_LAYERS,
        });
    }
    for l in &m.layers {
        if !is_layer_type(&l.media_type) {
            return Err(OciError::UnsupportedMediaType {
                what: format!("layer {} of {what}", l.digest),
                media_type: shown(&l.media_type),
            });
        }
    }
    Ok(())
}

/// Layer media types we can unpack: plain, gzip or zstd tars, OCI or
/// Docker, including the non-distributable variants. Encrypted or other
/// layers are refused.
pub fn is_layer_type(mt: &str) -> bool {
    matches!(
        mt,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

/// The image configuration (only what berth uses; unknown keys ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// Parse an image config and check it against its manifest.
pub fn parse_config(bytes: &[u8], layers: usize, what: &str) -> Result<ImageConfig, ConfigError> {
    let cfg: ImageConfig = serde_json::from_slice(bytes).map_err(|source| ConfigError::Parse {
        what: what.into(),
        source,
    })?;
    if cfg.rootfs.kind != "layers" {
        return Err(ConfigError::RootFsType {
            what: what.into(),
            kind: shown(&cfg.rootfs.kind),
        });
    }
    if cfg.rootfs.diff_ids.len() != layers {
        return Err(ConfigError::LayerCount {
            what: what.into(),
            diff_ids: cfg.rootfs.diff_ids.len(),
            layers,
        });
    }
    Ok(cfg)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("parsing {what}")]
    Parse {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} has rootfs type \"{kind}\", not \"layers\"")]
    RootFsType { what: String, kind: String },
    #[error("{what} lists {diff_ids} diff_ids for {layers} layers")]
    LayerCount {
        what: String,
        diff_ids: usize,
        layers: usize,
    },
}

/// One entry of a docker-archive `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DockerArchiveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

pub fn parse_docker_manifest(bytes: &[u8]) -> Result<Vec<DockerArchiveEntry>, OciError> {
    let entries: Vec<DockerArchiveEntry> =
        serde_json::from_slice(bytes).map_err(|source| OciError::Parse {
            what: "manifest.json".into(),
            source,
        })?;
    for e in &entries {
        if e.layers.len() > MAX_LAYERS {
            return Err(OciError::TooManyLayers {
                what: "manifest.json".into(),
                count: e.layers.len(),
                limit: MAX_LAYERS,
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn manifest_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_MANIFEST}","config":{{"mediaType":"{MT_OCI_CONFIG}","digest":"{D}","size":0}},"layers":[{{"mediaType":"{MT_OCI_LAYER_GZIP}","digest":"{D}","size":0}}]}}"#
        )
    }

    #[test]
    fn parses_manifest_and_index() {
        let m = manifest_json();
        assert!(matches!(
            parse_document(m.as_bytes(), Some(MT_OCI_MANIFEST), "m").unwrap(),
            Document::Manifest(_)
        ));
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MT_OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        assert!(matches!(
            parse_document(i.as_bytes(), None, "i").unwrap(),
            Document::Index(_)
        ));
    }

    #[test]
    fn rejects_ambiguous_and_mismatched() {
        let both = format!(
            r#"{{"schemaVersion":2,"manifests":[],"config":{{"mediaType":"{MT_OCI_CONFIG}","digest":"{D}","size":0}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_document(both.as_bytes(), None, "x"),
            Err(OciError::Ambiguous { .. })
        ));
        let m = manifest_json();
        assert!(matches!(
            parse_document(m.as_bytes(), Some(MT_OCI_INDEX), "x"),
            Err(OciError::MediaTypeMismatch { .. })
        ));
        let bad_digest = m.replacen(D, "sha256:../../etc/passwd", 1);
        assert!(matches!(
            parse_document(bad_digest.as_bytes(), None, "x"),
            Err(OciError::Parse { .. })
        ));
        let encrypted = m.replace(
            MT_OCI_LAYER_GZIP,
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        );
        assert!(matches!(
            parse_document(encrypted.as_bytes(), None, "x"),
            Err(OciError::UnsupportedMediaType { .. })
        ));
        assert!(matches!(
            parse_document(b"{}", None, "x"),
            Err(OciError::NotADocument { .. })
        ));
        let v1 = m.replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert!(matches!(
            parse_document(v1.as_bytes(), None, "x"),
            Err(OciError::SchemaVersion { .. })
        ));
    }

    #[test]
    fn limits_sizes() {
        let big = [b' '; 100];
        assert!(matches!(
            read_limited(&big[..], 99, "x"),
            Err(OciError::TooLarge { .. })
        ));
        assert_eq!(read_limited(&big[..], 100, "x").unwrap().len(), 100);
    }

    #[test]
    fn config_checks_layer_count() {
        let c = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{D}"]}},"config":{{"Entrypoint":null,"Cmd":["sh"]}}}}"#
        );
        assert!(parse_config(c.as_bytes(), 1, "c").is_ok());
        assert!(matches!(
            parse_config(c.as_bytes(), 2, "c"),
            Err(ConfigError::LayerCount { .. })
        ));
    }

    #[test]
    fn platform_parse() {
        assert_eq!(
            Platform::parse("linux/amd64"),
            Some(Platform::linux_amd64())
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8")
                .unwrap()
                .variant
                .as_deref(),
            Some("v8")
        );
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("a/b/c/d").is_none());
    }
}
