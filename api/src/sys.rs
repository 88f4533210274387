//! The API server's only `unsafe`: registering the API channel with tokio's reactor.

use berth_proto::Channel;
use tokio::io::unix::AsyncFd;

/// The channel, registered for readiness with the current tokio runtime.
pub fn register(channel: Channel) -> std::io::Result<AsyncFd<Channel>> {
    // SAFETY: `Channel` owns its descriptor (an `OwnedFd`) for its whole life, never
    // replaces it, and returns that same descriptor from every `as_raw_fd`; the
    // `AsyncFd` takes the channel by value, so the descriptor stays open until it is
    // dropped.
    unsafe { AsyncFd::register(channel) }.map_err(std::io::Error::from)
}
