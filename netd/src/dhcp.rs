//! A DHCPv4 client (RFC 2131): discover, offer, request, ack; renew at T1 (unicast to
//! the server), rebind at T2 (broadcast), expiry; release on shutdown. Messages are
//! encoded and decoded by the `dhcproto` crate; this module checks what a hostile or
//! broken server may send before any of it reaches the kernel or `/etc/resolv.conf`.
//!
//! It runs in `berth-helper netd`, never in PID 1: a reply that crashes it costs a restart
//! of that process, nothing more.
//!
//! The socket is a UDP socket on port 68 bound to the interface (`SO_BINDTODEVICE`), and
//! requests set the BROADCAST flag, so replies reach it before the interface has an
//! address without a raw packet socket.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption, Flags, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use crate::addr::{prefix_of_mask, Ipv4Net};

/// What a server's reply is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Lease),
    Ack(Lease),
    Nak,
}

/// Everything a lease configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Net,
    pub server: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    /// Classless static routes (option 121): destination and gateway (0.0.0.0: on-link).
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub lease_time: Duration,
    pub renew: Duration,
    pub rebind: Duration,
}

/// Why a datagram is not a usable reply. Every variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("not a DHCP message: {0}")]
    Malformed(String),
    #[error("not a reply (op {0:?})")]
    NotReply(Opcode),
    #[error("transaction id {got:#x}, expected {expected:#x}")]
    OtherTransaction { got: u32, expected: u32 },
    #[error("for another client (chaddr {0:02x?})")]
    OtherClient(Vec<u8>),
    #[error("no DHCP message type (option 53)")]
    NoMessageType,
    #[error("message type {0:?} is not a reply to a client")]
    UnexpectedType(MessageType),
    #[error("offered address {0} cannot be a host address")]
    BadAddress(Ipv4Addr),
    #[error("subnet mask {0} (option 1) is not contiguous or leaves no host bits")]
    BadMask(Ipv4Addr),
    #[error("no server identifier (option 54)")]
    NoServer,
    #[error("no lease time (option 51)")]
    NoLeaseTime,
}

/// The largest datagram read; a DHCP message over ethernet fits in 1500 bytes, and the
/// decoder must also survive the oversized ones a broken server sends.
const MAX_DATAGRAM: usize = 16 * 1024;
/// The most nameservers and routes taken from one reply.
const MAX_DNS: usize = 3;
const MAX_ROUTES: usize = 32;
/// Leases shorter than this are treated as this long, so a server cannot make the client
/// spin.
const MIN_LEASE: Duration = Duration::from_secs(4);

fn usable_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

