//! NAT for container networks, written as nf_tables rules over netlink.
//!
//! berth owns one table, `ip berth`, and replaces it whole in one nf_tables transaction
//! (a batch that creates, deletes and re-creates the table), so the rules are never seen
//! half-written and nothing of an older set survives:
//!
//! ```text
//! table ip berth {
//!   chain prerouting  { type nat hook prerouting priority dstnat;   # published ports
//!     fib daddr type local tcp dport 8080 dnat to 10.88.0.2:80       # or: ip daddr 127.0.0.1 ...
//!   }
//!   chain output      { type nat hook output priority dstnat; (the same rules) }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     ip saddr 10.88.0.0/16 oifname != "berth0" masquerade           # egress
//!     ip saddr 10.88.0.0/16 oifname "berth0" ct status dnat masquerade  # hairpin
//!     ip saddr 127.0.0.0/8 oifname "berth0" masquerade               # host loopback → container
//!   }
//! }
//! ```
//!
//! The messages are encoded here: the only pure-Rust nf_tables crate is GPL-licensed and
//! libnftnl is C, while the handful of expressions berth needs are a stable kernel ABI
//! (`include/uapi/linux/netfilter/nf_tables.h`). Every number written below is from that
//! header; nf_tables attributes are big-endian unless noted.

use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;

use crate::addr::Ipv4Net;

/// The table berth owns.
pub const TABLE: &str = "berth";

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port: traffic to the host's `host_port` goes to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    /// Only traffic to this host address; `None`: any address of the host.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub protocol: Protocol,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

/// Everything the `berth` table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub ports: Vec<PortForward>,
    /// Drop every forwarded packet that is not the containers' (a berth host); else
    /// only what goes into the bridge unasked is dropped.
    pub forward_only_containers: bool,
}

/// What went wrong writing the rules.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Open(#[source] io::Error),
    #[error("sending the nf_tables batch: {0}")]
    Send(#[source] io::Error),
    #[error("reading the nf_tables reply: {0}")]
    Recv(#[source] io::Error),
    #[error("the kernel refused nf_tables message {index} of the batch ({what}): {errno}{hint}")]
    Kernel {
        index: usize,
        what: &'static str,
        errno: Errno,
        hint: &'static str,
    },
    #[error("bridge name {0:?} is longer than 15 bytes")]
    BridgeName(String),
}

// nfnetlink framing.
const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFPROTO_IPV4: u8 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;

// Message types (enum nf_tables_msg_types).
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;

// Attributes.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

// Netfilter hooks and NAT priorities.
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_IP_PRI_NAT_DST: i32 = -100;
const NF_IP_PRI_NAT_SRC: i32 = 100;
const NF_IP_PRI_RAW: i32 = -300;
const NF_IP_PRI_FILTER: i32 = 0;

/// The first 16-byte data register, and the second.
const REG_1: u32 = 1;
const REG_2: u32 = 2;

/// Bytes of an interface name in a register (IFNAMSIZ).
const IFNAMSIZ: usize = 16;

/// Builds one netlink message with nested attributes.
struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    /// An nfnetlink message: nlmsghdr, then nfgenmsg for `family`.
    fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Message {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Message {
            buf,
            nests: Vec::new(),
        }
    }

    fn nft(kind: u16, flags: u16, seq: u32) -> Message {
        Message::new(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            NFPROTO_IPV4,
            0,
        )
    }

    fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Message {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    fn string(&mut self, kind: u16, value: &str) -> &mut Message {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.bytes(kind, &bytes)
    }

    fn be32(&mut self, kind: u16, value: u32) -> &mut Message {
        self.bytes(kind, &value.to_be_bytes())
    }

    fn begin(&mut self, kind: u16) -> &mut Message {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Message {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            if let Some(slot) = self.buf.get_mut(start..start + 2) {
                slot.copy_from_slice(&len.to_ne_bytes());
            }
        }
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        if let Some(slot) = self.buf.get_mut(0..4) {
            slot.copy_from_slice(&len.to_ne_bytes());
        }
        self.buf
    }
}

/// One expression of a rule; see `linux/netfilter/nf_tables.h` for each.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// `meta KEY` into a register.
    Meta {
        key: u32,
        dreg: u32,
    },
    /// A header field into a register: base 1 is the network header, 2 the transport.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `reg = (reg & mask) ^ 0`.
    Mask {
        reg: u32,
        mask: Vec<u8>,
    },
    /// Compare a register with a value: op 0 is ==, 1 is !=.
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    /// A conntrack key (`ct state`, `ct status`) into a register.
    Ct {
        key: u32,
        dreg: u32,
    },
    /// A verdict: `accept` or `drop`.
    Verdict(u32),
    /// `fib daddr type` into a register.
    FibDaddrType {
        dreg: u32,
    },
    /// Load a constant into a register.
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    /// DNAT to the address in `REG_1` and the port in `REG_2`.
    Dnat,
    Masquerade,
}

