//! The host side of the container network: the bridge with the gateway address, IP
//! forwarding, and the NAT table.

use std::net::IpAddr;
use std::path::Path;

use crate::config::PortSpec;
use crate::container::Attachment;
use crate::ipam::{Holder, Ipam, IpamError, Lease};

use crate::config::BridgeConfig;
use crate::netlink::{Netlink, NetlinkError};
use crate::nft::{self, NatRules, NftError, PortForward};

/// What failed while preparing the bridge network.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge {name}: {source}")]
    Link {
        name: String,
        #[source]
        source: NetlinkError,
    },
    #[error("enabling {path}: {source}")]
    Sysctl {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("NAT rules: {0}")]
    Nat(#[from] NftError),
    #[error("container addresses: {0}")]
    Ipam(#[from] IpamError),
}

/// The prepared bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bridge {
    pub index: u32,
    pub mtu: u32,
}

/// Creates the bridge (or finds it) and gives it the gateway address. Idempotent.
pub fn ensure(nl: &mut Netlink, config: &BridgeConfig) -> Result<Bridge, BridgeError> {
    let name = &config.name.0;
    let err = |source| BridgeError::Link {
        name: name.clone(),
        source,
    };
    let link = nl.ensure_bridge(name).map_err(err)?;
    nl.add_address(
        link.index,
        IpAddr::V4(config.gateway()),
        config.subnet.prefix,
    )
    .map_err(err)?;
    Ok(Bridge {
        index: link.index,
        mtu: if link.mtu == 0 { 1500 } else { link.mtu },
    })
}

/// Rewrites the NAT table from every live lease's published ports, under the lease
/// lock; returns those leases. `forward_only_containers` as for [`apply_nat`].
pub fn apply_nat_from_leases(
    config: &BridgeConfig,
    ipam: &Ipam,
    forward_only_containers: bool,
) -> Result<Vec<Lease>, BridgeError> {
    ipam.with_live_leases(|leases| {
        let ports: Vec<PortForward> = leases
            .iter()
            .flat_map(|l| {
                l.ports.iter().map(|p| PortForward {
                    host_ip: p.host_ip,
                    host_port: p.host_port,
                    protocol: p.protocol,
                    container_ip: l.address,
                    container_port: p.container_port,
                })
            })
            .collect();
        apply_nat(config, ports, forward_only_containers).map(|()| leases.to_vec())
    })?
}

/// A container joined to the bridge by a process that is not PID 1 (`berth run`): its
/// lease, given back when this is dropped. The host is an ordinary one, whose own
/// forwarding the NAT table leaves alone.
pub struct Joined {
    ipam: Ipam,
    config: BridgeConfig,
    name: String,
    holder: Holder,
}

/// Prepares the bridge, leases `name` an address, publishes `ports`, and returns the
/// attachment the container child needs. `peers` in it are the other live containers.
pub fn join(
    state_dir: &Path,
    config: &BridgeConfig,
    name: &str,
    ports: &[PortSpec],
) -> Result<(Attachment, Joined), BridgeError> {
    let mut nl = Netlink::open().map_err(|source| BridgeError::Link {
        name: config.name.0.clone(),
        source,
    })?;
    let bridge = ensure(&mut nl, config)?;
    let ipam = Ipam::new(&state_dir.join("network"), config.subnet);
    let holder = Holder::current();
    let address = ipam.allocate(name, holder, ports)?;
    let joined = Joined {
        ipam,
        config: config.clone(),
        name: name.to_owned(),
        holder,
    };
    let peers = apply_nat_from_leases(config, &joined.ipam, false)?
        .into_iter()
        .map(|l| (l.name, l.address))
        .collect();
    Ok((
        Attachment {
            bridge_index: bridge.index,
            address,
            prefix: config.subnet.prefix,
            gateway: config.gateway(),
            mtu: bridge.mtu,
            peers,
        },
        joined,
    ))
}

impl Joined {
    /// Makes the container's process (`pid`, on the host) the lease's holder: if the
    /// process that joined dies first, the container keeps its address until it exits.
    pub fn hand_over(&mut self, pid: u32) -> Result<(), BridgeError> {
        let to = Holder::of(pid);
        self.ipam.transfer(&self.name, self.holder, to)?;
        self.holder = to;
        Ok(())
    }

    /// Gives the address back and removes the container's ports from the NAT table.
    fn give_back(&self) -> Result<(), BridgeError> {
        self.ipam.release(&self.name, self.holder)?;
        apply_nat_from_leases(&self.config, &self.ipam, false)?;
        Ok(())
    }
}

/// Leaving the bridge is dropping the lease, on every path: a failed `join`, a failed
/// start, or the container's exit.
impl Drop for Joined {
    fn drop(&mut self) {
        if let Err(e) = self.give_back() {
            log::warn!("container {}: leaving the bridge network: {e}", self.name);
        }
    }
}

/// Writes the NAT table for the bridge and `ports`, and lets the kernel route loopback
/// sources to the bridge (`route_localnet`) only while a port the host's 127.0.0.1 can
/// reach is published; the table's `guard` chain keeps the bridge from reaching the host's
/// loopback either way.
///
/// `forward_only_containers`: the machine forwards nothing but its containers' traffic
/// (PID 1 on a berth host, where berth turns forwarding on for its containers only).
/// False for `berth run` on an ordinary host, whose own forwarding (Docker, libvirt, a
/// VPN) must keep working.
pub fn apply_nat(
    config: &BridgeConfig,
    ports: Vec<PortForward>,
    forward_only_containers: bool,
) -> Result<(), BridgeError> {
    // Reaching a port from the host's own 127.0.0.1 (published on every address, or on
    // a loopback one) routes a loopback source to the bridge.
    let localnet = ports
        .iter()
        .any(|p| p.host_ip.is_none_or(|ip| ip.is_loopback()));
    let applied = nft::apply(&NatRules {
        bridge: config.name.0.clone(),
        subnet: config.subnet,
        ports,
        forward_only_containers,
    });
    // route_localnet only with the table (and its guard chain) in place.
    let path = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", config.name.0);
    let on = localnet && applied.is_ok();
    if let Err(e) = std::fs::write(&path, if on { "1" } else { "0" }) {
        log::warn!("cannot set {path}: {e}; ports may not answer on 127.0.0.1");
    }
    applied?;
    // Forwarding only once the table that filters it is in place.
    let path = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(path, "1").map_err(|source| BridgeError::Sysctl { path, source })?;
    Ok(())
}