/// Decodes and checks a datagram received for transaction `xid` of client `mac`.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: &[u8; 6]) -> Result<Reply, ReplyError> {
    // The decoder has assertions on option lengths (dhcproto 0.15 checks option 94's
    // with `debug_assert!`): a panic there is a malformed datagram, not a dead client.
    let msg = match std::panic::catch_unwind(|| v4::Message::from_bytes(bytes)) {
        Ok(Ok(msg)) => msg,
        Ok(Err(e)) => return Err(ReplyError::Malformed(e.to_string())),
        Err(_) => return Err(ReplyError::Malformed("the decoder panicked".into())),
    };
    if msg.opcode() != Opcode::BootReply {
        return Err(ReplyError::NotReply(msg.opcode()));
    }
    if msg.xid() != xid {
        return Err(ReplyError::OtherTransaction {
            got: msg.xid(),
            expected: xid,
        });
    }
    // chaddr from the datagram itself (offset 28): the decoder's accessor slices by the
    // server-supplied `hlen` and panics when it exceeds 16.
    let chaddr = bytes.get(28..34).unwrap_or(&[]);
    if chaddr != &mac[..] {
        return Err(ReplyError::OtherClient(chaddr.to_vec()));
    }
    let kind = msg.opts().msg_type().ok_or(ReplyError::NoMessageType)?;
    match kind {
        MessageType::Nak => return Ok(Reply::Nak),
        MessageType::Offer | MessageType::Ack => {}
        other => return Err(ReplyError::UnexpectedType(other)),
    }
    let opts = msg.opts();
    let yiaddr = msg.yiaddr();
    if !usable_unicast(yiaddr) {
        return Err(ReplyError::BadAddress(yiaddr));
    }
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => match prefix_of_mask(*mask) {
            Some(p) if (1..=30).contains(&p) => p,
            _ => return Err(ReplyError::BadMask(*mask)),
        },
        _ => 24,
    };
    let address = Ipv4Net {
        addr: yiaddr,
        prefix,
    };
    if yiaddr == address.network() || yiaddr == address.broadcast() {
        return Err(ReplyError::BadAddress(yiaddr));
    }
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) if usable_unicast(*s) => *s,
        _ => return Err(ReplyError::NoServer),
    };
    let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => return Err(ReplyError::NoLeaseTime),
    };
    let lease_time = Duration::from_secs(u64::from(lease_secs)).max(MIN_LEASE);
    let t = |code, default: Duration| match opts.get(code) {
        Some(DhcpOption::Renewal(s)) | Some(DhcpOption::Rebinding(s)) => {
            Duration::from_secs(u64::from(*s))
        }
        _ => default,
    };
    let mut renew = t(OptionCode::Renewal, lease_time / 2);
    let mut rebind = t(OptionCode::Rebinding, lease_time * 7 / 8);
    // RFC 2131 4.4.5: 0 < T1 < T2 < lease; otherwise use the defaults.
    if renew.is_zero() || renew > rebind || rebind > lease_time {
        renew = lease_time / 2;
        rebind = lease_time * 7 / 8;
    }
    let routes: Vec<(Ipv4Net, Ipv4Addr)> = match opts.get(OptionCode::ClasslessStaticRoute) {
        Some(DhcpOption::ClasslessStaticRoute(list)) => list
            .iter()
            .filter(|(_, gw)| gw.is_unspecified() || usable_unicast(*gw))
            // Loopback, multicast and reserved destinations are never routed via DHCP;
            // the default route (0.0.0.0/0) is the one prefix allowed to cover them.
            .filter(|(net, _)| {
                net.prefix_len() == 0
                    || !crate::addr::SPECIAL.iter().any(|s| {
                        s.overlaps(&Ipv4Net {
                            addr: net.network(),
                            prefix: net.prefix_len(),
                        })
                    })
            })
            .take(MAX_ROUTES)
            .map(|(net, gw)| {
                (
                    Ipv4Net {
                        addr: net.network(),
                        prefix: net.prefix_len(),
                    },
                    *gw,
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(list)) => list.iter().copied().find(|r| usable_unicast(*r)),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(list)) => list
            .iter()
            .copied()
            .filter(|ip| usable_unicast(*ip))
            .take(MAX_DNS)
            .collect(),
        _ => Vec::new(),
    };
    let domain = match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) => Some(d.clone()),
        _ => None,
    };
    let mtu = match opts.get(OptionCode::InterfaceMtu) {
        Some(DhcpOption::InterfaceMtu(m)) if *m >= 576 => Some(*m),
        _ => None,
    };
    let lease = Lease {
        address,
        server,
        router,
        dns,
        domain,
        mtu,
        routes,
        lease_time,
        renew,
        rebind,
    };
    Ok(match kind {
        MessageType::Offer => Reply::Offer(lease),
        _ => Reply::Ack(lease),
    })
}

/// Which kind of request to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Discover,
    /// REQUEST in SELECTING state: the offered address and the chosen server.
    Select {
        address: Ipv4Addr,
        server: Ipv4Addr,
    },
    /// REQUEST in RENEWING or REBINDING state: `ciaddr` is our address.
    Extend {
        address: Ipv4Addr,
    },
    Release {
        address: Ipv4Addr,
        server: Ipv4Addr,
    },
}

/// As the log names it: `DISCOVER`, `REQUEST for 10.0.2.15 from 10.0.2.2`.
impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Discover => f.write_str("DISCOVER"),
            Request::Select { address, server } => {
                write!(f, "REQUEST for {address} from {server}")
            }
            Request::Extend { address } => write!(f, "REQUEST to extend {address}"),
            Request::Release { address, server } => write!(f, "RELEASE of {address} to {server}"),
        }
    }
}

/// An empty BOOTREQUEST for `xid` and `mac`, decoded from its 240 wire bytes.
///
/// Not `Message::new_with_id`: that fills its defaults with `rand::random()`, whose
/// `getrandom` blocks until the kernel's random pool is initialised, a second or more
/// after boot in a VM without a hardware RNG; the first DISCOVER would wait for it.
fn blank_request(xid: u32, mac: &[u8; 6]) -> v4::Message {
    let mut wire = [0u8; 241];
    wire[0] = 1; // op: BOOTREQUEST
    wire[1] = 1; // htype: ethernet
    wire[2] = 6; // hlen
    wire[4..8].copy_from_slice(&xid.to_be_bytes());
    wire[28..34].copy_from_slice(mac);
    wire[236..240].copy_from_slice(&[99, 130, 83, 99]); // the magic cookie
    wire[240] = 255; // END
                     // These bytes are a valid message; the fallback only keeps this function total.
    v4::Message::from_bytes(&wire).unwrap_or_default()
}

