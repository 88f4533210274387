//! Request bodies too big for memory (`docker load`), streamed to a file.

use std::io::Write;
use std::path::Path;

use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "the upload is over the limit of {limit} bytes (the store's free space bounds it too)"
    )]
    TooLarge { limit: u64 },
    #[error("staging the upload in {dir}: {source}")]
    Stage {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the request body: {0}")]
    Body(String),
}

impl UploadError {
    pub fn status(&self) -> u16 {
        match self {
            UploadError::TooLarge { .. } => 413,
            UploadError::Stage { .. } => 500,
            UploadError::Body(_) => 400,
        }
    }
}

/// Free bytes for an unprivileged writer on `dir`'s filesystem.
fn free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Streams `body` into a new temporary file in `dir` (removed when the returned handle
/// drops), refusing it past `max` bytes or 90 % of the free space.
pub async fn to_file(
    mut body: Incoming,
    dir: &Path,
    max: u64,
) -> Result<tempfile::NamedTempFile, UploadError> {
    let stage = |source| UploadError::Stage {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(stage)?;
    let limit = free_bytes(dir).map_or(max, |free| max.min(free / 10 * 9));
    let mut file = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(dir)
        .map_err(stage)?;
    let mut written: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UploadError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            written += data.len() as u64;
            if written > limit {
                return Err(UploadError::TooLarge { limit });
            }
            // Small synchronous writes on the event loop: the page cache takes them.
            file.write_all(&data).map_err(stage)?;
        }
    }
    file.flush().map_err(stage)?;
    Ok(file)
}
