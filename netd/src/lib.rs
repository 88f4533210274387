//! berth's networking, over netlink and nothing else: no `ip`, `iptables` or `dhclient`.
//!
//! - [`netlink`]: a small synchronous rtnetlink client (links, addresses, routes, bridge,
//!   veth pairs created straight into a namespace).
//! - [`nft`]: the `ip berth` nf_tables table (masquerade and published ports), replaced
//!   atomically.
//! - [`ipam`]: container addresses, sticky per name, persisted under a file lock.
//! - [`container`]: joining a container to the bridge from inside its child process.
//! - [`bridge`]: the host side of the container network (bridge, gateway, forwarding).
//! - [`dhcp`] and [`host`]: the host's own addresses, by DHCPv4 or from the config, run
//!   by `berth-init netd`, a child process of PID 1, never by PID 1 itself.
//! - [`config`]: the `[network]` table.

pub mod addr;
pub mod bridge;
pub mod config;
pub mod container;
pub mod dhcp;
pub mod host;
pub mod ipam;
pub mod netlink;
pub mod nft;
pub mod resolv;
