//! Streamed response bodies: a blocking producer (a tar being written, a log being read)
//! feeding hyper through a bounded channel, so that a client that reads slowly slows the
//! producer instead of growing memory, and one that goes away stops it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// Chunks in flight between producer and client.
const CHANNEL_CHUNKS: usize = 16;
/// The producer's chunk size.
const CHUNK: usize = 64 * 1024;

/// The receiving half: a response body.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// The sending half, as a blocking [`std::io::Write`]: use it on the blocking pool.
pub struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

/// A connected writer and body.
pub fn channel() -> (ChannelWriter, ChannelBody) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        },
        ChannelBody { rx },
    )
}

/// A body fed by an async task: send `Ok(bytes)` chunks, drop the sender to end it.
pub fn async_channel() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (tx, ChannelBody { rx })
}

impl ChannelWriter {
    fn send(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.tx.blocking_send(Ok(Bytes::from(bytes))).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }

    /// Ends the body with an error: the client sees the stream cut off.
    pub fn fail(self, e: std::io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.send(full)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.send(rest)?;
        }
        Ok(())
    }
}