/// Encodes a client message.
pub fn build(request: Request, xid: u32, mac: &[u8; 6], hostname: Option<&str>) -> Vec<u8> {
    let zero = Ipv4Addr::UNSPECIFIED;
    let ciaddr = match request {
        Request::Extend { address } | Request::Release { address, .. } => address,
        _ => zero,
    };
    let mut msg = blank_request(xid, mac);
    msg.set_ciaddr(ciaddr);
    if matches!(request, Request::Discover | Request::Select { .. }) {
        msg.set_flags(Flags::default().set_broadcast());
    }
    let opts = msg.opts_mut();
    let kind = match request {
        Request::Discover => MessageType::Discover,
        Request::Select { .. } | Request::Extend { .. } => MessageType::Request,
        Request::Release { .. } => MessageType::Release,
    };
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(mac);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    match request {
        Request::Select { address, server } => {
            opts.insert(DhcpOption::RequestedIpAddress(address));
            opts.insert(DhcpOption::ServerIdentifier(server));
        }
        Request::Release { server, .. } => {
            opts.insert(DhcpOption::ServerIdentifier(server));
        }
        _ => {}
    }
    if !matches!(request, Request::Release { .. }) {
        if let Some(name) = hostname {
            opts.insert(DhcpOption::Hostname(name.to_owned()));
        }
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::DomainName,
            OptionCode::InterfaceMtu,
            OptionCode::ClasslessStaticRoute,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
        opts.insert(DhcpOption::MaxMessageSize(1500));
    }
    // Encoding a message built from these fields cannot fail; an empty datagram would
    // simply get no answer.
    msg.to_vec().unwrap_or_default()
}

/// What the client tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lease was acknowledged (first time, or renewed or rebound, possibly changed).
    Bound(Lease),
    /// The lease ran out or the server refused it: the address must go.
    Lost(Lease),
}

