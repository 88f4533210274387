//! `berth-helper api`: the API server as PID 1 runs it.
//!
//! ```text
//! berth-helper api --listen unix:///run/berth/docker.sock --listen unix:///var/run/docker.sock \
//!                  [--listen tcp://0.0.0.0:2375] [--allow-privileged]
//! ```
//!
//! PID 1 checks `[api]` of `host.toml` and turns it into these arguments; the channel to
//! PID 1 is the descriptor in `BERTH_CHANNEL_FD`. The process exits when that channel
//! breaks, and PID 1 starts a fresh one.

use std::sync::Arc;

use berth_proto::Channel;

use crate::create::Policy;
use crate::images::Images;
use crate::pid1::Pid1;
use crate::server::{Limits, Listen, Listener, Server};

/// The mode's name on berth-helper's command line.
pub const MODE: &str = "api";

/// Why the arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("{0:?} is not unix:///absolute/path or tcp://address:port")]
    Listen(String),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("nothing to listen on: give at least one --listen")]
    NoListen,
}

/// The parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub listen: Vec<Listen>,
    pub allow_privileged: bool,
    /// The image store (`--store`, `/var/lib/berth` by default).
    pub store: std::path::PathBuf,
}

/// The image store on a berth host.
pub const DEFAULT_STORE: &str = "/var/lib/berth";

/// Parses `unix:///path` or `tcp://host:port`.
pub fn parse_listen(s: &str) -> Result<Listen, ArgsError> {
    let err = || ArgsError::Listen(s.to_owned());
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') || path.contains('\0') || path.split('/').any(|c| c == "..") {
            return Err(err());
        }
        return Ok(Listen::Unix(path.into()));
    }
    if let Some(addr) = s.strip_prefix("tcp://") {
        return addr.parse().map(Listen::Tcp).map_err(|_| err());
    }
    Err(err())
}

impl Args {
    pub fn parse(args: &[String]) -> Result<Args, ArgsError> {
        let mut listen = Vec::new();
        let mut allow_privileged = false;
        let mut store = std::path::PathBuf::from(DEFAULT_STORE);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--listen" => {
                    let v = it.next().ok_or_else(|| ArgsError::Listen(String::new()))?;
                    listen.push(parse_listen(v)?);
                }
                "--allow-privileged" => allow_privileged = true,
                "--store" => {
                    let v = it
                        .next()
                        .ok_or_else(|| ArgsError::Unknown("--store".into()))?;
                    store = v.into();
                }
                other => return Err(ArgsError::Unknown(other.to_owned())),
            }
        }
        if listen.is_empty() {
            return Err(ArgsError::NoListen);
        }
        Ok(Args {
            listen,
            allow_privileged,
            store,
        })
    }
}

/// Runs the API server; returns the process's exit code.
pub fn main(args: &[String]) -> i32 {
    // PID 1 blocks the signals it reads from its signalfd, and a child inherits the mask:
    // unblocked here, SIGTERM (PID 1's stop at power-off) ends the process at once.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let args = match Args::parse(args) {
        Ok(a) => a,
        Err(e) => {
            log::error!("api: {e}");
            return 2;
        }
    };
    let channel = match Channel::from_env() {
        Ok(c) => c,
        Err(e) => {
            log::error!("api: {e} (berth-helper api is started by PID 1)");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("api: cannot start the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(serve(args, channel))
}

async fn serve(args: Args, channel: Channel) -> i32 {
    let pid1 = match Pid1::start(channel, |_| std::process::exit(1)) {
        Ok(p) => p,
        Err(e) => {
            log::error!("api: channel to PID 1: {e}");
            return 1;
        }
    };
    let policy = Policy {
        allow_privileged: args.allow_privileged,
    };
    let events = pid1.events();
    let server = Server::new(pid1, Limits::default(), policy, Images::new(&args.store));
    tokio::spawn(Arc::clone(&server).forward_events(events));
    let mut tasks = Vec::new();
    for listen in &args.listen {
        if let Listen::Unix(path) = listen {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        match Listener::bind(listen, 0o660).await {
            Ok(l) => {
                log::info!("api: listening on {}", describe(listen));
                tasks.push(tokio::spawn(Arc::clone(&server).serve(l)));
            }
            Err(e) => log::error!("api: cannot listen on {}: {e}", describe(listen)),
        }
    }
    if tasks.is_empty() {
        return 1;
    }
    for t in tasks {
        let _ = t.await;
    }
    0
}

fn describe(listen: &Listen) -> String {
    match listen {
        Listen::Unix(p) => format!("unix://{}", p.display()),
        Listen::Tcp(a) => format!("tcp://{a}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let a = Args::parse(&strings(&[
            "--listen",
            "unix:///run/berth/docker.sock",
            "--listen",
            "tcp://0.0.0.0:2375",
            "--allow-privileged",
        ]))
        .unwrap();
        assert_eq!(
            a.listen,
            [
                Listen::Unix("/run/berth/docker.sock".into()),
                Listen::Tcp("0.0.0.0:2375".parse().unwrap())
            ]
        );
        assert!(a.allow_privileged);
        for bad in [
            "unix://relative",
            "unix:///a/../b",
            "tcp://nohost",
            "http://x:1",
            "",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
        assert_eq!(Args::parse(&[]), Err(ArgsError::NoListen));
        assert!(Args::parse(&strings(&["--bogus"])).is_err());
    }
}
