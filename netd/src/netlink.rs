//! A small synchronous rtnetlink client: links, addresses, routes, bridges and veth pairs.
//!
//! Messages are built with `netlink-packet-route` (the message layer of the `rtnetlink`
//! crate) and sent over a blocking `netlink-sys` socket, one request at a time: PID 1,
//! its helpers and the container child are single-threaded, and an async runtime would
//! cost more than every request it could overlap. Replies are decoded only as far as
//! this client reads them (see [`Reply`]).
//!
//! A socket works in the network namespace it was created in, whatever namespace the
//! process later enters; the container child relies on that to configure both ends of a
//! veth pair.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    parse_string, parse_u32, DecodeError, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkHeader, LinkInfo, LinkMessage,
    LinkMessageBuffer,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] io::Error),
    #[error("netlink {op}: sending the request: {source}")]
    Send {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink {op}: reading the reply: {source}")]
    Recv {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink {op}: the kernel refused: {errno}")]
    Kernel { op: &'static str, errno: Errno },
    #[error("netlink {op}: cannot decode the kernel's reply: {detail}")]
    Decode { op: &'static str, detail: String },
    #[error("no network interface named {0:?}")]
    NoSuchLink(String),
    #[error(
        "{name:?} exists and is not a bridge (it is {kind:?}): choose another network.bridge.name"
    )]
    NotABridge { name: String, kind: String },
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// One network interface as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address; empty for links without one (`lo` has zeros).
    pub mac: Vec<u8>,
    pub up: bool,
    /// `IFF_LOWER_UP`: the device has a carrier.
    pub carrier: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    /// The `IFLA_INFO_KIND` (`"veth"`, `"bridge"`, ...), empty for physical devices.
    pub kind: String,
    /// The bridge this link is a port of.
    pub controller: Option<u32>,
    pub mtu: u32,
}

impl Link {
    /// True for a device that DHCP by default should try: ethernet-like, not loopback,
    /// not one of berth's own bridges or veths.
    pub fn is_physical_ethernet(&self) -> bool {
        !self.loopback && self.kind.is_empty() && self.mac.len() == 6
    }
}

/// An IPv4 route to add or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route4 {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub interface: u32,
    /// The preferred source address (`src` in `ip route`).
    pub source: Option<Ipv4Addr>,
    pub metric: Option<u32>,
}

/// The far end of a veth pair: created directly in the namespace `netns`.
#[derive(Debug, Clone, Copy)]
pub struct VethPeer<'a> {
    pub name: &'a str,
    pub netns: BorrowedFd<'a>,
    pub mac: Option<[u8; 6]>,
}

/// The loopback device's index in every network namespace (the kernel registers it
/// first, as `LOOPBACK_IFINDEX`).
pub const LOOPBACK_INDEX: u32 = 1;

/// Brings up loopback in the calling thread's network namespace.
pub fn loopback_up() -> Result<()> {
    Netlink::open()?.set_link(LOOPBACK_INDEX, true, None, None)
}

