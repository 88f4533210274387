//! Docker's stream multiplexing ("stdcopy") for attach, logs and exec without a TTY.
//!
//! Each frame is an 8-byte header, then the payload:
//!
//! ```text
//! [stream, 0, 0, 0, len (u32, big-endian)] payload...
//! ```
//!
//! where `stream` is 0 for stdin, 1 for stdout, 2 for stderr, and 3 for an error the
//! daemon reports in the middle of a stream. With a TTY the stream is raw bytes instead.

use bytes::{BufMut, Bytes, BytesMut};

/// Which stream a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stream {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    /// An error reported in-band (dockerd's `Systemerr`).
    System = 3,
}

/// The header's length.
pub const HEADER_LEN: usize = 8;

/// One frame carrying `payload` on `stream`. Payloads longer than `u32::MAX` are split.
pub fn frame(stream: Stream, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + HEADER_LEN);
    for chunk in payload.chunks(u32::MAX as usize) {
        out.put_u8(stream as u8);
        out.put_slice(&[0, 0, 0]);
        out.put_u32(chunk.len() as u32);
        out.put_slice(chunk);
    }
    out.freeze()
}

/// Splits a multiplexed buffer back into `(stream, payload)` frames; what is left of an
/// incomplete last frame is returned too. For tests and for clients of our own.
pub fn split(mut buf: &[u8]) -> (Vec<(u8, Vec<u8>)>, &[u8]) {
    let mut frames = Vec::new();
    loop {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return (frames, buf);
        };
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return (frames, buf);
        };
        frames.push((header[0], payload.to_vec()));
        buf = &buf[HEADER_LEN + len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_stream_and_length() {
        let f = frame(Stream::Stderr, b"oops\n");
        assert_eq!(&f[..], b"\x02\0\0\0\0\0\0\x05oops\n");
        let empty = frame(Stream::Stdout, b"");
        assert_eq!(&empty[..], b"");
    }

    #[test]
    fn split_round_trips_and_keeps_a_partial_tail() {
        let mut all = frame(Stream::Stdout, b"hello").to_vec();
        all.extend_from_slice(&frame(Stream::Stderr, b"world"));
        all.extend_from_slice(&frame(Stream::Stdout, b"cut")[..9]);
        let (frames, rest) = split(&all);
        assert_eq!(frames, vec![(1, b"hello".to_vec()), (2, b"world".to_vec())]);
        assert_eq!(rest.len(), 9);
    }
}
