//! PID 1's side of networking: the netd child process, and the container bridge.
//!
//! netd (`berth-helper netd`, see `berth_netd::host`) configures the host's interfaces
//! and runs DHCP, which parses bytes from the network, so it runs outside PID 1. PID 1
//! starts it, reads its `online`/`offline` lines, and starts it again after a crash
//! (1 s, doubling to 30 s).
//!
//! The bridge, the NAT table and the containers' addresses depend only on the config,
//! so PID 1 prepares them itself before the first container starts: a handful of
//! netlink requests.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_netd::bridge;
use berth_netd::container::Attachment;
use berth_netd::ipam::{Holder, Ipam};
use berth_netd::netlink::Netlink;
use nix::unistd::Pid;

use crate::config::{HostConfig, CONFIG_PATH};
use crate::workload::NetworkMode;

/// The most of netd's output PID 1 reads per wake-up (its lines are a few dozen bytes).
const OUTPUT_BUDGET: usize = 64 * 1024;

/// Modules the bridge network needs: the bridge, veth pairs and nf_tables NAT.
pub const BRIDGE_MODULES: &[&str] = &[
    "bridge",
    "veth",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
    "nft_fib_ipv4",
];

/// Where the container addresses are leased.
pub fn ipam_dir() -> std::path::PathBuf {
    Path::new(crate::images::STORE_DIR).join("network")
}

/// True if any container joins the bridge.
pub fn uses_bridge(config: &HostConfig) -> bool {
    config
        .containers
        .iter()
        .any(|c| c.network == NetworkMode::Bridge)
}

/// Creates the bridge and NAT table and leases every bridge container its address.
pub fn prepare_bridge(
    config: &HostConfig,
    ipam_dir: &Path,
) -> Result<BTreeMap<String, Attachment>, String> {
    let started = Instant::now();
    let bridge_config = &config.network.bridge;
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    let br = bridge::ensure(&mut nl, bridge_config).map_err(|e| e.to_string())?;
    let ipam = Ipam::new(ipam_dir, bridge_config.subnet);
    let holder = Holder::current();
    let mut peers = Vec::new();
    for c in config
        .containers
        .iter()
        .filter(|c| c.network == NetworkMode::Bridge)
    {
        let address = ipam
            .allocate(&c.name.0, holder, &c.ports)
            .map_err(|e| e.to_string())?;
        peers.push((c.name.0.clone(), address));
    }
    // Without NAT the containers still reach each other and the host: start them.
    // This machine is berth's: it forwards its containers' traffic and nothing else.
    let published = match bridge::apply_nat_from_leases(bridge_config, &ipam, true) {
        Ok(leases) => leases.iter().map(|l| l.ports.len()).sum(),
        Err(e) => {
            log::error!("bridge NAT: {e}; containers start without egress or published ports");
            0
        }
    };
    let attachments = peers
        .iter()
        .map(|(name, address)| {
            (
                name.clone(),
                Attachment {
                    bridge_index: br.index,
                    address: *address,
                    prefix: bridge_config.subnet.prefix,
                    gateway: bridge_config.gateway(),
                    mtu: br.mtu,
                    peers: peers.clone(),
                },
            )
        })
        .collect();
    log::info!(
        "bridge {} ({}) ready with {} container address(es) and {published} published port(s) in {:.1} ms",
        bridge_config.name.0,
        bridge_config.subnet,
        peers.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(attachments)
}

/// The netd process and its restarts.
pub struct Netd {
    pid: Option<Pid>,
    output: Option<OwnedFd>,
    pending: Vec<u8>,
    delay: Duration,
    restart_at: Option<Instant>,
    /// When the running netd started: a long run resets the restart delay.
    started: Option<Instant>,
    /// Run netd on the default network config, not the file's: PID 1 itself runs on the
    /// defaults because it could not get the config (see [`crate::boot_config`]).
    defaults: bool,
}

/// What netd reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Online(String),
    Offline(String),
}

impl Netd {
    /// Starts netd; with `defaults`, on the default network config (PID 1 runs degraded,
    /// and netd must not apply a `[network]` PID 1 has not read).
    pub fn start(defaults: bool) -> Netd {
        let mut netd = Netd {
            pid: None,
            output: None,
            pending: Vec::new(),
            delay: Duration::from_secs(1),
            restart_at: None,
            started: None,
            defaults,
        };
        netd.spawn();
        netd
    }

