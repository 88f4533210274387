//! The host's own network: the netd process (`berth-helper netd`), a child of PID 1.
//!
//! It brings up every configured interface (or, without `[[network.interface]]`, every
//! ethernet-like one), applies static addresses, routes and nameservers, and runs one
//! DHCPv4 client thread per DHCP interface. `/etc/resolv.conf` is rewritten whenever the
//! set of nameservers changes.
//!
//! It reports to PID 1 on its stdout, one line per change: `online IFACE ADDR/PREFIX` when
//! an interface gets an address, `offline IFACE ADDR/PREFIX` when a lease is lost. PID 1
//! starts containers that depend on `network-online` after the first `online`. A missing
//! interface or a silent DHCP server only delays those containers; nothing else waits.
//!
//! On SIGTERM (power-off) it releases its DHCP leases and exits 0.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{SigSet, Signal};

use crate::addr::Ipv4Net;
use crate::config::{InterfaceConfig, NetworkConfig};
use crate::dhcp::{self, Client, Event, Lease, Timing};
use crate::netlink::{Link, Netlink, NetlinkError, Route4};
use crate::resolv;

/// How long a DHCP thread waits for the link's carrier before sending anyway.
const CARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where netd writes and how it times DHCP; tests point these elsewhere.
#[derive(Debug, Clone)]
pub struct Options {
    pub resolv_conf: PathBuf,
    /// Prefixes a lease may not take or route: the container bridge's subnet.
    pub protected: Vec<Ipv4Net>,
    pub hostname: Option<String>,
    pub timing: Timing,
}

/// The nameservers and search domains each interface contributes.
#[derive(Default)]
struct Shared {
    dns: BTreeMap<String, (Vec<Ipv4Addr>, Vec<String>)>,
    last_resolv: Option<String>,
}

struct Reporter {
    shared: Mutex<Shared>,
    status: Mutex<Box<dyn Write + Send>>,
    resolv_conf: PathBuf,
}

impl Reporter {
    fn status(&self, line: &str) {
        if let Ok(mut out) = self.status.lock() {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    fn set_dns(&self, interface: &str, servers: Vec<Ipv4Addr>, search: Vec<String>) {
        let Ok(mut shared) = self.shared.lock() else {
            return;
        };
        if servers.is_empty() && search.is_empty() {
            shared.dns.remove(interface);
        } else {
            shared.dns.insert(interface.to_owned(), (servers, search));
        }
        let servers: Vec<Ipv4Addr> = shared.dns.values().flat_map(|(s, _)| s.clone()).collect();
        let search: Vec<String> = shared.dns.values().flat_map(|(_, d)| d.clone()).collect();
        let text = resolv::render(&servers, &search);
        if shared.last_resolv.as_deref() == Some(text.as_str()) {
            return;
        }
        match resolv::write_atomic(&self.resolv_conf, &text) {
            Ok(()) => {
                log::info!(
                    "{} written: nameservers {}",
                    self.resolv_conf.display(),
                    if servers.is_empty() {
                        "none".to_string()
                    } else {
                        format!("{servers:?}")
                    }
                );
                shared.last_resolv = Some(text);
            }
            Err(e) => log::error!("cannot write {}: {e}", self.resolv_conf.display()),
        }
    }
}

/// Which links to configure, and how.
fn plan(config: &NetworkConfig, links: &[Link]) -> Vec<(Link, InterfaceConfig)> {
    if config.interfaces.is_empty() {
        return links
            .iter()
            .filter(|l| l.is_physical_ethernet())
            .map(|l| {
                (
                    l.clone(),
                    InterfaceConfig {
                        matches: crate::config::Match::Name(crate::config::InterfaceName(
                            l.name.clone(),
                        )),
                        dhcp: Some(true),
                        addresses: Vec::new(),
                        gateway: None,
                        dns: Vec::new(),
                        mtu: None,
                    },
                )
            })
            .collect();
    }
    let mut out = Vec::new();
    for entry in &config.interfaces {
        let found: Vec<&Link> = links
            .iter()
            .filter(|l| entry.matches(&l.name, &l.mac))
            .collect();
        if found.is_empty() {
            log::warn!(
                "no interface matches {:?}: it is not configured",
                entry.matches
            );
        }
        for link in found {
            out.push((link.clone(), entry.clone()));
        }
    }
    out
}

fn configure_static(
    nl: &mut Netlink,
    link: &Link,
    entry: &InterfaceConfig,
) -> Result<(), NetlinkError> {
    for net in &entry.addresses {
        nl.add_address(link.index, IpAddr::V4(net.addr), net.prefix)?;
    }
    if let Some(gateway) = entry.gateway {
        nl.add_route(&Route4 {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(gateway),
            interface: link.index,
            source: entry.addresses.first().map(|n| n.addr),
            metric: None,
        })?;
    }
    Ok(())
}

/// Why a lease was not applied.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error(
        "the offered address {address} is inside {protected}, berth's container subnet: refused"
    )]
    Protected {
        address: Ipv4Net,
        protected: Ipv4Net,
    },
}

