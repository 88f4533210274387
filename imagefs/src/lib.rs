//! berth's image store: content-addressed blobs, layers unpacked once per
//! `diff_id`, refs, OCI and docker-archive import, overlay mounts, and the
//! `berth image` commands.
//!
//! # Layout on disk
//!
//! ```text
//! <store>/                       /var/lib/berth by default
//! ├── lock                       flock: shared by imports, exclusive by gc
//! ├── refs.lock                  flock: serialises updates of refs.json
//! ├── refs.json                  {"name:tag": "sha256:<manifest>"}, replaced atomically
//! ├── blobs/
//! │   └── sha256/<hex>           manifests, configs and layer blobs as shipped
//! ├── layers/
//! │   └── <diff_id hex>/
//! │       ├── diff/              the unpacked layer in overlayfs lowerdir form
//! │       └── link               its short id (10 base32 characters)
//! ├── l/<id> -> ../layers/<diff_id hex>/diff
//! │                              short names that keep overlay options in one page
//! ├── holds/<name>               a manifest digest in use by a mount or container
//! ├── empty/                     filler lowerdir for one-layer read-only mounts
//! ├── scaffold/                  bottom lowerdir of container rootfs mounts: empty
//! │                              proc/ dev/ sys/ etc/{hostname,hosts,resolv.conf}
//! └── tmp/                       staging: blob-*, layer-*, verify-*, trash-*;
//!                                emptied on open when no other process is using the store
//! ```
//!
//! Names in `blobs/` and `layers/` come only from [`Digest`], whose parser
//! admits nothing but `sha256:` and 64 lowercase hex characters.
//!
//! # Modules
//! - [`digest`]: the strict digest type and hashing readers/writers.
//! - [`mod@reference`]: `name[:tag]` parsing.
//! - [`oci`]: OCI/Docker JSON documents, size limits, ambiguity checks.
//! - [`layer`]: applying a layer tar relative to a directory fd.
//! - [`store`]: the layout above, locks, atomic commits, refs, holds, gc.
//! - [`mod@import`]: OCI layout (dir or tar) and docker-archive import.
//! - [`mount`]: overlay mount plans and mounting.
//! - [`verify`]: re-hashing blobs and re-checking unpacked layers.
//! - [`info`]: what `ls` and `inspect` show.
//! - [`build`]: writing a one-layer OCI layout (the demo and test images).
//! - [`cli`]: `berth image …` as a clap subcommand.
//! - [`text`]: text from images made safe to print (escaped, bounded).
//! - `sys`: the only `unsafe` code, thin syscall wrappers.

pub mod build;
pub mod cli;
pub mod digest;
pub mod import;
pub mod info;
pub mod layer;
pub mod mount;
pub mod oci;
pub mod reference;
pub mod store;
mod sys;
pub mod text;
pub mod verify;

pub use digest::Digest;

/// An error and its sources as one line, `outer: inner: …`. Error types here leave
/// their source out of their own message, but some callers' types (and std's) print
/// it: a source whose text already ends the line is not repeated.
///
/// Each message is passed through [`text::printable`]: a source from another crate
/// (the tar reader's, serde_json's) may quote bytes of the image, and this line goes
/// to a terminal.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let shown = |e: &dyn std::error::Error| text::printable(&e.to_string(), MAX_MESSAGE_CHARS);
    let mut line = shown(err);
    let mut source = err.source();
    while let Some(e) = source {
        let text = shown(e);
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = e.source();
    }
    line
}

/// The most characters of one message in [`error_chain`]'s line.
const MAX_MESSAGE_CHARS: usize = 400;
pub use import::{import, Event, ImportError, ImportOptions, ImportReport};
pub use layer::{apply_layer, apply_staged_layer, LayerError, Limits};
pub use reference::Reference;
pub use store::{Store, StoreError};

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("quiet outer")]
    struct Quiet(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("loud outer: {0}")]
    struct Loud(#[source] std::io::Error);

    #[test]
    fn error_chain_names_each_cause_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(
            super::error_chain(&Quiet(io())),
            "quiet outer: disk on fire"
        );
        assert_eq!(super::error_chain(&Loud(io())), "loud outer: disk on fire");
    }

    #[test]
    fn error_chain_escapes_what_a_source_quotes() {
        let raw = std::io::Error::other("bad header \x1b]0;owned\x07\nnext line");
        let line = super::error_chain(&Quiet(raw));
        assert!(line.chars().all(|c| !c.is_control()), "{line:?}");
        assert!(line.starts_with("quiet outer: bad header "), "{line}");
    }
}
