//! The `[network]` table of the host config.
//!
//! ```toml
//! [network]
//! # Without any [[network.interface]], every ethernet-like interface uses DHCPv4.
//! [[network.interface]]
//! match = { name = "eth0" }          # or { mac = "52:54:00:12:34:56" }
//! dhcp = true
//! # addresses = ["192.168.1.10/24"]  # static instead of (or besides) DHCP
//! # gateway = "192.168.1.1"
//! # dns = ["1.1.1.1"]
//! # mtu = 1500
//!
//! [network.bridge]                   # the container network
//! name = "berth0"
//! subnet = "10.88.0.0/16"
//! ```

use std::net::Ipv4Addr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::nft::Protocol;

use crate::addr::Ipv4Net;

/// The `[network]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Per-interface settings; none means DHCPv4 on every ethernet-like interface.
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    /// The bridge containers with `network = "bridge"` join.
    #[serde(default)]
    pub bridge: BridgeConfig,
}

/// How an interface is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Match {
    Name(InterfaceName),
    Mac(MacAddr),
}

/// One `[[network.interface]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Which interface: `{ name = "eth0" }` or `{ mac = "52:54:00:12:34:56" }`.
    #[serde(rename = "match", deserialize_with = "one_match")]
    pub matches: Match,
    /// Run the DHCPv4 client on it. Default: true when `addresses` is empty.
    pub dhcp: Option<bool>,
    /// Static addresses with their prefix lengths.
    #[serde(default)]
    pub addresses: Vec<Ipv4Net>,
    /// The default gateway for the static addresses.
    pub gateway: Option<Ipv4Addr>,
    /// Nameservers for `/etc/resolv.conf`, before any DHCP gives.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// The link MTU (68 to 65535); DHCP's MTU option applies when this is absent.
    pub mtu: Option<u32>,
}

impl InterfaceConfig {
    pub fn uses_dhcp(&self) -> bool {
        self.dhcp.unwrap_or(self.addresses.is_empty())
    }

    /// Checks what serde cannot: a gateway needs an address, an MTU its range.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(format!("mtu {mtu} is outside 68..=65535"));
            }
        }
        if self.gateway.is_some() && self.addresses.is_empty() {
            return Err(
                "gateway is set but addresses is empty: a static gateway needs a static address"
                    .into(),
            );
        }
        if !self.uses_dhcp() && self.addresses.is_empty() {
            return Err("dhcp = false and no addresses: the interface would get no address".into());
        }
        Ok(())
    }

    /// True if this entry is for `link`.
    pub fn matches(&self, name: &str, mac: &[u8]) -> bool {
        match &self.matches {
            Match::Name(n) => n.0 == name,
            Match::Mac(m) => m.0 == mac,
        }
    }
}

fn one_match<'de, D: Deserializer<'de>>(d: D) -> Result<Match, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        name: Option<InterfaceName>,
        mac: Option<MacAddr>,
    }
    match Raw::deserialize(d)? {
        Raw {
            name: Some(n),
            mac: None,
        } => Ok(Match::Name(n)),
        Raw {
            name: None,
            mac: Some(m),
        } => Ok(Match::Mac(m)),
        _ => Err(de::Error::custom(
            "match takes exactly one of name = \"eth0\" or mac = \"52:54:00:12:34:56\"",
        )),
    }
}

/// The `[network.bridge]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The bridge interface; default `berth0`.
    #[serde(default = "default_bridge")]
    pub name: InterfaceName,
    /// The container subnet; the first host address is the bridge's (the gateway).
    #[serde(default = "default_subnet", deserialize_with = "container_subnet")]
    pub subnet: Ipv4Net,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            name: default_bridge(),
            subnet: default_subnet(),
        }
    }
}

impl BridgeConfig {
    /// The bridge's own address, the containers' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.nth(1).unwrap_or(self.subnet.addr)
    }
}

fn default_bridge() -> InterfaceName {
    InterfaceName("berth0".into())
}

fn default_subnet() -> Ipv4Net {
    Ipv4Net {
        addr: Ipv4Addr::new(10, 88, 0, 0),
        prefix: 16,
    }
}

fn container_subnet<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
    let net = Ipv4Net::deserialize(d)?;
    if !(8..=29).contains(&net.prefix) {
        return Err(de::Error::custom(format!(
            "subnet {net} must be between /8 and /29"
        )));
    }
    if let Some(special) = crate::addr::SPECIAL.iter().find(|s| s.overlaps(&net)) {
        return Err(de::Error::custom(format!(
            "subnet {net} overlaps {special}, which is not routable"
        )));
    }
    if net.addr != net.network() {
        return Err(de::Error::custom(format!(
            "subnet {net} has host bits set: write {}/{}",
            net.network(),
            net.prefix
        )));
    }
    Ok(net)
}

/// A Linux interface name: 1 to 15 bytes, no `/`, whitespace or `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceName(pub String);