/// Applies a DHCP lease to interface `index`: address, MTU (best effort), routes. A
/// lease inside a `protected` prefix is refused, and routes into one are skipped: a
/// server must not be able to take over the container subnet.
pub fn apply_lease(
    nl: &mut Netlink,
    index: u32,
    lease: &Lease,
    set_mtu: bool,
    protected: &[Ipv4Net],
) -> Result<(), LeaseError> {
    if let Some(p) = protected.iter().find(|p| p.overlaps(&lease.address)) {
        return Err(LeaseError::Protected {
            address: lease.address,
            protected: *p,
        });
    }
    if let (Some(mtu), true) = (lease.mtu, set_mtu) {
        if let Err(e) = nl.set_link(index, true, Some(u32::from(mtu)), None) {
            log::warn!("netd: the server's MTU {mtu} was refused: {e}");
        }
    }
    nl.add_address(index, IpAddr::V4(lease.address.addr), lease.address.prefix)?;
    let route = |destination: Ipv4Net, gateway: Ipv4Addr| Route4 {
        destination: destination.network(),
        prefix: destination.prefix,
        gateway: (!gateway.is_unspecified()).then_some(gateway),
        interface: index,
        source: Some(lease.address.addr),
        metric: None,
    };
    // RFC 3442: with classless routes, the router option is ignored.
    if !lease.routes.is_empty() {
        for (dest, gw) in &lease.routes {
            if let Some(p) = protected.iter().find(|p| p.overlaps(dest)) {
                log::warn!("netd: ignoring the server's route to {dest}: it overlaps {p}");
                continue;
            }
            nl.add_route(&route(*dest, *gw))?;
        }
    } else if let Some(router) = lease.router {
        let default = Ipv4Net {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        };
        nl.add_route(&route(default, router))?;
    }
    Ok(())
}

/// Runs netd until SIGTERM or SIGINT; `status` gets the online/offline lines. The caller
/// must not have started other threads (the signals are blocked for all of them here).
pub fn run(config: &NetworkConfig, options: &Options, status: Box<dyn Write + Send>) -> i32 {
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGTERM);
    stop_signals.add(Signal::SIGINT);
    if let Err(e) = stop_signals.thread_block() {
        log::error!("netd: cannot block SIGTERM: {e}");
        return 1;
    }
    let reporter = Arc::new(Reporter {
        shared: Mutex::new(Shared::default()),
        status: Mutex::new(status),
        resolv_conf: options.resolv_conf.clone(),
    });
    let mut nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            log::error!("netd: {e}");
            return 1;
        }
    };
    let links = match nl.links() {
        Ok(l) => l,
        Err(e) => {
            log::error!("netd: {e}");
            return 1;
        }
    };
    let planned = plan(config, &links);
    if planned.is_empty() {
        log::warn!("netd: no network interface to configure");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (link, entry) in planned {
        if let Err(e) = nl.set_link(link.index, true, entry.mtu, None) {
            log::error!("netd: bringing up {}: {e}", link.name);
            continue;
        }
        if !entry.addresses.is_empty() {
            match configure_static(&mut nl, &link, &entry) {
                Ok(()) => {
                    for net in &entry.addresses {
                        log::info!("netd: {} has static address {net}", link.name);
                        reporter.status(&format!("online {} {net}", link.name));
                    }
                }
                Err(e) => log::error!("netd: {}: static configuration: {e}", link.name),
            }
        }
        if !entry.dns.is_empty() {
            reporter.set_dns(
                &format!("{}/static", link.name),
                entry.dns.clone(),
                Vec::new(),
            );
        }
        if entry.uses_dhcp() {
            let Ok(mac) = <[u8; 6]>::try_from(link.mac.as_slice()) else {
                log::error!("netd: {} has no ethernet address: no DHCP on it", link.name);
                continue;
            };
            let client =
                match Client::new(&link.name, mac, options.hostname.clone(), options.timing) {
                    Ok(c) => c,
                    Err(e) => {
                        log::error!("netd: {e}");
                        continue;
                    }
                };
            let reporter = Arc::clone(&reporter);
            let stop = Arc::clone(&stop);
            let set_mtu = entry.mtu.is_none();
            let protected = options.protected.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("dhcp-{}", link.name))
                .spawn(move || dhcp_thread(client, link, set_mtu, protected, &stop, &reporter));
            match spawned {
                Ok(handle) => clients.push(handle),
                Err(e) => log::error!("netd: cannot start a DHCP thread: {e}"),
            }
        }
    }
    drop(nl);
    // Wait for the stop signal; threads report on their own.
    match stop_signals.wait() {
        Ok(sig) => log::info!("netd: {sig} received: releasing leases"),
        Err(e) => log::error!("netd: waiting for signals: {e}"),
    }
    stop.store(true, Ordering::Relaxed);
    for handle in clients {
        let _ = handle.join();
    }
    0
}

