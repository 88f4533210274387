//! The HTTP server: listeners, per-connection limits, and routing requests to handlers.
//!
//! Every request is bounded before it costs anything: headers by [`Limits::max_header_bytes`]
//! and a read deadline ([`Limits::header_timeout`], which also closes idle keep-alive
//! connections), bodies by [`Limits::max_body_bytes`], connections by
//! [`Limits::max_connections`] (past it, a new connection is answered `503` and closed,
//! so that a flood of idle sockets cannot lock other clients out for long).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use crate::backend::Backend;
use crate::create::Policy;
use crate::events::{Event, EventBus};
use crate::handlers;
use crate::images::Images;

/// Bounds on what one client can make the server hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// Streamed uploads (`docker load`), written to the store's disk: also never more
    /// than 90 % of the free space there.
    pub max_upload_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // dockerd's Go server allows 1 MiB of headers; a request line or header that
            // long is an attack, not a client: 64 KiB holds any real one.
            max_header_bytes: 64 * 1024,
            // JSON bodies (create, exec). Image loads stream instead of buffering.
            max_body_bytes: 4 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_upload_bytes: 8 << 30,
        }
    }
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

/// A bound listener of either kind.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `listen`. A unix socket path is replaced if a stale socket is there, and
    /// made `mode` (0o660: root and the configured group only).
    pub async fn bind(listen: &Listen, mode: u32) -> std::io::Result<Listener> {
        match listen {
            Listen::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    }
                }
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                Ok(Listener::Unix(listener))
            }
            Listen::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
        }
    }
}

/// The server: a backend (PID 1, or a stand-in) and the limits.
pub struct Server {
    backend: Arc<dyn Backend>,
    limits: Limits,
    policy: Policy,
    images: Images,
    events: EventBus,
    permits: Arc<Semaphore>,
}

impl Server {
    pub fn new(
        backend: Arc<dyn Backend>,
        limits: Limits,
        policy: Policy,
        images: Images,
    ) -> Arc<Server> {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        Arc::new(Server {
            backend,
            limits,
            policy,
            images,
            events: EventBus::default(),
            permits,
        })
    }

    /// Publishes PID 1's events on the bus until the channel to PID 1 ends.
    pub async fn forward_events(
        self: Arc<Server>,
        mut from_pid1: tokio::sync::broadcast::Receiver<berth_proto::api::ApiEvent>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match from_pid1.recv().await {
                Ok(e) => self.events.publish(Event::from_pid1(&e)),
                Err(RecvError::Lagged(n)) => log::warn!("api: {n} events from PID 1 were dropped"),
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// The event bus (`/events`, and the image endpoints' own events).
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Accepts connections on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Server>, listener: Listener) {
        loop {
            let accepted = match &listener {
                Listener::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
                Listener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
            };
            match accepted {
                Ok(conn) => {
                    let server = self.clone();
                    tokio::spawn(async move { server.connection(conn).await });
                }
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    log::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn connection(self: Arc<Server>, conn: Conn) {
        match conn {
            Conn::Unix(s) => self.serve_io(s).await,
            Conn::Tcp(s) => {
                let _ = s.set_nodelay(true);
                self.serve_io(s).await
            }
        }
    }

    async fn serve_io<S>(self: Arc<Server>, mut stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            let body = "{\"message\":\"too many connections to the berth API\"}\n";
            let busy = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(busy.as_bytes()))
                .await;
            return;
        };
        let server = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(req).await) }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_header_size(self.limits.max_header_bytes)
            .max_buf_size(self.limits.max_header_bytes.max(8192) * 2);
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        if let Err(e) = conn.await {
            log::debug!("connection: {e}");
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Reply {
        let mut response = handlers::handle(self, req).await;
        let headers = response.headers_mut();
        headers.insert("Api-Version", HeaderValue::from_static(API_VERSION_STR));
        headers.insert("Server", HeaderValue::from_static(SERVER_HEADER));
        headers.insert("Ostype", HeaderValue::from_static("linux"));
        response
    }

    /// What this host allows beyond Docker's defaults.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The image store the image endpoints serve.
    pub fn images(&self) -> &Images {
        &self.images
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Reads a request body, refusing one over the limit with a 413 that says so.
    pub async fn body(&self, body: Incoming) -> Result<Bytes, Reply> {
        match Limited::new(body, self.limits.max_body_bytes)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "request body is over berth's limit of {} bytes",
                        self.limits.max_body_bytes
                    ),
                ))
            }
            Err(e) => Err(error(
                StatusCode::BAD_REQUEST,
                &format!("reading the request body: {e}"),
            )),
        }
    }
}

const API_VERSION_STR: &str = "1.47";
const SERVER_HEADER: &str = concat!("berth/", env!("CARGO_PKG_VERSION"), " (linux)");

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// A response body: whole (JSON, errors) or streamed (logs, archives, attach).
pub type Body = BoxBody<Bytes, std::io::Error>;
/// A response.
pub type Reply = Response<Body>;

/// A body of `bytes`, whole.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut r = Response::new(full(body));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding the response: {e}"),
        ),
    }
}

/// An error response, `{"message": ...}` as dockerd sends.
pub fn error(status: StatusCode, message: &str) -> Reply {
    let body = serde_json::to_vec(&crate::wire::ErrorBody { message }).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use crate::route::API_VERSION;

    #[test]
    fn the_version_header_is_the_routes_version() {
        assert_eq!(super::API_VERSION_STR, API_VERSION.to_string());
    }
}