/// A blocking NETLINK_ROUTE socket.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        set_cloexec(socket.as_raw_fd()).map_err(|e| NetlinkError::Open(e.into()))?;
        set_reply_timeout(&socket).map_err(NetlinkError::Open)?;
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends `message` and waits for the kernel's acknowledgement.
    fn request(
        &mut self,
        op: &'static str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<()> {
        self.send(op, message, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        let seq = self.seq;
        loop {
            for (reply_seq, reply) in self.receive(op)? {
                if reply_seq != seq {
                    continue;
                }
                if let Reply::Status(code) = reply {
                    return status(op, code);
                }
            }
        }
    }

    /// Sends a dump request for links and collects every one until `NLMSG_DONE`.
    fn dump_links(&mut self, op: &'static str, message: RouteNetlinkMessage) -> Result<Vec<Link>> {
        self.send(op, message, NLM_F_REQUEST | NLM_F_DUMP)?;
        let seq = self.seq;
        let mut out = Vec::new();
        loop {
            for (reply_seq, reply) in self.receive(op)? {
                if reply_seq != seq {
                    continue;
                }
                match reply {
                    Reply::Link(link) => out.push(link),
                    Reply::Done => return Ok(out),
                    Reply::Status(code) => status(op, code)?,
                    Reply::Other => {}
                }
            }
        }
    }

    fn send(&mut self, op: &'static str, message: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
            .map_err(|source| NetlinkError::Send { op, source })?;
        Ok(())
    }

    /// Reads one datagram and decodes the messages in it, with their sequence numbers.
    fn receive(&mut self, op: &'static str) -> Result<Vec<(u32, Reply)>> {
        let n = loop {
            match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(NetlinkError::Recv { op, source }),
            }
        };
        let mut messages = Vec::new();
        let mut rest = self.buf.get(..n).unwrap_or(&[]);
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len < 16 || len > rest.len() {
                return Err(NetlinkError::Decode {
                    op,
                    detail: format!("message length {len} in a {n}-byte datagram"),
                });
            }
            let one = rest.get(..len).unwrap_or(&[]);
            let message = decode_reply(one).map_err(|e| NetlinkError::Decode {
                op,
                detail: e.to_string(),
            })?;
            messages.push(message);
            // Each message is padded to a multiple of 4 bytes.
            rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        }
        Ok(messages)
    }

    /// Every network interface.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        self.dump_links(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )
    }

    /// The interface named `name`.
    pub fn link(&mut self, name: &str) -> Result<Link> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        self.send(
            "get link",
            RouteNetlinkMessage::GetLink(message),
            NLM_F_REQUEST,
        )?;
        let seq = self.seq;
        loop {
            for (reply_seq, reply) in self.receive("get link")? {
                if reply_seq != seq {
                    continue;
                }
                match reply {
                    Reply::Link(link) => return Ok(link),
                    Reply::Status(code) => {
                        return Err(match status("get link", code) {
                            Err(NetlinkError::Kernel {
                                errno: Errno::ENODEV,
                                ..
                            }) => NetlinkError::NoSuchLink(name.to_owned()),
                            Err(e) => e,
                            // An acknowledgement without the link: the kernel has none.
                            Ok(()) => NetlinkError::NoSuchLink(name.to_owned()),
                        });
                    }
                    Reply::Done | Reply::Other => {}
                }
            }
        }
    }

    /// Sets a link up or down, and optionally its MTU and the bridge it is a port of.
    pub fn set_link(
        &mut self,
        index: u32,
        up: bool,
        mtu: Option<u32>,
        controller: Option<u32>,
    ) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.change_mask = LinkFlags::Up;
        if up {
            message.header.flags = LinkFlags::Up;
        }
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(controller) = controller {
            message
                .attributes
                .push(LinkAttribute::Controller(controller));
        }
        self.request("set link", RouteNetlinkMessage::SetLink(message), 0)
    }

    /// Creates bridge `name` (up), or finds it if it exists; returns it. A link of that
    /// name that is not a bridge is an error, never borrowed.
    pub fn ensure_bridge(&mut self, name: &str) -> Result<Link> {
        let mut message = LinkMessage::default();
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        message
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        match self.request(
            "create bridge",
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(())
            | Err(NetlinkError::Kernel {
                errno: Errno::EEXIST,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        let link = self.link(name)?;
        if link.kind != "bridge" {
            return Err(NetlinkError::NotABridge {
                name: name.to_owned(),
                kind: link.kind,
            });
        }
        if !link.up {
            self.set_link(link.index, true, None, None)?;
        }
        Ok(link)
    }

    /// Creates a veth pair in one request: this end, named `name`, up and a port of the
    /// bridge `controller`, in this socket's namespace; the peer (down) directly in
    /// `peer.netns`. Nothing is moved between namespaces.
    pub fn create_veth(
        &mut self,
        name: &str,
        controller: Option<u32>,
        mtu: u32,
        peer: &VethPeer<'_>,
    ) -> Result<()> {
        let mut far = LinkMessage::default();
        // The peer stays down: the kernel configures it before the pair is linked, and
        // a veth cannot open without its peer (ENOTCONN). Its namespace brings it up.
        far.attributes
            .push(LinkAttribute::IfName(peer.name.to_owned()));
        far.attributes
            .push(LinkAttribute::NetNsFd(peer.netns.as_raw_fd()));
        far.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(mac) = peer.mac {
            far.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut near = LinkMessage::default();
        near.header.flags = LinkFlags::Up;
        near.header.change_mask = LinkFlags::Up;
        near.attributes.push(LinkAttribute::IfName(name.to_owned()));
        near.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(controller) = controller {
            near.attributes.push(LinkAttribute::Controller(controller));
        }
        near.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(far))),
        ]));
        self.request(
            "create veth",
            RouteNetlinkMessage::NewLink(near),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds `address/prefix` to interface `index`, replacing the same address if present.
    pub fn add_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> Result<()> {
        let message = address_message(index, address, prefix);
        self.request(
            "add address",
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes `address/prefix` from interface `index`.
    pub fn delete_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> Result<()> {
        let message = address_message(index, address, prefix);
        self.request(
            "delete address",
            RouteNetlinkMessage::DelAddress(message),
            0,
        )
    }

    /// Adds (or replaces) an IPv4 route.
    pub fn add_route(&mut self, route: &Route4) -> Result<()> {
        self.request(
            "add route",
            RouteNetlinkMessage::NewRoute(route_message(route)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Removes an IPv4 route.
    pub fn delete_route(&mut self, route: &Route4) -> Result<()> {
        self.request(
            "delete route",
            RouteNetlinkMessage::DelRoute(route_message(route)),
            0,
        )
    }
}

/// How long a request waits for the kernel's reply. The kernel answers within the
/// `send`; the bound only keeps a caller such as PID 1 from waiting forever on a reply
/// that never comes.
pub const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets [`REPLY_TIMEOUT`] on a netlink socket (`SO_RCVTIMEO`).
pub fn set_reply_timeout(socket: &Socket) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
    use nix::sys::time::TimeVal;
    let t = TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
    setsockopt(socket, ReceiveTimeout, &t).map_err(io::Error::from)
}

fn set_cloexec(fd: i32) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(drop)
}

/// One message of a reply, decoded only as far as this client reads it.
///
/// Replies are taken apart by hand with the crates' buffer types rather than parsed
/// into `RouteNetlinkMessage`: that parser knows every attribute of every message type
/// (traffic control, tunnels, SR-IOV...), and linking it made up about 330 KiB of
/// PID 1's binary, which uses this client for loopback and the bridge.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// `NLMSG_ERROR`: 0 acknowledges, a negative errno refuses.
    Status(i32),
    /// `NLMSG_DONE`, the end of a dump.
    Done,
    /// `RTM_NEWLINK`: a link, in a dump or in answer to "get link".
    Link(Link),
    /// Anything else (this client asks for nothing else).
    Other,
}

/// The outcome an `NLMSG_ERROR` code stands for.
fn status(op: &'static str, code: i32) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(NetlinkError::Kernel {
            op,
            errno: Errno::from_raw(code.saturating_neg()),
        })
    }
}