/// Retransmission timing (RFC 2131 4.1 suggests 4 s doubling to 64 s; berth starts
/// sooner, because a VM's DHCP server answers in microseconds and boot waits on it).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// Attempts at the REQUEST after an offer before starting over.
    pub request_attempts: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            first_retry: Duration::from_millis(500),
            max_retry: Duration::from_secs(32),
            request_attempts: 4,
        }
    }
}

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("DHCP socket on {interface}: {step}: {source}")]
    Socket {
        interface: String,
        step: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// One interface's client.
pub struct Client {
    interface: String,
    mac: [u8; 6],
    hostname: Option<String>,
    timing: Timing,
    socket: OwnedFd,
    /// Bounds the "ignoring a reply" lines a hostile network can cause.
    ignored: std::cell::RefCell<Throttle>,
}

/// A log budget: at most [`Throttle::PER_WINDOW`] lines per [`Throttle::WINDOW`]; what is
/// held back is counted and reported with the next line let through.
#[derive(Debug)]
pub struct Throttle {
    window_start: Option<Instant>,
    shown: u32,
    held_back: u32,
}

impl Throttle {
    pub const WINDOW: Duration = Duration::from_secs(10);
    pub const PER_WINDOW: u32 = 5;

    pub fn new() -> Throttle {
        Throttle {
            window_start: None,
            shown: 0,
            held_back: 0,
        }
    }

    /// Whether a line may be logged now, and how many were held back before it.
    pub fn allow(&mut self, now: Instant) -> Option<u32> {
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Self::WINDOW)
        {
            self.window_start = Some(now);
            self.shown = 0;
        }
        if self.shown >= Self::PER_WINDOW {
            self.held_back = self.held_back.saturating_add(1);
            return None;
        }
        self.shown += 1;
        Some(std::mem::take(&mut self.held_back))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

impl Client {
    /// Opens the client's socket on `interface`.
    pub fn new(
        interface: &str,
        mac: [u8; 6],
        hostname: Option<String>,
        timing: Timing,
    ) -> Result<Client, ClientError> {
        let err = |step| {
            let interface = interface.to_owned();
            move |source| ClientError::Socket {
                interface,
                step,
                source,
            }
        };
        let socket = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(err("socket"))?;
        socket::setsockopt(&socket, sockopt::ReuseAddr, &true).map_err(err("SO_REUSEADDR"))?;
        socket::setsockopt(&socket, sockopt::Broadcast, &true).map_err(err("SO_BROADCAST"))?;
        socket::setsockopt(
            &socket,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(interface),
        )
        .map_err(err("SO_BINDTODEVICE"))?;
        socket::bind(
            socket.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)),
        )
        .map_err(err("bind to port 68"))?;
        Ok(Client {
            interface: interface.to_owned(),
            mac,
            hostname,
            timing,
            socket,
            ignored: std::cell::RefCell::new(Throttle::new()),
        })
    }

    fn send(&self, request: Request, xid: u32, to: Ipv4Addr) {
        let bytes = build(request, xid, &self.mac, self.hostname.as_deref());
        let dest = SockaddrIn::from(SocketAddrV4::new(to, 67));
        if let Err(e) = socket::sendto(
            self.socket.as_raw_fd(),
            &bytes,
            &dest,
            socket::MsgFlags::empty(),
        ) {
            log::warn!("dhcp {}: sending {request}: {e}", self.interface);
        }
    }

    /// Waits until `deadline` for a valid reply to `xid`; datagrams that are not are
    /// logged and skipped.
    fn receive(&self, xid: u32, deadline: Instant, stop: &AtomicBool) -> Option<Reply> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Wake at least every 200 ms to notice `stop`.
            let ms = left.as_millis().clamp(1, 200) as u16;
            let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("dhcp {}: poll: {e}", self.interface);
                    std::thread::sleep(Duration::from_millis(ms.into()));
                    continue;
                }
            }
            let n = match socket::recv(self.socket.as_raw_fd(), &mut buf, socket::MsgFlags::empty())
            {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("dhcp {}: recv: {e}", self.interface);
                    continue;
                }
            };
            match parse_reply(buf.get(..n).unwrap_or(&[]), xid, &self.mac) {
                Ok(reply) => return Some(reply),
                // Replies to other clients on a shared segment are normal; say nothing.
                Err(ReplyError::OtherTransaction { .. } | ReplyError::OtherClient(_)) => {}
                Err(e) => {
                    let allowed = self.ignored.borrow_mut().allow(Instant::now());
                    match allowed {
                        Some(0) => log::warn!("dhcp {}: ignoring a reply: {e}", self.interface),
                        Some(n) => log::warn!(
                            "dhcp {}: ignoring a reply: {e} ({n} more ignored without a word)",
                            self.interface
                        ),
                        None => {}
                    }
                }
            }
        }
    }

    /// Sends `request` and retransmits with backoff until a reply or `until`.
    fn exchange(
        &self,
        request: Request,
        to: Ipv4Addr,
        until: Option<Instant>,
        attempts: Option<u32>,
        stop: &AtomicBool,
    ) -> Result<Option<Reply>, ClientError> {
        let xid = crate::nonce_u32();
        let mut wait = self.timing.first_retry;
        let mut tries = 0;
        loop {
            if stop.load(Ordering::Relaxed) || attempts.is_some_and(|a| tries >= a) {
                return Ok(None);
            }
            let now = Instant::now();
            if until.is_some_and(|u| now >= u) {
                return Ok(None);
            }
            self.send(request, xid, to);
            tries += 1;
            let mut deadline = now + wait;
            if let Some(u) = until {
                deadline = deadline.min(u);
            }
            if let Some(reply) = self.receive(xid, deadline, stop) {
                return Ok(Some(reply));
            }
            wait = (wait * 2).min(self.timing.max_retry);
        }
    }

    /// Runs until `stop` is set; reports leases through `on_event`. Returns the lease
    /// held when stopped, which the caller releases.
    pub fn run(
        &self,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Option<Lease>, ClientError> {
        let broadcast = Ipv4Addr::BROADCAST;
        'discover: loop {
            // SELECTING: the first offer wins.
            let offer = loop {
                match self.exchange(Request::Discover, broadcast, None, None, stop)? {
                    None => return Ok(None),
                    Some(Reply::Offer(lease)) => break lease,
                    Some(_) => continue,
                }
            };
            let select = Request::Select {
                address: offer.address.addr,
                server: offer.server,
            };
            let mut lease = match self.exchange(
                select,
                broadcast,
                None,
                Some(self.timing.request_attempts),
                stop,
            )? {
                Some(Reply::Ack(lease)) => lease,
                _ if stop.load(Ordering::Relaxed) => return Ok(None),
                _ => continue 'discover,
            };
            // BOUND, then RENEWING and REBINDING, until the lease is lost.
            loop {
                let acquired = Instant::now();
                on_event(Event::Bound(lease.clone()));
                let renew_at = acquired + lease.renew;
                let rebind_at = acquired + lease.rebind;
                let expire_at = acquired + lease.lease_time;
                if !sleep_until(renew_at, stop) {
                    return Ok(Some(lease));
                }
                let extend = Request::Extend {
                    address: lease.address.addr,
                };
                let mut reply = self.exchange(extend, lease.server, Some(rebind_at), None, stop)?;
                if reply.is_none() && !stop.load(Ordering::Relaxed) {
                    reply = self.exchange(extend, broadcast, Some(expire_at), None, stop)?;
                }
                match reply {
                    Some(Reply::Ack(new)) if new.address.addr == lease.address.addr => lease = new,
                    Some(Reply::Ack(new)) => {
                        on_event(Event::Lost(lease));
                        lease = new;
                    }
                    _ if stop.load(Ordering::Relaxed) => return Ok(Some(lease)),
                    _ => {
                        log::warn!(
                            "dhcp {}: lease of {} {}; starting over",
                            self.interface,
                            lease.address,
                            if Instant::now() >= expire_at {
                                "expired"
                            } else {
                                "refused by the server"
                            }
                        );
                        on_event(Event::Lost(lease));
                        continue 'discover;
                    }
                }
            }
        }
    }

    /// Tells the server the address is no longer used (DHCPRELEASE, unicast).
    pub fn release(&self, lease: &Lease) {
        let xid = crate::nonce_u32();
        self.send(
            Request::Release {
                address: lease.address.addr,
                server: lease.server,
            },
            xid,
            lease.server,
        );
    }
}

