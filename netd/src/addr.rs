//! IPv4 prefixes: parsing `10.88.0.0/16`, masks, broadcast addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// An IPv4 address with a prefix length, such as `192.168.1.10/24` or `10.88.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Net, String> {
        if prefix > 32 {
            return Err(format!("prefix length /{prefix} is longer than 32"));
        }
        Ok(Ipv4Net { addr, prefix })
    }

    /// The network address: the host bits cleared.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & mask(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        broadcast(self.addr, self.prefix)
    }

    /// True if `ip` is inside this prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network())
    }

    /// True if the two prefixes share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The number of addresses in the prefix.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The address `n` places after the network address, if inside the prefix.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        if n >= self.size() {
            return None;
        }
        Some(Ipv4Addr::from(
            u32::from(self.network()).wrapping_add(n as u32),
        ))
    }
}

/// Ranges that are never a route's destination or a container subnet: "this network"
/// (0/8), loopback (127/8), multicast (224/4) and reserved (240/4).
pub const SPECIAL: [Ipv4Net; 4] = [
    Ipv4Net {
        addr: Ipv4Addr::new(0, 0, 0, 0),
        prefix: 8,
    },
    Ipv4Net {
        addr: Ipv4Addr::new(127, 0, 0, 0),
        prefix: 8,
    },
    Ipv4Net {
        addr: Ipv4Addr::new(224, 0, 0, 0),
        prefix: 4,
    },
    Ipv4Net {
        addr: Ipv4Addr::new(240, 0, 0, 0),
        prefix: 4,
    },
];

/// The netmask of a prefix length (`/24` → `255.255.255.0`), as a host-order integer.
pub fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

/// The broadcast address of `addr/prefix`.
pub fn broadcast(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) | !mask(prefix))
}

/// The prefix length of a contiguous netmask; `None` for a mask with holes.
pub fn prefix_of_mask(netmask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(netmask);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(text: &str) -> Result<Ipv4Net, String> {
        let bad = || format!("{text:?} is not an IPv4 prefix: write it as in \"192.168.1.10/24\"");
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Ipv4Net::new(addr, prefix).map_err(|e| format!("{text:?}: {e}"))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_computes() {
        let net: Ipv4Net = "10.88.3.4/16".parse().unwrap();
        assert_eq!(net.network(), Ipv4Addr::new(10, 88, 0, 0));
        assert_eq!(net.broadcast(), Ipv4Addr::new(10, 88, 255, 255));
        assert!(net.contains(Ipv4Addr::new(10, 88, 200, 1)));
        assert!(!net.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert_eq!(net.nth(2), Some(Ipv4Addr::new(10, 88, 0, 2)));
        assert_eq!(net.nth(65536), None);
        assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        let a: Ipv4Net = "10.88.0.0/16".parse().unwrap();
        assert!(a.overlaps(&"10.88.128.0/17".parse().unwrap()));
        assert!(a.overlaps(&"10.0.0.0/8".parse().unwrap()));
        assert!(!a.overlaps(&"10.89.0.0/16".parse().unwrap()));
        assert_eq!(prefix_of_mask(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 0, 255, 0)), None);
        for bad in [
            "10.88.0.0",
            "10.88.0.0/33",
            "10.88.0/16",
            "10.88.0.0/+1",
            "x/8",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad} parsed");
        }
    }
}