    fn spawn(&mut self) {
        self.restart_at = None;
        let mut command = crate::helper::command(crate::helper::NETD_ARG);
        if self.defaults {
            command.arg(crate::helper::DEFAULTS_ARG);
        }
        let child = command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn();
        match child {
            Ok(mut child) => {
                let pid = Pid::from_raw(child.id() as i32);
                log::info!("netd started (pid {pid})");
                self.pid = Some(pid);
                self.output = child.stdout.take().map(OwnedFd::from);
                self.started = Some(Instant::now());
                if let Some(fd) = &self.output {
                    if let Err(e) = set_nonblocking(fd.as_fd()) {
                        // A blocking read would stall PID 1: do without the reports.
                        log::error!("netd output: {e}; its reports are ignored");
                        self.output = None;
                    }
                }
                // The pid is reaped by PID 1's loop, not through `child`.
                drop(child);
            }
            Err(e) => {
                log::error!("cannot start netd: {e}");
                self.schedule_restart();
            }
        }
    }

    fn schedule_restart(&mut self) {
        self.restart_at = Some(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(Duration::from_secs(30));
    }

    /// netd's output pipe, for PID 1's poll.
    pub fn output_fd(&self) -> Option<BorrowedFd<'_>> {
        self.output.as_ref().map(|f| f.as_fd())
    }

    /// Reads what netd wrote; returns the complete lines as reports.
    pub fn on_output(&mut self) -> Vec<Report> {
        let Some(fd) = &self.output else {
            return Vec::new();
        };
        // At most OUTPUT_BUDGET bytes per call: netd parses network bytes, and a netd
        // that never stops writing must not keep PID 1 in this loop.
        let mut buf = [0u8; 4096];
        let mut budget = OUTPUT_BUDGET;
        while budget > 0 {
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.output = None;
                    break;
                }
                Ok(n) => {
                    self.pending.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                    budget = budget.saturating_sub(n);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            // A child that writes without newlines cannot grow PID 1's memory.
            if self.pending.len() > OUTPUT_BUDGET {
                self.pending.clear();
            }
        }
        let mut reports = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("online"), Some(iface)) => reports.push(Report::Online(iface.to_owned())),
                (Some("offline"), Some(iface)) => reports.push(Report::Offline(iface.to_owned())),
                _ => {}
            }
        }
        reports
    }

    /// Handles netd's exit (and schedules its restart); true if `pid` was netd.
    pub fn on_exit(&mut self, pid: Pid, status: nix::sys::wait::WaitStatus) -> bool {
        if self.pid != Some(pid) {
            return false;
        }
        self.pid = None;
        self.output = None;
        self.pending.clear();
        if self
            .started
            .take()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.delay = Duration::from_secs(1);
        }
        log::error!(
            "netd exited ({}): starting it again in {} ms",
            berth_runtime::ProcessStatus(status),
            self.delay.as_millis()
        );
        self.schedule_restart();
        true
    }

    /// When netd is due to be started again.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.restart_at
    }

    pub fn tick(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|at| at <= now) {
            self.spawn();
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let raw = fd.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// netd's process: configures the host's network until SIGTERM. Exit code 0 on a
/// clean stop.
pub fn netd_main() -> i32 {
    // The status pipe to PID 1 is stdout; log lines go to the console (stderr, where the
    // helper's logger writes). Nothing else may write to the pipe: it moves to its own
    // descriptor, and stdout becomes the console too.
    let status = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => {
            let _ = nix::unistd::dup2(2, 1);
            std::fs::File::from(fd)
        }
        Err(e) => {
            log::error!("netd: cannot duplicate its status pipe: {e}");
            return 1;
        }
    };
    let defaults = std::env::args().any(|a| a == crate::helper::DEFAULTS_ARG);
    let loaded = if defaults {
        log::warn!("netd: using the default network config, as PID 1 does");
        Ok(HostConfig::default())
    } else {
        HostConfig::load(Path::new(CONFIG_PATH))
    };
    let config = match loaded {
        Ok(c) => c,
        Err(crate::config::ConfigError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            HostConfig::default()
        }
        Err(e) => {
            log::error!("netd: {e}; using the default network config");
            HostConfig::default()
        }
    };
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    let options = berth_netd::host::default_options(hostname, &config.network);
    berth_netd::host::run(&config.network, &options, Box::new(status))
}
