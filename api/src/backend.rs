//! What the server asks: PID 1 over the API channel, or a stand-in in tests.

use std::future::Future;
use std::pin::Pin;

use berth_proto::api::{ApiRequest, ApiResponse};

/// Why the backend gave no answer (as opposed to answering with a failure).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("PID 1 did not answer: {0}")]
    Unavailable(String),
    #[error("PID 1 answered {got} to {asked}")]
    Mismatch { asked: &'static str, got: String },
}

/// A future the backend returns.
pub type Answer<'a> = Pin<Box<dyn Future<Output = Result<ApiResponse, BackendError>> + Send + 'a>>;

/// Answers typed requests: PID 1 on a host.
pub trait Backend: Send + Sync + 'static {
    fn call(&self, request: ApiRequest) -> Answer<'_>;
}