const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
/// `ct state established,related` bits (NF_CT_STATE_BIT of IP_CT_ESTABLISHED, _RELATED).
const CT_STATE_ESTABLISHED_RELATED: u32 = (1 << 1) | (1 << 2);
const NFT_META_IIFNAME: u32 = 6;
const NFT_REG_VERDICT: u32 = 0;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const IPS_DST_NAT: u32 = 0x20;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const NFT_NAT_DNAT: u32 = 1;

impl Expr {
    fn encode(&self, m: &mut Message) {
        m.begin(NFTA_LIST_ELEM);
        match self {
            Expr::Meta { key, dreg } => {
                m.string(NFTA_EXPR_NAME, "meta").begin(NFTA_EXPR_DATA);
                m.be32(1, *dreg).be32(2, *key); // NFTA_META_DREG, NFTA_META_KEY
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                m.string(NFTA_EXPR_NAME, "payload").begin(NFTA_EXPR_DATA);
                // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
                m.be32(1, *dreg)
                    .be32(2, *base)
                    .be32(3, *offset)
                    .be32(4, *len);
            }
            Expr::Mask { reg, mask } => {
                m.string(NFTA_EXPR_NAME, "bitwise").begin(NFTA_EXPR_DATA);
                // NFTA_BITWISE_SREG, _DREG, _LEN, _MASK, _XOR
                m.be32(1, *reg).be32(2, *reg).be32(3, mask.len() as u32);
                m.begin(4).bytes(NFTA_DATA_VALUE, mask).end();
                m.begin(5)
                    .bytes(NFTA_DATA_VALUE, &vec![0; mask.len()])
                    .end();
            }
            Expr::Cmp { sreg, op, data } => {
                m.string(NFTA_EXPR_NAME, "cmp").begin(NFTA_EXPR_DATA);
                // NFTA_CMP_SREG, _OP, _DATA
                m.be32(1, *sreg).be32(2, *op);
                m.begin(3).bytes(NFTA_DATA_VALUE, data).end();
            }
            Expr::Ct { key, dreg } => {
                m.string(NFTA_EXPR_NAME, "ct").begin(NFTA_EXPR_DATA);
                m.be32(1, *dreg).be32(2, *key); // NFTA_CT_DREG, NFTA_CT_KEY
            }
            Expr::Verdict(code) => {
                m.string(NFTA_EXPR_NAME, "immediate").begin(NFTA_EXPR_DATA);
                m.be32(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
                                            // NFTA_IMMEDIATE_DATA { NFTA_DATA_VERDICT { NFTA_VERDICT_CODE } }
                m.begin(2).begin(2).be32(1, *code).end().end();
            }
            Expr::FibDaddrType { dreg } => {
                m.string(NFTA_EXPR_NAME, "fib").begin(NFTA_EXPR_DATA);
                // NFTA_FIB_DREG, _RESULT, _FLAGS
                m.be32(1, *dreg)
                    .be32(2, NFT_FIB_RESULT_ADDRTYPE)
                    .be32(3, NFTA_FIB_F_DADDR);
            }
            Expr::Immediate { dreg, data } => {
                m.string(NFTA_EXPR_NAME, "immediate").begin(NFTA_EXPR_DATA);
                m.be32(1, *dreg); // NFTA_IMMEDIATE_DREG
                m.begin(2).bytes(NFTA_DATA_VALUE, data).end(); // NFTA_IMMEDIATE_DATA
            }
            Expr::Dnat => {
                m.string(NFTA_EXPR_NAME, "nat").begin(NFTA_EXPR_DATA);
                // NFTA_NAT_TYPE, _FAMILY, _REG_ADDR_MIN, _REG_PROTO_MIN
                m.be32(1, NFT_NAT_DNAT).be32(2, u32::from(NFPROTO_IPV4));
                m.be32(3, REG_1).be32(5, REG_2);
            }
            Expr::Masquerade => {
                m.string(NFTA_EXPR_NAME, "masq").begin(NFTA_EXPR_DATA);
            }
        }
        m.end(); // NFTA_EXPR_DATA
        m.end(); // NFTA_LIST_ELEM
    }
}

fn ifname(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAMSIZ, 0);
    bytes
}

