//! The host side of the container network: the bridge with the gateway address, IP
//! forwarding, and the NAT table.

use std::net::IpAddr;

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
}

/// The prepared bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bridge {
    pub index: u32,
    pub mtu: u32,
}

/// Creates the bridge (or finds it), gives it the gateway address, and turns on IPv4
/// forwarding. Idempotent.
pub fn ensure(nl: &mut Netlink, config: &BridgeConfig) -> Result<Bridge, BridgeError> {
    let name = &config.name.0;
    let err = |source| BridgeError::Link {
        name: name.clone(),
        source,
    };
    let index = nl.ensure_bridge(name).map_err(err)?;
    nl.add_address(index, IpAddr::V4(config.gateway()), config.subnet.prefix)
        .map_err(err)?;
    let link = nl.link(name).map_err(err)?;
    let path = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(path, "1").map_err(|source| BridgeError::Sysctl { path, source })?;
    // Published ports bound to 127.0.0.1 are DNATed to the bridge: the kernel must accept
    // loopback sources routed there.
    let localnet = format!("/proc/sys/net/ipv4/conf/{name}/route_localnet");
    if let Err(e) = std::fs::write(&localnet, "1") {
        log::warn!("cannot enable {localnet}: {e}; ports published on 127.0.0.1 will not answer");
    }
    Ok(Bridge {
        index,
        mtu: if link.mtu == 0 { 1500 } else { link.mtu },
    })
}

/// Writes the NAT table for the bridge and `ports`.
pub fn apply_nat(config: &BridgeConfig, ports: Vec<PortForward>) -> Result<(), BridgeError> {
    nft::apply(&NatRules {
        bridge: config.name.0.clone(),
        subnet: config.subnet,
        ports,
    })?;
    Ok(())
}
