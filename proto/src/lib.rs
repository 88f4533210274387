//! The one protocol between berth's PID 1 and its child processes (netd, the image
//! importer, the config reader, the API server).
//!
//! PID 1 must never believe bytes it has not bounded and typed. So every child talks to
//! it over one `AF_UNIX` `SOCK_SEQPACKET` socketpair ([`Channel`]), where:
//!
//! - one `sendmsg` is one message: the kernel keeps the boundaries, so there is no framing
//!   to get wrong, and a reader never waits for "the rest" of a message;
//! - a message is JSON of a typed envelope ([`Message`]): a [`Message::Request`] or
//!   [`Message::Response`] paired by a [`RequestId`], or an unsolicited [`Message::Event`];
//! - a message is at most [`MAX_MESSAGE`] bytes, and carries at most [`MAX_FDS`] file
//!   descriptors (`SCM_RIGHTS`): a log's pipe, a container's stdio, a pty. Bulk data (logs,
//!   image tars, attach streams) goes through such descriptors, never through messages;
//! - anything else (a message too long, too many descriptors, bytes that do not parse as
//!   the expected type) is a [`ChannelError`] the receiver treats as a broken peer: PID 1
//!   kills and restarts the child, never guesses.
//!
//! Descriptors received are always owned ([`std::os::fd::OwnedFd`], close-on-exec), so a
//! message that is refused closes them instead of leaking them into PID 1.
//!
//! Files: [`message`] (the envelope and request ids), [`api`] (the API server's messages), [`channel`] (the socket, sending and
//! receiving), `sys` (the one `recvmsg` call and its control-message parsing).

pub mod api;
pub mod channel;
pub mod message;
mod sys;

pub use channel::{Channel, ChannelError, Received, CHANNEL_FD_ENV, MAX_FDS, MAX_MESSAGE};
pub use message::{IdGen, Message, RequestId};