impl InterfaceName {
    pub fn parse(name: &str) -> Result<InterfaceName, String> {
        let ok = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if ok {
            Ok(InterfaceName(name.to_owned()))
        } else {
            Err(format!(
                "interface name {name:?} is not valid: 1 to 15 printable characters, no '/' or ':'"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for InterfaceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        InterfaceName::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// An ethernet address written `52:54:00:12:34:56`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub fn parse(text: &str) -> Result<MacAddr, String> {
        let bad =
            || format!("MAC address {text:?} is not valid: write it as \"52:54:00:12:34:56\"");
        let mut out = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MacAddr::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// A published port: `"8080:80"`, `"5353:53/udp"`, `"127.0.0.1:9000:9000"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: Option<std::net::Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortSpec {
    pub fn parse(text: &str) -> Result<PortSpec, String> {
        let bad = || {
            format!("port {text:?} is not valid: write \"HOST:CONTAINER\", \"HOST:CONTAINER/udp\" or \"IP:HOST:CONTAINER\" with ports 1 to 65535")
        };
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(bad()),
            None => (text, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [h, c] => (None, *h, *c),
            [ip, h, c] => {
                let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
                // 0.0.0.0 means every address, as with no address at all.
                (Some(ip).filter(|ip| !ip.is_unspecified()), *h, *c)
            }
            _ => return Err(bad()),
        };
        let port = |p: &str| -> Result<u16, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(bad()),
                Ok(n) => Ok(n),
            }
        };
        Ok(PortSpec {
            host_ip: ip,
            host_port: port(host)?,
            container_port: port(container)?,
            protocol,
        })
    }
}

impl std::str::FromStr for PortSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<PortSpec, String> {
        PortSpec::parse(text)
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

impl Serialize for PortSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PortSpec::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NetworkConfig, String> {
        let c: NetworkConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        for i in &c.interfaces {
            i.validate()?;
        }
        Ok(c)
    }

    #[test]
    fn defaults_and_full_table() {
        let c = parse("").unwrap();
        assert!(c.interfaces.is_empty());
        assert_eq!(c.bridge.name.0, "berth0");
        assert_eq!(c.bridge.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        let c = parse(
            r#"
            [[interface]]
            match = { mac = "52:54:00:12:34:56" }
            addresses = ["192.168.1.10/24"]
            gateway = "192.168.1.1"
            dns = ["1.1.1.1"]
            mtu = 9000
            [bridge]
            subnet = "172.30.0.0/24"
            "#,
        )
        .unwrap();
        let i = &c.interfaces[0];
        assert!(!i.uses_dhcp());
        assert!(i.matches("whatever", &[0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(c.bridge.gateway(), Ipv4Addr::new(172, 30, 0, 1));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expect) in [
            (
                "[[interface]]\nmatch = { name = \"eth0\", mac = \"52:54:00:12:34:56\" }",
                "exactly one",
            ),
            (
                "[[interface]]\nmatch = { name = \"a/b\" }",
                "interface name",
            ),
            (
                "[[interface]]\nmatch = { mac = \"52:54:00:12:34\" }",
                "MAC address",
            ),
            (
                "[[interface]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.0.0.1\"]",
                "IPv4 prefix",
            ),
            (
                "[[interface]]\nmatch = { name = \"eth0\" }\nmtu = 20",
                "mtu 20",
            ),
            (
                "[[interface]]\nmatch = { name = \"eth0\" }\ngateway = \"10.0.0.1\"",
                "gateway is set",
            ),
            (
                "[[interface]]\nmatch = { name = \"eth0\" }\ndhcp = false",
                "no addresses",
            ),
            (
                "[[interface]]\nmatch = { name = \"eth0\" }\ndhpc = true",
                "unknown field",
            ),
            ("[bridge]\nsubnet = \"10.88.0.1/16\"", "host bits"),
            ("[bridge]\nsubnet = \"10.88.0.0/30\"", "between /8 and /29"),
            ("[bridge]\nsubnet = \"0.0.0.0/0\"", "between /8 and /29"),
            ("[bridge]\nsubnet = \"127.0.0.0/16\"", "not routable"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn ports_parse_and_mistakes_are_named() {
        let p = PortSpec::parse("127.0.0.1:9000:90/udp").unwrap();
        assert_eq!(p.host_ip, Some(std::net::Ipv4Addr::LOCALHOST));
        assert_eq!((p.host_port, p.container_port), (9000, 90));
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(PortSpec::parse("8080:80").unwrap().protocol.as_str(), "tcp");
        assert_eq!(PortSpec::parse("0.0.0.0:8080:80").unwrap().host_ip, None);
        // Display is the form parse reads back (the lease file stores it).
        assert_eq!(PortSpec::parse(&p.to_string()).unwrap(), p);
        for bad in [
            "80",
            "0:80",
            "8080:80/sctp",
            "x:80",
            "1.2.3:80:80",
            "8080:+80",
            "70000:80",
            ":80",
        ] {
            assert!(PortSpec::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