/// Keeps the kernel in step with one interface's leases: applies each, and takes out
/// what a renewal no longer has.
pub struct LeaseState {
    index: u32,
    set_mtu: bool,
    protected: Vec<Ipv4Net>,
    applied: Option<Lease>,
}

impl LeaseState {
    pub fn new(index: u32, set_mtu: bool, protected: Vec<Ipv4Net>) -> LeaseState {
        LeaseState {
            index,
            set_mtu,
            protected,
            applied: None,
        }
    }

    /// A lease was acknowledged: configure it (see [`apply_lease`]).
    pub fn bound(&mut self, nl: &mut Netlink, lease: &Lease) -> Result<(), LeaseError> {
        if let Some(old) = self.applied.take() {
            remove_stale(nl, self.index, &old, lease);
        }
        apply_lease(nl, self.index, lease, self.set_mtu, &self.protected)?;
        self.applied = Some(lease.clone());
        Ok(())
    }

    /// A lease was lost: its address goes (and the routes through it with it).
    pub fn lost(&mut self, nl: &mut Netlink, lease: &Lease) -> Result<(), NetlinkError> {
        self.applied = None;
        nl.delete_address(
            self.index,
            IpAddr::V4(lease.address.addr),
            lease.address.prefix,
        )
    }
}

/// Takes out of the kernel what `old` configured and `new` no longer has: a different
/// prefix on the same address, and classless routes the server stopped sending.
fn remove_stale(nl: &mut Netlink, index: u32, old: &Lease, new: &Lease) {
    if old.address != new.address {
        let _ = nl.delete_address(index, IpAddr::V4(old.address.addr), old.address.prefix);
    }
    for (dest, gw) in old.routes.iter().filter(|r| !new.routes.contains(r)) {
        let _ = nl.delete_route(&Route4 {
            destination: dest.network(),
            prefix: dest.prefix,
            gateway: (!gw.is_unspecified()).then_some(*gw),
            interface: index,
            source: Some(old.address.addr),
            metric: None,
        });
    }
}

fn dhcp_thread(
    client: Client,
    link: Link,
    set_mtu: bool,
    protected: Vec<Ipv4Net>,
    stop: &AtomicBool,
    reporter: &Reporter,
) {
    let mut nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            log::error!("netd: dhcp {}: {e}", link.name);
            return;
        }
    };
    let started = std::time::Instant::now();
    // A DISCOVER sent before the carrier is up is lost, and the first retry comes only
    // after `first_retry`: wait for the carrier (briefly) instead.
    let carrier_deadline = started + CARRIER_WAIT;
    while std::time::Instant::now() < carrier_deadline && !stop.load(Ordering::Relaxed) {
        match nl.link(&link.name) {
            Ok(l) if l.carrier => break,
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(e) => {
                log::warn!("netd: {}: {e}", link.name);
                break;
            }
        }
    }
    log::info!(
        "netd: {} carrier after {:.1} ms; starting DHCP",
        link.name,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let mut first = true;
    let mut state = LeaseState::new(link.index, set_mtu, protected);
    let mut on_event = |event: Event| match event {
        Event::Bound(lease) => {
            let acked = started.elapsed();
            match state.bound(&mut nl, &lease) {
                Ok(()) => {
                    if first {
                        log::info!(
                            "netd: {} leased {} from {} in {:.1} ms, configured in {:.1} ms (router {}, dns {:?}, lease {} s)",
                            link.name,
                            lease.address,
                            lease.server,
                            acked.as_secs_f64() * 1000.0,
                            (started.elapsed() - acked).as_secs_f64() * 1000.0,
                            lease.router.map_or("none".into(), |r| r.to_string()),
                            lease.dns,
                            lease.lease_time.as_secs()
                        );
                        first = false;
                    } else {
                        log::info!("netd: {} lease of {} extended", link.name, lease.address);
                    }
                    reporter.status(&format!("online {} {}", link.name, lease.address));
                }
                Err(e) => log::error!(
                    "netd: {}: applying the lease of {}: {e}",
                    link.name,
                    lease.address
                ),
            }
            let search = lease.domain.clone().into_iter().collect();
            reporter.set_dns(&link.name, lease.dns.clone(), search);
        }
        Event::Lost(lease) => {
            if let Err(e) = state.lost(&mut nl, &lease) {
                log::error!("netd: {}: removing {}: {e}", link.name, lease.address);
            }
            reporter.set_dns(&link.name, Vec::new(), Vec::new());
            reporter.status(&format!("offline {} {}", link.name, lease.address));
        }
    };
    match client.run(stop, &mut on_event) {
        Ok(Some(lease)) => {
            client.release(&lease);
            log::info!("netd: {} released {}", link.name, lease.address);
        }
        Ok(None) => {}
        Err(e) => log::error!("netd: {e}"),
    }
}

/// The default options of a berth host.
pub fn default_options(hostname: Option<String>, config: &NetworkConfig) -> Options {
    Options {
        resolv_conf: Path::new("/etc/resolv.conf").to_path_buf(),
        protected: vec![config.bridge.subnet],
        hostname,
        timing: dhcp::Timing::default(),
    }
}