fn saddr_in(net: Ipv4Net) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset: 12,
            len: 4,
            dreg: REG_1,
        },
        Expr::Mask {
            reg: REG_1,
            mask: crate::addr::mask(net.prefix).to_be_bytes().to_vec(),
        },
        Expr::Cmp {
            sreg: REG_1,
            op: NFT_CMP_EQ,
            data: net.network().octets().to_vec(),
        },
    ]
}

/// The expressions of one published port's DNAT rule.
fn dnat_rule(port: &PortForward) -> Vec<Expr> {
    let mut exprs = match port.host_ip {
        None => vec![
            Expr::FibDaddrType { dreg: REG_1 },
            Expr::Cmp {
                sreg: REG_1,
                op: NFT_CMP_EQ,
                data: RTN_LOCAL.to_ne_bytes().to_vec(),
            },
        ],
        Some(ip) => vec![
            Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset: 16,
                len: 4,
                dreg: REG_1,
            },
            Expr::Cmp {
                sreg: REG_1,
                op: NFT_CMP_EQ,
                data: ip.octets().to_vec(),
            },
        ],
    };
    exprs.extend([
        Expr::Meta {
            key: NFT_META_L4PROTO,
            dreg: REG_1,
        },
        Expr::Cmp {
            sreg: REG_1,
            op: NFT_CMP_EQ,
            data: vec![port.protocol.number()],
        },
        Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 2,
            len: 2,
            dreg: REG_1,
        },
        Expr::Cmp {
            sreg: REG_1,
            op: NFT_CMP_EQ,
            data: port.host_port.to_be_bytes().to_vec(),
        },
        Expr::Immediate {
            dreg: REG_1,
            data: port.container_ip.octets().to_vec(),
        },
        Expr::Immediate {
            dreg: REG_2,
            data: port.container_port.to_be_bytes().to_vec(),
        },
        Expr::Dnat,
    ]);
    exprs
}

fn ifname_is(key: u32, op: u32, name: &str) -> Vec<Expr> {
    vec![
        Expr::Meta { key, dreg: REG_1 },
        Expr::Cmp {
            sreg: REG_1,
            op,
            data: ifname(name),
        },
    ]
}

fn ct_bits(key: u32, bits: u32) -> Vec<Expr> {
    vec![
        Expr::Ct { key, dreg: REG_1 },
        Expr::Mask {
            reg: REG_1,
            mask: bits.to_ne_bytes().to_vec(),
        },
        Expr::Cmp {
            sreg: REG_1,
            op: NFT_CMP_NEQ,
            data: 0u32.to_ne_bytes().to_vec(),
        },
    ]
}