/// Decodes one netlink message (header and payload, exactly `bytes`) and returns its
/// sequence number with what it says.
fn decode_reply(bytes: &[u8]) -> std::result::Result<(u32, Reply), DecodeError> {
    let message = NetlinkBuffer::new_checked(bytes)?;
    let payload = message.payload();
    let reply = match message.message_type() {
        NLMSG_ERROR => {
            let code = payload
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_ne_bytes)
                .ok_or_else(|| DecodeError::from("NLMSG_ERROR shorter than its code"))?;
            Reply::Status(code)
        }
        NLMSG_DONE => Reply::Done,
        libc::RTM_NEWLINK => Reply::Link(decode_link(payload)?),
        _ => Reply::Other,
    };
    Ok((message.sequence_number(), reply))
}

/// The fields of [`Link`] from an `RTM_NEWLINK` payload: the `ifinfomsg` header, then the
/// attributes this client reads; the rest are skipped unread.
fn decode_link(payload: &[u8]) -> std::result::Result<Link, DecodeError> {
    let header = LinkHeader::parse(payload)?;
    let mut link = Link {
        index: header.index,
        name: String::new(),
        mac: Vec::new(),
        up: header.flags.contains(LinkFlags::Up),
        carrier: header.flags.contains(LinkFlags::LowerUp),
        loopback: header.flags.contains(LinkFlags::Loopback),
        kind: String::new(),
        controller: None,
        mtu: 0,
    };
    // The attributes follow the fixed `ifinfomsg` header.
    let attributes = payload
        .get(std::mem::size_of::<LinkMessageBuffer>()..)
        .unwrap_or(&[]);
    for attribute in NlasIterator::new(attributes) {
        let attribute = attribute?;
        let value = attribute.value();
        // `kind()` is the type without its nested and byte-order flags.
        match attribute.kind() {
            libc::IFLA_IFNAME => link.name = parse_string(value)?,
            libc::IFLA_ADDRESS => link.mac = value.to_vec(),
            libc::IFLA_MTU => link.mtu = parse_u32(value)?,
            libc::IFLA_MASTER => link.controller = Some(parse_u32(value)?),
            libc::IFLA_LINKINFO => {
                for info in NlasIterator::new(value) {
                    let info = info?;
                    if info.kind() == libc::IFLA_INFO_KIND {
                        link.kind = parse_string(info.value())?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

fn address_message(index: u32, address: IpAddr, prefix: u8) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.prefix_len = prefix;
    message.header.index = index;
    message.attributes.push(AddressAttribute::Local(address));
    message.attributes.push(AddressAttribute::Address(address));
    if let IpAddr::V4(v4) = address {
        message
            .attributes
            .push(AddressAttribute::Broadcast(crate::addr::broadcast(
                v4, prefix,
            )));
    }
    message
}

fn route_message(route: &Route4) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.destination_prefix_length = route.prefix;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::Static;
    message.header.kind = RouteType::Unicast;
    message.header.scope = if route.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if route.prefix > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                route.destination,
            )));
    }
    if let Some(gw) = route.gateway {
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    }
    if let Some(src) = route.source {
        message
            .attributes
            .push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
    }
    if let Some(metric) = route.metric {
        message.attributes.push(RouteAttribute::Priority(metric));
    }
    message
        .attributes
        .push(RouteAttribute::Oif(route.interface));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of `payload` as the kernel would send it, with sequence number 7.
    fn wire(payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = 7;
        let mut packet = NetlinkMessage::new(header, payload);
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn a_link_is_read_from_its_attributes_past_ones_it_skips() {
        let mut message = LinkMessage::default();
        message.header.index = 42;
        message.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        message.attributes = vec![
            LinkAttribute::IfName("br-berth".into()),
            LinkAttribute::TxQueueLen(1000),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]),
            LinkAttribute::Mtu(1400),
            LinkAttribute::Controller(3),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(LinkMessage::default()))),
            ]),
        ];
        let bytes = wire(NetlinkPayload::from(RouteNetlinkMessage::NewLink(message)));
        let (seq, reply) = decode_reply(&bytes).unwrap();
        assert_eq!(seq, 7);
        assert_eq!(
            reply,
            Reply::Link(Link {
                index: 42,
                name: "br-berth".into(),
                mac: vec![2, 0, 0, 0, 0, 9],
                up: true,
                carrier: true,
                loopback: false,
                kind: "veth".into(),
                controller: Some(3),
                mtu: 1400,
            })
        );
        // Cut anywhere inside, it is an error, never a panic or a wrong link.
        for len in 0..bytes.len() {
            let mut cut = bytes[..len].to_vec();
            if cut.len() >= 4 {
                cut[..4].copy_from_slice(&(len as u32).to_ne_bytes());
            }
            if let Ok((_, Reply::Link(link))) = decode_reply(&cut) {
                assert!(link.mtu == 0 || link.controller.is_none() || link.kind.is_empty());
            }
        }
    }

    #[test]
    fn acknowledgements_refusals_and_the_end_of_a_dump() {
        let mut ack = wire(NetlinkPayload::Done(Default::default()));
        assert_eq!(decode_reply(&ack).unwrap(), (7, Reply::Done));
        // NLMSG_ERROR with code -ENODEV, then with 0.
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[16..20].copy_from_slice(&(-19i32).to_ne_bytes());
        assert_eq!(decode_reply(&ack).unwrap(), (7, Reply::Status(-19)));
        assert!(matches!(
            status("x", -19),
            Err(NetlinkError::Kernel {
                errno: Errno::ENODEV,
                ..
            })
        ));
        ack[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(decode_reply(&ack).unwrap(), (7, Reply::Status(0)));
        assert!(status("x", 0).is_ok());
        // A length past the datagram, and an NLMSG_ERROR without its code.
        assert!(decode_reply(&ack[..16]).is_err());
        let mut short = ack[..16].to_vec();
        short[..4].copy_from_slice(&16u32.to_ne_bytes());
        assert!(decode_reply(&short).is_err());
    }
}
