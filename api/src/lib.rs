//! The Docker Engine API of a berth host.
//!
//! It runs as `berth-helper api`, a child of PID 1 that PID 1 restarts if it dies: all
//! HTTP, JSON and stream parsing happens here, and PID 1 sees only the typed requests of
//! `berth_proto::api`. Clients (the docker CLI, docker-py, dockerode, testcontainers)
//! work unchanged against it.
//!
//! Files: [`route`] (method and path to an endpoint, API versions), [`query`] (query
//! strings and `filters`), [`wire`] (Docker's JSON shapes), [`stdcopy`] (stream
//! multiplexing), [`time`], [`handlers`] (one translation per endpoint), [`backend`]
//! (what the handlers ask), [`pid1`] (the backend on a host: PID 1 over the API
//! channel), [`server`] (listeners,
//! limits, hyper).

pub mod backend;
pub mod create;
pub mod events;
pub mod handlers;
pub mod helper;
pub mod images;
pub mod logs;
pub mod pid1;
pub mod query;
pub mod route;
pub mod save;
pub mod server;
pub mod stdcopy;
pub mod stream;
mod sys;
pub mod time;
pub mod upload;
pub mod wire;

pub use backend::{Answer, Backend, BackendError};
pub use create::Policy;
pub use server::{Limits, Listen, Listener, Server};