/// `guard` (raw priority, before DNAT): nothing from the bridge may address the host's
/// loopback. `route_localnet`, needed for ports published on 127.0.0.1, would
/// otherwise let a container reach services bound to the host's 127.0.0.1.
fn guard_rules(rules: &NatRules) -> Vec<Vec<Expr>> {
    let mut r = ifname_is(NFT_META_IIFNAME, NFT_CMP_EQ, &rules.bridge);
    r.extend([
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset: 16,
            len: 4,
            dreg: REG_1,
        },
        Expr::Mask {
            reg: REG_1,
            mask: crate::addr::mask(8).to_be_bytes().to_vec(),
        },
        Expr::Cmp {
            sreg: REG_1,
            op: NFT_CMP_EQ,
            data: vec![127, 0, 0, 0],
        },
        Expr::Verdict(NF_DROP),
    ]);
    vec![r]
}

/// `forward`: replies and published ports into the bridge, anything out of it, and
/// nothing else into it: a LAN host routing the container subnet through this one
/// reaches no unpublished port. On a berth host (`forward_only_containers`), where
/// berth turns IPv4 forwarding on for its containers only, nothing else is routed at
/// all: the host does not become a router between its other interfaces. On an
/// ordinary host the machine's own forwarding is left alone.
fn forward_rules(rules: &NatRules) -> Vec<Vec<Expr>> {
    let into = |extra: Vec<Expr>, verdict: u32| {
        let mut r = ifname_is(NFT_META_OIFNAME, NFT_CMP_EQ, &rules.bridge);
        r.extend(extra);
        r.push(Expr::Verdict(verdict));
        r
    };
    let mut out_of = ifname_is(NFT_META_IIFNAME, NFT_CMP_EQ, &rules.bridge);
    out_of.push(Expr::Verdict(NF_ACCEPT));
    vec![
        into(
            ct_bits(NFT_CT_STATE, CT_STATE_ESTABLISHED_RELATED),
            NF_ACCEPT,
        ),
        into(ct_bits(NFT_CT_STATUS, IPS_DST_NAT), NF_ACCEPT),
        out_of,
        if rules.forward_only_containers {
            vec![Expr::Verdict(NF_DROP)]
        } else {
            into(Vec::new(), NF_DROP)
        },
    ]
}

/// The postrouting rules: egress masquerade, hairpin, and host loopback to a container.
fn masquerade_rules(rules: &NatRules) -> Vec<Vec<Expr>> {
    let loopback = Ipv4Net {
        addr: Ipv4Addr::new(127, 0, 0, 0),
        prefix: 8,
    };
    let mut egress = saddr_in(rules.subnet);
    egress.extend(ifname_is(NFT_META_OIFNAME, NFT_CMP_NEQ, &rules.bridge));
    egress.push(Expr::Masquerade);

    let mut hairpin = saddr_in(rules.subnet);
    hairpin.extend(ifname_is(NFT_META_OIFNAME, NFT_CMP_EQ, &rules.bridge));
    hairpin.extend(ct_bits(NFT_CT_STATUS, IPS_DST_NAT));
    hairpin.push(Expr::Masquerade);

    let mut from_loopback = saddr_in(loopback);
    from_loopback.extend(ifname_is(NFT_META_OIFNAME, NFT_CMP_EQ, &rules.bridge));
    from_loopback.push(Expr::Masquerade);
    vec![egress, hairpin, from_loopback]
}

