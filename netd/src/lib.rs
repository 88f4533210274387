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
//!   by `berth-helper netd`, a child process of PID 1, never by PID 1 itself.
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

/// A number for transaction ids and interface names: unpredictable enough to avoid
/// collisions, never blocking.
///
/// Not `/dev/urandom` or `getrandom(2)` without flags: before the kernel's random pool
/// is initialised (a second or more after boot in a VM without a hardware RNG) those
/// wait for entropy, and the first DHCP request or container start would wait too. The
/// standard library seeds `RandomState` with `getrandom(GRND_INSECURE)`, which does not.
pub fn nonce_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}
