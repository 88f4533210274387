//! [`Channel`]: one end of a `SOCK_SEQPACKET` socketpair carrying typed messages and file
//! descriptors.
//!
//! PID 1 keeps its ends non-blocking ([`Channel::set_nonblocking`]) and polls them with its
//! other sources: [`Channel::recv`] then returns [`Received::Nothing`] instead of waiting,
//! and [`Channel::send`] fails with [`ChannelError::Full`] instead of blocking on a child
//! that stopped reading (a peer PID 1 treats as broken). Children may block.
//!
//! A child finds its end as the descriptor named by [`CHANNEL_FD_ENV`]
//! ([`Channel::from_env`]).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{
    self, sendmsg, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::message::Message;
use crate::sys;

/// The longest message, in bytes of JSON. Well under the socket's send buffer, so that a
/// message never fails for size alone; anything bigger goes through a descriptor.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// The most descriptors one message may carry.
pub const MAX_FDS: usize = 8;
/// The environment variable through which a child learns the number of its channel's
/// descriptor.
pub const CHANNEL_FD_ENV: &str = "BERTH_CHANNEL_FD";

/// Why a message could not be sent or received. Every receive error but
/// [`ChannelError::Io`] is the peer's fault: the receiver stops believing it.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("creating the socketpair: {0}")]
    Pair(#[source] nix::Error),
    #[error("channel fd from ${CHANNEL_FD_ENV}: {0}")]
    Env(String),
    #[error("channel fd {fd}: {source}")]
    Adopt {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
    #[error("channel fd {fd} is not a SOCK_SEQPACKET socket")]
    NotSeqpacket { fd: RawFd },
    #[error("encoding a message: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("message of {len} bytes is over the limit of {MAX_MESSAGE}")]
    TooLong { len: usize },
    #[error("{count} descriptors in one message, over the limit of {MAX_FDS}")]
    TooManyFds { count: usize },
    #[error("the peer is not reading: its receive queue is full")]
    Full,
    #[error("the peer has closed the channel")]
    Closed,
    #[error("channel i/o: {0}")]
    Io(#[source] std::io::Error),
    #[error("received a message over the limit of {MAX_MESSAGE} bytes")]
    ReceivedTooLong,
    #[error("received more than {MAX_FDS} descriptors in one message")]
    ReceivedTooManyFds,
    #[error("received a malformed message ({len} bytes): {source}")]
    Malformed {
        len: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// What one [`Channel::recv`] got.
#[derive(Debug)]
pub enum Received<T> {
    /// A message and the descriptors that came with it.
    Message(T, Vec<OwnedFd>),
    /// Nothing is waiting (non-blocking channels only).
    Nothing,
    /// The peer closed its end; nothing more will come.
    Closed,
}

/// One end of a channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair of channels, both close-on-exec. The spawner of a child keeps one
    /// and hands the other to the child ([`Channel::into_fd`]).
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(ChannelError::Pair)?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Wraps a descriptor that must be one end of a `SOCK_SEQPACKET` socketpair.
    pub fn from_fd(fd: OwnedFd) -> Result<Channel, ChannelError> {
        match socket::getsockopt(&fd, sockopt::SockType) {
            Ok(SockType::SeqPacket) => Ok(Channel { fd }),
            _ => Err(ChannelError::NotSeqpacket { fd: fd.as_raw_fd() }),
        }
    }

    /// The channel a child inherited: the descriptor whose number is in
    /// [`CHANNEL_FD_ENV`]. Close-on-exec is set on it, so that it goes no further.
    pub fn from_env() -> Result<Channel, ChannelError> {
        let value =
            std::env::var(CHANNEL_FD_ENV).map_err(|_| ChannelError::Env("not set".to_owned()))?;
        Channel::from_env_value(&value)
    }

    /// [`Channel::from_env`] once the variable is read: adopts descriptor number `value`.
    fn from_env_value(value: &str) -> Result<Channel, ChannelError> {
        let raw: RawFd = value
            .parse()
            .map_err(|_| ChannelError::Env(format!("{value:?} is not a descriptor number")))?;
        let fd =
            sys::adopt_inherited(raw).map_err(|source| ChannelError::Adopt { fd: raw, source })?;
        Channel::from_fd(fd)
    }

    /// The socket, for handing to a child or registering with a poll loop.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Makes [`Channel::recv`] and [`Channel::send`] return at once instead of waiting.
    pub fn set_nonblocking(&self) -> Result<(), ChannelError> {
        let flags = nix::fcntl::fcntl(self.fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| ChannelError::Io(e.into()))?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(self.fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| ChannelError::Io(e.into()))?;
        Ok(())
    }

    /// Sends `message` with `fds` (duplicated into the peer; the caller keeps its own).
    pub fn send<Req, Resp, Ev>(
        &self,
        message: &Message<Req, Resp, Ev>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError>
    where
        Req: Serialize,
        Resp: Serialize,
        Ev: Serialize,
    {
        let bytes = serde_json::to_vec(message).map_err(ChannelError::Encode)?;
        self.send_bytes(&bytes, fds)
    }

    /// Sends one message of raw bytes. Public for tests of what a broken peer sends.
    pub fn send_bytes(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(ChannelError::TooLong { len: bytes.len() });
        }
        if fds.len() > MAX_FDS {
            return Err(ChannelError::TooManyFds { count: fds.len() });
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(bytes)];
        loop {
            // MSG_NOSIGNAL: a closed peer is an EPIPE to handle, not a SIGPIPE to die of.
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Err(ChannelError::Full),
                Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => {
                    return Err(ChannelError::Closed)
                }
                Err(e) => return Err(ChannelError::Io(e.into())),
            }
        }
    }

    /// Receives one message of type `Message<Req, Resp, Ev>`. A message that is too long,
    /// carries too many descriptors or does not parse is an error, and the descriptors
    /// it carried are closed.
    pub fn recv<Req, Resp, Ev>(&self) -> Result<Received<Message<Req, Resp, Ev>>, ChannelError>
    where
        Req: DeserializeOwned,
        Resp: DeserializeOwned,
        Ev: DeserializeOwned,
    {
        // One byte more than the limit: a message that fills it is too long.
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        let raw = loop {
            match sys::recv(self.fd.as_fd(), &mut buf, MAX_FDS, 0) {
                Ok(raw) => break raw,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Received::Nothing)
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    return Ok(Received::Closed)
                }
                Err(e) => return Err(ChannelError::Io(e)),
            }
        };
        if raw.eof {
            return Ok(Received::Closed);
        }
        if raw.truncated || raw.len > MAX_MESSAGE {
            return Err(ChannelError::ReceivedTooLong);
        }
        if raw.fds_truncated || raw.fds.len() > MAX_FDS {
            return Err(ChannelError::ReceivedTooManyFds);
        }
        let bytes = buf.get(..raw.len).unwrap_or(&[]);
        match serde_json::from_slice(bytes) {
            Ok(message) => Ok(Received::Message(message, raw.fds)),
            Err(source) => Err(ChannelError::Malformed {
                len: raw.len,
                source,
            }),
        }
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use serde::Deserialize;

    use super::*;
    use crate::message::RequestId;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Req {
        Ps,
        Logs { container: String },
    }
    type M = Message<Req, Vec<String>, String>;

    fn expect_message(c: &Channel) -> (M, Vec<OwnedFd>) {
        match c.recv::<Req, Vec<String>, String>().unwrap() {
            Received::Message(m, fds) => (m, fds),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn request_and_response_round_trip() {
        let (pid1, child) = Channel::pair().unwrap();
        let ask: M = Message::Request {
            id: RequestId(1),
            body: Req::Logs {
                container: "web".into(),
            },
        };
        pid1.send(&ask, &[]).unwrap();
        let (got, fds) = expect_message(&child);
        assert_eq!(got, ask);
        assert!(fds.is_empty());
        let answer: M = Message::Response {
            id: RequestId(1),
            body: vec!["web".into()],
        };
        child.send(&answer, &[]).unwrap();
        assert_eq!(expect_message(&pid1).0, answer);
    }

    #[test]
    fn message_boundaries_are_kept() {
        let (a, b) = Channel::pair().unwrap();
        for i in 0..3 {
            a.send(&M::Event(format!("event {i}")), &[]).unwrap();
        }
        for i in 0..3 {
            assert_eq!(expect_message(&b).0, M::Event(format!("event {i}")));
        }
    }

    #[test]
    fn descriptors_travel_and_work() {
        let (a, b) = Channel::pair().unwrap();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        a.send(&M::Event("here is a pipe".into()), &[write_end.as_fd()])
            .unwrap();
        drop(write_end);
        let (_, mut fds) = expect_message(&b);
        assert_eq!(fds.len(), 1);
        let received = fds.remove(0);
        // Close-on-exec, as every descriptor PID 1 holds.
        let flags = nix::fcntl::fcntl(received.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
        let mut w = std::fs::File::from(received);
        w.write_all(b"through the passed fd").unwrap();
        drop(w);
        let mut out = String::new();
        std::fs::File::from(read_end)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "through the passed fd");
    }

    #[test]
    fn non_blocking_receive_returns_nothing_then_closed() {
        let (a, b) = Channel::pair().unwrap();
        b.set_nonblocking().unwrap();
        assert!(matches!(
            b.recv::<Req, Vec<String>, String>().unwrap(),
            Received::Nothing
        ));
        drop(a);
        assert!(matches!(
            b.recv::<Req, Vec<String>, String>().unwrap(),
            Received::Closed
        ));
    }

    #[test]
    fn garbage_is_refused_and_its_descriptors_closed() {
        let (a, b) = Channel::pair().unwrap();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        a.send_bytes(b"{\"request\":{\"id\":\"x\"", &[write_end.as_fd()])
            .unwrap();
        drop(write_end);
        let err = b.recv::<Req, Vec<String>, String>().unwrap_err();
        assert!(matches!(err, ChannelError::Malformed { .. }), "{err}");
        // The passed write end was closed with the refused message: the pipe reads EOF.
        let mut out = Vec::new();
        std::fs::File::from(read_end).read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
        // A well-formed message of the wrong type is refused too.
        a.send_bytes(br#"{"request":{"id":1,"body":"rm -rf"}}"#, &[])
            .unwrap();
        assert!(matches!(
            b.recv::<Req, Vec<String>, String>().unwrap_err(),
            ChannelError::Malformed { .. }
        ));
    }

    #[test]
    fn limits_hold_on_both_sides() {
        let (a, b) = Channel::pair().unwrap();
        let long = vec![b' '; MAX_MESSAGE + 1];
        assert!(matches!(
            a.send_bytes(&long, &[]),
            Err(ChannelError::TooLong { .. })
        ));
        // A peer that bypasses our sender: a raw sendmsg of a longer message.
        let iov = [IoSlice::new(&long)];
        sendmsg::<()>(a.as_fd().as_raw_fd(), &iov, &[], MsgFlags::empty(), None).unwrap();
        assert!(matches!(
            b.recv::<Req, Vec<String>, String>().unwrap_err(),
            ChannelError::ReceivedTooLong
        ));
        // Too many descriptors: refused by the sender, and by the receiver from a raw peer,
        // with every descriptor that arrived closed.
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let many: Vec<BorrowedFd> = (0..MAX_FDS + 4).map(|_| write_end.as_fd()).collect();
        assert!(matches!(
            a.send_bytes(b"{}", &many),
            Err(ChannelError::TooManyFds { .. })
        ));
        let raw: Vec<RawFd> = many.iter().map(|fd| fd.as_raw_fd()).collect();
        sendmsg::<()>(
            a.as_fd().as_raw_fd(),
            &[IoSlice::new(b"{\"event\":\"x\"}")],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(write_end);
        assert!(matches!(
            b.recv::<Req, Vec<String>, String>().unwrap_err(),
            ChannelError::ReceivedTooManyFds
        ));
        let mut out = Vec::new();
        std::fs::File::from(read_end).read_to_end(&mut out).unwrap();
        assert!(out.is_empty(), "a received write end stayed open");
    }

    #[test]
    fn a_full_peer_is_an_error_not_a_wait() {
        let (a, _b) = Channel::pair().unwrap();
        a.set_nonblocking().unwrap();
        let big = vec![b'x'; MAX_MESSAGE];
        let mut sent = 0;
        let err = loop {
            match a.send_bytes(&big, &[]) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 10_000, "the queue never filled");
        };
        assert!(matches!(err, ChannelError::Full), "{err}");
    }

    #[test]
    fn sending_to_a_closed_peer_is_closed_not_sigpipe() {
        let (a, b) = Channel::pair().unwrap();
        drop(b);
        assert!(matches!(
            a.send(&M::Event("anyone?".into()), &[]),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn a_child_adopts_its_inherited_channel() {
        use std::os::fd::IntoRawFd;
        let (parent, child) = Channel::pair().unwrap();
        // What a child finds: a descriptor number it owns.
        let number = child.into_fd().into_raw_fd();
        let adopted = Channel::from_env_value(&number.to_string()).unwrap();
        adopted
            .send(&M::Event("hello from the child".into()), &[])
            .unwrap();
        assert_eq!(
            expect_message(&parent).0,
            M::Event("hello from the child".into())
        );
        // Close-on-exec is set on adoption, so that it goes no further.
        let flags = nix::fcntl::fcntl(number, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
        // Not a number, not open, not a seqpacket socket: each refused.
        assert!(matches!(
            Channel::from_env_value("three"),
            Err(ChannelError::Env(_))
        ));
        drop(adopted);
        assert!(matches!(
            Channel::from_env_value(&number.to_string()),
            Err(ChannelError::Adopt { .. })
        ));
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(matches!(
            Channel::from_fd(r),
            Err(ChannelError::NotSeqpacket { .. })
        ));
    }
}