/// Sleeps until `at`; false if `stop` was set first.
fn sleep_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn requests_read_as_their_names() {
        use super::Request;
        let a = "10.0.2.15".parse().unwrap();
        let s = "10.0.2.2".parse().unwrap();
        assert_eq!(Request::Discover.to_string(), "DISCOVER");
        assert_eq!(
            Request::Select {
                address: a,
                server: s
            }
            .to_string(),
            "REQUEST for 10.0.2.15 from 10.0.2.2"
        );
        assert_eq!(
            Request::Extend { address: a }.to_string(),
            "REQUEST to extend 10.0.2.15"
        );
    }

    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn reply(kind: MessageType, extra: &[DhcpOption]) -> v4::Message {
        let zero = Ipv4Addr::UNSPECIFIED;
        let mut m =
            v4::Message::new_with_id(7, zero, Ipv4Addr::new(10, 0, 2, 15), zero, zero, &MAC);
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        for e in extra {
            o.insert(e.clone());
        }
        m
    }

    #[test]
    fn a_good_ack_becomes_a_lease() {
        let bytes = reply(MessageType::Ack, &[]).to_vec().unwrap();
        let Reply::Ack(lease) = parse_reply(&bytes, 7, &MAC).unwrap() else {
            panic!("not an ack")
        };
        assert_eq!(lease.address.to_string(), "10.0.2.15/24");
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(lease.renew, Duration::from_secs(43200));
        assert_eq!(lease.rebind, Duration::from_secs(75600));
    }

    #[test]
    fn bad_replies_are_named() {
        let ok = reply(MessageType::Ack, &[]);
        assert!(matches!(
            parse_reply(&ok.to_vec().unwrap(), 8, &MAC),
            Err(ReplyError::OtherTransaction { .. })
        ));
        assert!(matches!(
            parse_reply(&ok.to_vec().unwrap(), 7, &[1, 2, 3, 4, 5, 6]),
            Err(ReplyError::OtherClient(_))
        ));
        let mask = reply(
            MessageType::Ack,
            &[DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0))],
        );
        assert!(matches!(
            parse_reply(&mask.to_vec().unwrap(), 7, &MAC),
            Err(ReplyError::BadMask(_))
        ));
        let mut bcast = reply(MessageType::Ack, &[]);
        bcast.set_yiaddr(Ipv4Addr::new(10, 0, 2, 255));
        assert!(matches!(
            parse_reply(&bcast.to_vec().unwrap(), 7, &MAC),
            Err(ReplyError::BadAddress(_))
        ));
        let mut no_lease = reply(MessageType::Ack, &[]);
        no_lease.opts_mut().remove(OptionCode::AddressLeaseTime);
        assert_eq!(
            parse_reply(&no_lease.to_vec().unwrap(), 7, &MAC),
            Err(ReplyError::NoLeaseTime)
        );
        let bytes = ok.to_vec().unwrap();
        for cut in [0, 10, 100, 236, 240, bytes.len() - 1] {
            // Truncations either decode to a checked reply or fail; never panic.
            let _ = parse_reply(&bytes[..cut], 7, &MAC);
        }
        assert!(parse_reply(&bytes[..100], 7, &MAC).is_err());
    }

    /// A deterministic mutation pass over valid replies (the `dhcp_reply` fuzz target
    /// explores further): byte flips, truncation, and runs of option-like bytes, checking
    /// that nothing panics and every accepted lease keeps the invariants `apply_lease`
    /// relies on.
    #[test]
    fn mutated_replies_never_panic() {
        let seeds: Vec<Vec<u8>> = [MessageType::Offer, MessageType::Ack]
            .into_iter()
            .map(|k| {
                reply(
                    k,
                    &[
                        DhcpOption::DomainName("lan".into()),
                        DhcpOption::InterfaceMtu(1400),
                        DhcpOption::Renewal(100),
                        DhcpOption::Rebinding(150),
                        DhcpOption::ClasslessStaticRoute(vec![(
                            "10.1.0.0/16".parse().unwrap(),
                            Ipv4Addr::new(10, 0, 2, 2),
                        )]),
                    ],
                )
                .to_vec()
                .unwrap()
            })
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for i in 0..20_000 {
            let mut bytes = seeds[i % 2].clone();
            for _ in 0..1 + next() % 8 {
                let at = (next() as usize) % bytes.len().max(1);
                match next() % 4 {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    1 => bytes[at] = next() as u8,
                    2 => bytes.truncate(at.max(1)),
                    _ => {
                        let run: Vec<u8> = (0..next() % 300).map(|_| next() as u8).collect();
                        let at = at.min(bytes.len());
                        bytes.splice(at..at, run);
                    }
                }
            }
            if let Ok(Reply::Offer(l) | Reply::Ack(l)) = parse_reply(&bytes, 7, &MAC) {
                accepted += 1;
                assert!((1..=30).contains(&l.address.prefix), "{l:?}");
                assert!(l.dns.len() <= MAX_DNS && l.routes.len() <= MAX_ROUTES);
                assert!(!l.renew.is_zero() && l.renew <= l.rebind && l.rebind <= l.lease_time);
                assert!(l.lease_time >= MIN_LEASE);
            }
        }
        // Mutations that miss the checked fields still decode: the pass is not vacuous.
        assert!(accepted > 100, "only {accepted} mutated replies accepted");
    }

    #[test]
    fn ignored_replies_are_logged_within_a_budget() {
        let mut t = Throttle::new();
        let t0 = Instant::now();
        let shown = (0..100)
            .filter(|i| t.allow(t0 + Duration::from_millis(*i)).is_some())
            .count();
        assert_eq!(shown as u32, Throttle::PER_WINDOW);
        // The next window lets a line through and reports what was held back.
        assert_eq!(
            t.allow(t0 + Throttle::WINDOW),
            Some(100 - Throttle::PER_WINDOW)
        );
        assert_eq!(t.allow(t0 + Throttle::WINDOW), Some(0));
    }

    #[test]
    fn timers_are_sane_whatever_the_server_says() {
        let weird = reply(
            MessageType::Ack,
            &[
                DhcpOption::AddressLeaseTime(1),
                DhcpOption::Renewal(1000),
                DhcpOption::Rebinding(0),
            ],
        );
        let Ok(Reply::Ack(lease)) = parse_reply(&weird.to_vec().unwrap(), 7, &MAC) else {
            panic!()
        };
        assert_eq!(lease.lease_time, MIN_LEASE);
        assert!(lease.renew > Duration::ZERO && lease.renew <= lease.rebind);
        assert!(lease.rebind <= lease.lease_time);
    }

    #[test]
    fn requests_round_trip() {
        let bytes = build(
            Request::Select {
                address: Ipv4Addr::new(10, 0, 2, 15),
                server: Ipv4Addr::new(10, 0, 2, 2),
            },
            9,
            &MAC,
            Some("web-1"),
        );
        let m = v4::Message::from_bytes(&bytes).unwrap();
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(&bytes[28..34], &MAC);
        assert_eq!(m.xid(), 9);
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 15)))
        );
    }
}