/// The whole batch that replaces the `berth` table; each entry names its message.
fn batch(rules: &NatRules) -> Vec<(&'static str, Vec<u8>)> {
    let mut seq = 0u32;
    let mut next = || {
        seq += 1;
        seq
    };
    let mut out = Vec::new();
    let subsys = NFNL_SUBSYS_NFTABLES;
    out.push((
        "batch begin",
        Message::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, next(), 0, subsys).finish(),
    ));
    // Create (if missing), delete, re-create: an atomic replace.
    for (what, kind, flags) in [
        ("create table", NFT_MSG_NEWTABLE, NLM_F_CREATE),
        ("delete table", NFT_MSG_DELTABLE, 0),
        ("create table", NFT_MSG_NEWTABLE, NLM_F_CREATE),
    ] {
        let mut m = Message::nft(kind, flags, next());
        m.string(NFTA_TABLE_NAME, TABLE);
        out.push((what, m.finish()));
    }
    let chains = [
        ("guard", NF_INET_PRE_ROUTING, NF_IP_PRI_RAW, "filter"),
        ("prerouting", NF_INET_PRE_ROUTING, NF_IP_PRI_NAT_DST, "nat"),
        ("output", NF_INET_LOCAL_OUT, NF_IP_PRI_NAT_DST, "nat"),
        ("forward", NF_INET_FORWARD, NF_IP_PRI_FILTER, "filter"),
        (
            "postrouting",
            NF_INET_POST_ROUTING,
            NF_IP_PRI_NAT_SRC,
            "nat",
        ),
    ];
    for (name, hook, priority, kind) in chains {
        let mut m = Message::nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE, next());
        m.string(NFTA_CHAIN_TABLE, TABLE)
            .string(NFTA_CHAIN_NAME, name);
        m.begin(NFTA_CHAIN_HOOK)
            .be32(NFTA_HOOK_HOOKNUM, hook)
            .be32(NFTA_HOOK_PRIORITY, priority as u32)
            .end();
        m.string(NFTA_CHAIN_TYPE, kind);
        out.push(("create chain", m.finish()));
    }
    let rule = |chain: &str, exprs: &[Expr], seq: u32| {
        let mut m = Message::nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, seq);
        m.string(NFTA_RULE_TABLE, TABLE)
            .string(NFTA_RULE_CHAIN, chain);
        m.begin(NFTA_RULE_EXPRESSIONS);
        for e in exprs {
            e.encode(&mut m);
        }
        m.end();
        m.finish()
    };
    for exprs in guard_rules(rules) {
        out.push(("add guard rule", rule("guard", &exprs, next())));
    }
    for exprs in forward_rules(rules) {
        out.push(("add forward rule", rule("forward", &exprs, next())));
    }
    for port in &rules.ports {
        let exprs = dnat_rule(port);
        out.push(("add port rule", rule("prerouting", &exprs, next())));
        out.push(("add port rule", rule("output", &exprs, next())));
    }
    for exprs in masquerade_rules(rules) {
        out.push(("add masquerade rule", rule("postrouting", &exprs, next())));
    }
    out.push((
        "batch end",
        Message::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, next(), 0, subsys).finish(),
    ));
    out
}

/// The receive buffer for a batch's ACKs: with `NETLINK_CAP_ACK` each is 36 bytes.
const ACK_BUFFER_BYTES: usize = 1 << 20;

