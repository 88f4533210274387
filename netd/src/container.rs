//! A container's place on a bridge network: its veth, address, route and `/etc` files.
//!
//! [`attach`] runs in the container's child process, after `clone3` has given it a new
//! network namespace and before it execs. The child holds a netlink socket that the
//! parent opened in the host's namespace; with it, one request creates the veth pair
//! with the host end on the bridge and the container end (`eth0`) directly in the
//! child's namespace. A socket opened in the child then gives `eth0` its address and the
//! default route. No link moves between namespaces, and nothing waits on the parent.
//!
//! Tear-down needs no code: when the container's last process exits its namespace goes,
//! `eth0` with it, and the kernel removes the host end of the pair asynchronously.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;

use crate::netlink::{Netlink, NetlinkError, Route4, VethPeer, LOOPBACK_INDEX};

/// The container's interface name.
pub const INTERFACE: &str = "eth0";

/// Everything the child needs to join the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub bridge_index: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// The other containers on the network, for `/etc/hosts`.
    pub peers: Vec<(String, Ipv4Addr)>,
}

/// What failed while joining the bridge.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("opening the container's network namespace: {0}")]
    Namespace(#[source] std::io::Error),
    #[error("creating the veth pair on the bridge: {0}")]
    Veth(#[source] NetlinkError),
    #[error("configuring {INTERFACE} inside the container: {0}")]
    Inside(#[source] NetlinkError),
    #[error("no netlink socket in the host's namespace was passed to the container")]
    NoSocket,
}

/// A stable MAC for an address (`02:b3` and the four octets, locally administered), so a
/// container that restarts with its address also keeps its MAC and no ARP cache goes
/// stale.
pub fn mac_for(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0xb3, a, b, c, d]
}

/// A fresh name for the host end: `vb` and 8 hex digits of [`crate::nonce_u32`]. The kernel removes the
/// host end of a stopped container's pair asynchronously, so a name derived from the
/// container could still be taken when it restarts.
fn host_end_name() -> String {
    format!("vb{:08x}", crate::nonce_u32())
}

/// Joins the bridge: see the module docs. `host` is a socket in the host's namespace;
/// the caller is in the container's new network namespace.
pub fn attach(host: &mut Netlink, a: &Attachment) -> Result<(), AttachError> {
    let netns = File::open("/proc/thread-self/ns/net").map_err(AttachError::Namespace)?;
    host.create_veth(
        &host_end_name(),
        Some(a.bridge_index),
        a.mtu,
        &VethPeer {
            name: INTERFACE,
            netns: netns.as_fd(),
            mac: Some(mac_for(a.address)),
        },
    )
    .map_err(AttachError::Veth)?;
    let mut inside = Netlink::open().map_err(AttachError::Inside)?;
    inside
        .set_link(LOOPBACK_INDEX, true, None, None)
        .map_err(AttachError::Inside)?;
    let eth0 = inside.link(INTERFACE).map_err(AttachError::Inside)?;
    inside
        .set_link(eth0.index, true, None, None)
        .map_err(AttachError::Inside)?;
    inside
        .add_address(eth0.index, IpAddr::V4(a.address), a.prefix)
        .map_err(AttachError::Inside)?;
    inside
        .add_route(&Route4 {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(a.gateway),
            interface: eth0.index,
            source: None,
            metric: None,
        })
        .map_err(AttachError::Inside)?;
    Ok(())
}

/// `/etc/hosts` for a container: localhost, its own name on its address (or 127.0.1.1
/// without one), then the other containers on its network.
pub fn hosts_file(hostname: &str, own: Option<Ipv4Addr>, peers: &[(String, Ipv4Addr)]) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match own {
        Some(ip) => text.push_str(&format!("{ip}\t{hostname}\n")),
        None => text.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    for (name, ip) in peers {
        if name != hostname {
            text.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    text
}

/// The host's `resolv.conf` as a bridged container should see it: nameservers on the
/// host's loopback cannot be reached from the container's namespace and are dropped.
pub fn container_resolv_conf(host: &str) -> String {
    host.lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(server)) => {
                    !server.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
                }
                _ => true,
            }
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lists_peers_but_not_itself() {
        let peers = vec![
            ("db".to_string(), Ipv4Addr::new(10, 88, 0, 2)),
            ("web".to_string(), Ipv4Addr::new(10, 88, 0, 3)),
        ];
        let text = hosts_file("web", Some(Ipv4Addr::new(10, 88, 0, 3)), &peers);
        assert!(text.contains("10.88.0.2\tdb\n"));
        assert!(text.contains("10.88.0.3\tweb\n"));
        assert_eq!(text.matches("\tweb").count(), 1, "{text}");
        assert!(hosts_file("x", None, &[]).contains("127.0.1.1\tx\n"));
    }

    #[test]
    fn loopback_nameservers_are_dropped() {
        let host = "search lan\nnameserver 127.0.0.53\nnameserver 10.0.2.3\nnameserver ::1\n";
        assert_eq!(
            container_resolv_conf(host),
            "search lan\nnameserver 10.0.2.3\n"
        );
    }

    #[test]
    fn mac_is_local_and_unicast() {
        let mac = mac_for(Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(mac[0] & 0b11, 0b10);
        assert_eq!(&mac[2..], &[10, 88, 0, 2]);
    }
}