/// The batch's size, for the send buffer (the kernel doubles what it is given).
fn bytes_len(messages: &[(&'static str, Vec<u8>)]) -> usize {
    messages
        .iter()
        .map(|(_, m)| m.len())
        .sum::<usize>()
        .max(64 * 1024)
}

/// Replaces the `berth` table with `rules`, atomically.
pub fn apply(rules: &NatRules) -> Result<(), NftError> {
    if rules.bridge.len() >= IFNAMSIZ {
        return Err(NftError::BridgeName(rules.bridge.clone()));
    }
    let messages = batch(rules);
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::Open)?;
    socket.bind_auto().map_err(NftError::Open)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(NftError::Open)?;
    // One ACK per message: keep each small (no copy of the request) and give them room,
    // so a table with hundreds of ports is not reported failed after it committed.
    // The *Force options pass the rmem_max/wmem_max caps (we are root): the plain
    // ones would be cut to about 208 KiB without a word.
    socket.set_cap_ack(true).map_err(NftError::Open)?;
    {
        use nix::sys::socket::{setsockopt, sockopt};
        setsockopt(&socket, sockopt::RcvBufForce, &ACK_BUFFER_BYTES)
            .and_then(|()| setsockopt(&socket, sockopt::SndBufForce, &bytes_len(&messages)))
            .map_err(|e| NftError::Open(e.into()))?;
    }
    crate::netlink::set_reply_timeout(&socket).map_err(NftError::Open)?;
    let bytes: Vec<u8> = messages
        .iter()
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    socket.send(&bytes, 0).map_err(NftError::Send)?;

    // Every message but the batch markers asked for an ACK; the transaction is all or
    // nothing, so the first error is the answer.
    let expected = messages.len() - 2;
    let mut acked = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while acked < expected {
        let n = match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(NftError::Recv(e)),
        };
        let mut rest = buf.get(..n).unwrap_or(&[]);
        while let (Some(len), Some(kind), Some(seq)) = (
            read_u32(rest, 0).map(|l| l as usize),
            read_u16(rest, 4),
            read_u32(rest, 8),
        ) {
            if len < 16 || len > rest.len() {
                break;
            }
            if kind == NLMSG_ERROR {
                let code = read_u32(rest, 16).map(|c| c as i32).unwrap_or(0);
                if code != 0 {
                    let index = (seq as usize).saturating_sub(1);
                    let what = messages.get(index).map(|(w, _)| *w).unwrap_or("?");
                    let errno = Errno::from_raw(code.saturating_neg());
                    return Err(NftError::Kernel {
                        index,
                        what,
                        errno,
                        hint: match errno {
                            Errno::ENOENT | Errno::EOPNOTSUPP => {
                                " (are the nf_tables, nft_chain_nat, nft_nat, nft_masq, nft_ct and nft_fib_ipv4 modules loaded?)"
                            }
                            _ => "",
                        },
                    });
                }
                acked += 1;
            }
            rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        }
    }
    Ok(())
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at + 4)?;
    Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at + 2)?;
    Some(u16::from_ne_bytes([bytes[0], bytes[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_measured() {
        let mut m = Message::nft(NFT_MSG_NEWTABLE, 0, 7);
        m.begin(9).string(1, "abc").be32(2, 5).end();
        let bytes = m.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(read_u32(&bytes, 0), Some(bytes.len() as u32));
        // nlmsghdr (16) + nfgenmsg (4), then the nest header.
        let nest_len = read_u16(&bytes, 20).unwrap();
        assert_eq!(nest_len, 4 + 8 + 8);
        assert_eq!(read_u16(&bytes, 22), Some(9 | NLA_F_NESTED));
        // "abc\0" in a 4-byte attribute header.
        assert_eq!(read_u16(&bytes, 24), Some(8));
        assert_eq!(&bytes[28..32], b"abc\0");
        assert_eq!(&bytes[36..40], &5u32.to_be_bytes());
    }

    #[test]
    fn batch_has_one_rule_per_port_and_chain() {
        let rules = NatRules {
            bridge: "berth0".into(),
            subnet: "10.88.0.0/16".parse().unwrap(),
            ports: vec![PortForward {
                host_ip: None,
                host_port: 8080,
                protocol: Protocol::Tcp,
                container_ip: Ipv4Addr::new(10, 88, 0, 2),
                container_port: 80,
            }],
            forward_only_containers: true,
        };
        let b = batch(&rules);
        let names: Vec<&str> = b.iter().map(|(w, _)| *w).collect();
        assert_eq!(names.first(), Some(&"batch begin"));
        assert_eq!(names.last(), Some(&"batch end"));
        assert_eq!(names.iter().filter(|n| **n == "add port rule").count(), 2);
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == "add masquerade rule")
                .count(),
            3
        );
        assert_eq!(names.iter().filter(|n| **n == "create chain").count(), 5);
        // Sequence numbers count from 1 in order, which error reports rely on.
        for (i, (_, m)) in b.iter().enumerate() {
            assert_eq!(read_u32(m, 8), Some(i as u32 + 1));
        }
    }
}
