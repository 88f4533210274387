//! Root tests against the real kernel, each in network namespaces of its own: the NAT
//! table as `nft` reads it back, a container joined to the bridge from inside its
//! namespace, a published port and egress masquerade with real TCP traffic, and the
//! DHCP client against dnsmasq and against a server that sends garbage.
//!
//! Each test runs its network work on threads that `unshare(CLONE_NEWNET)`: a network
//! namespace belongs to a thread, and netlink sockets, `/proc/sys/net` and child
//! processes follow the thread that made them. Without root the tests skip, unless
//! `BERTH_REQUIRE_ROOT=1` (set by `make test`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use berth_netd::addr::Ipv4Net;
use berth_netd::config::BridgeConfig;
use berth_netd::container::{attach, Attachment};
use berth_netd::dhcp::{Client, Event, Timing};
use berth_netd::netlink::{Netlink, VethPeer};
use berth_netd::nft::{PortForward, Protocol};
use berth_netd::{bridge, host};
use nix::sched::{setns, unshare, CloneFlags};

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("BERTH_REQUIRE_ROOT").as_deref() != Ok("1"),
        "this test needs root and BERTH_REQUIRE_ROOT=1"
    );
    eprintln!("skipping: not root");
    false
}

/// Moves the calling thread into a new network namespace and returns a handle to it.
fn new_netns() -> std::fs::File {
    unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    berth_netd::netlink::loopback_up().unwrap();
    ns
}

fn enter(ns: &std::fs::File) {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
}

fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A veth pair between the current namespace (`near`, addressed `near_ip`) and `far_ns`
/// (`far`, addressed `far_ip`), both up.
fn link_namespaces(
    near: &str,
    near_ip: Ipv4Net,
    far_ns: &std::fs::File,
    far: &str,
    far_ip: Ipv4Net,
) {
    let mut nl = Netlink::open().unwrap();
    // The same request the container path uses, without a bridge: make one to plug into.
    let br = nl.ensure_bridge(near).unwrap().index;
    nl.add_address(br, near_ip.addr.into(), near_ip.prefix)
        .unwrap();
    nl.create_veth(
        &format!("{near}-v"),
        Some(br),
        1500,
        &VethPeer {
            name: far,
            netns: far_ns.as_fd(),
            mac: None,
        },
    )
    .unwrap();
    let here = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    enter(far_ns);
    let mut far_nl = Netlink::open().unwrap();
    let link = far_nl.link(far).unwrap();
    far_nl.set_link(link.index, true, None, None).unwrap();
    far_nl
        .add_address(link.index, far_ip.addr.into(), far_ip.prefix)
        .unwrap();
    enter(&here);
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn nat_table_reads_back_as_written_and_is_replaced_whole() {
    if !root() {
        return;
    }
    std::thread::spawn(|| {
        new_netns();
        let config = BridgeConfig::default();
        let mut nl = Netlink::open().unwrap();
        bridge::ensure(&mut nl, &config).unwrap();
        let ports = vec![
            PortForward {
                host_ip: None,
                host_port: 8080,
                protocol: Protocol::Tcp,
                container_ip: Ipv4Addr::new(10, 88, 0, 2),
                container_port: 80,
            },
            PortForward {
                host_ip: Some(Ipv4Addr::new(127, 0, 0, 1)),
                host_port: 5353,
                protocol: Protocol::Udp,
                container_ip: Ipv4Addr::new(10, 88, 0, 3),
                container_port: 53,
            },
        ];
        bridge::apply_nat(&config, ports.clone(), false).unwrap();
        let listing = run(&["nft", "list", "table", "ip", "berth"]);
        for expect in [
            "type nat hook prerouting priority dstnat",
            "type nat hook output priority -100",
            "type nat hook postrouting priority srcnat",
            "fib daddr type local tcp dport 8080 dnat to 10.88.0.2:80",
            "ip daddr 127.0.0.1 udp dport 5353 dnat to 10.88.0.3:53",
            "ip saddr 10.88.0.0/16 oifname != \"berth0\" masquerade",
            "ip saddr 10.88.0.0/16 oifname \"berth0\" ct status dnat masquerade",
            "ip saddr 127.0.0.0/8 oifname \"berth0\" masquerade",
            "type filter hook prerouting priority raw",
            "iifname \"berth0\" ip daddr 127.0.0.0/8 drop",
            "type filter hook forward priority filter",
            "oifname \"berth0\" ct state established,related accept",
            "oifname \"berth0\" ct status dnat accept",
            "iifname \"berth0\" accept",
        ] {
            assert!(
                listing.contains(expect),
                "missing {expect:?} in:\n{listing}"
            );
        }
        // `berth run`'s default: only what goes into the bridge unasked is dropped; the
        // machine's other forwarding is left alone. A berth host's config drops every
        // other forwarded packet.
        assert!(listing.contains("oifname \"berth0\" drop"), "{listing}");
        bridge::apply_nat(&config, ports.clone(), true).unwrap();
        let listing = run(&["nft", "list", "table", "ip", "berth"]);
        assert!(!listing.contains("oifname \"berth0\" drop"), "{listing}");
        assert!(
            listing.lines().any(|l| l.trim() == "drop"),
            "no catch-all drop on a berth host:\n{listing}"
        );
        // Applying again replaces: nothing doubles. Fewer ports: the old rule is gone.
        bridge::apply_nat(&config, ports[..1].to_vec(), false).unwrap();
        let again = run(&["nft", "list", "table", "ip", "berth"]);
        assert_eq!(again.matches("dnat to").count(), 2, "{again}");
        assert!(!again.contains("5353"), "{again}");
        // Hundreds of ports: one batch, every ACK read, nothing reported falsely.
        let many: Vec<PortForward> = (0..500u16)
            .map(|i| PortForward {
                host_ip: None,
                host_port: 20000 + i,
                protocol: Protocol::Tcp,
                container_ip: Ipv4Addr::new(10, 88, 1, (i % 250) as u8 + 2),
                container_port: 80,
            })
            .collect();
        bridge::apply_nat(&config, many, false).unwrap();
        let big = run(&["nft", "list", "table", "ip", "berth"]);
        assert_eq!(big.matches("dnat to").count(), 1000);
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "1"
        );
    })
    .join()
    .unwrap();
}

/// Host namespace with the bridge and NAT; a container namespace joined the way the
/// runtime's child does it; a client namespace standing for the outside world.
#[test]
fn published_port_and_egress_with_real_traffic() {
    if !root() {
        return;
    }
    std::thread::spawn(|| {
        let host_ns = new_netns();
        let config = BridgeConfig::default();
        let mut nl = Netlink::open().unwrap();
        let br = bridge::ensure(&mut nl, &config).unwrap();
        let container_ip = Ipv4Addr::new(10, 88, 0, 2);
        bridge::apply_nat(
            &config,
            vec![PortForward {
                host_ip: None,
                host_port: 8080,
                protocol: Protocol::Tcp,
                container_ip,
                container_port: 80,
            }],
            false,
        )
        .unwrap();

        // The outside: 10.99.0.1 is the host, 10.99.0.2 the client.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            tx.send(new_netns()).unwrap();
            std::thread::park();
        });
        let outside_ns = rx.recv().unwrap();
        enter(&host_ns);
        link_namespaces(
            "up0",
            net("10.99.0.1/24"),
            &outside_ns,
            "eth0",
            net("10.99.0.2/24"),
        );

        // The container: a new namespace entered from a thread holding a host socket.
        let (tx, rx) = mpsc::channel();
        let container = std::thread::spawn(move || {
            let mut host_nl = Netlink::open().unwrap();
            let before = host_nl.links().unwrap().len();
            let ns = new_netns();
            attach(
                &mut host_nl,
                &Attachment {
                    bridge_index: br.index,
                    address: container_ip,
                    prefix: 16,
                    gateway: config.gateway(),
                    mtu: br.mtu,
                    peers: Vec::new(),
                },
            )
            .unwrap();
            // The host end is on the bridge in the host namespace.
            let links = host_nl.links().unwrap();
            assert_eq!(links.len(), before + 1);
            let veth = links.iter().find(|l| l.name.starts_with("vb")).unwrap();
            assert_eq!(veth.kind, "veth");
            assert_eq!(veth.controller, Some(br.index));
            assert!(veth.up);
            let addr = run(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
            assert!(addr.contains("10.88.0.2/16"), "{addr}");
            let route = run(&["ip", "-4", "route", "show", "default"]);
            assert!(route.contains("via 10.88.0.1 dev eth0"), "{route}");
            // A server in the container.
            let server = TcpListener::bind("0.0.0.0:80").unwrap();
            tx.send(ns).unwrap();
            let (mut conn, peer) = server.accept().unwrap();
            conn.write_all(format!("hello {}\n", peer.ip()).as_bytes())
                .unwrap();
            // Egress: the container reaches the outside, seen there as the host.
            let mut out = TcpStream::connect("10.99.0.2:9000").unwrap();
            let mut seen = String::new();
            out.read_to_string(&mut seen).unwrap();
            seen
        });
        let _container_ns = rx.recv().unwrap();

        enter(&outside_ns);
        let egress_server = TcpListener::bind("10.99.0.2:9000").unwrap();
        let mut conn = TcpStream::connect("10.99.0.1:8080").expect("published port 8080");
        let mut line = String::new();
        BufReader::new(&mut conn).read_line(&mut line).unwrap();
        // DNAT keeps the client's address: the container sees 10.99.0.2.
        assert_eq!(line, "hello 10.99.0.2\n");
        let (mut c, peer) = egress_server.accept().unwrap();
        c.write_all(peer.ip().to_string().as_bytes()).unwrap();
        drop(c);
        // Masquerade: the outside saw the host's address, not 10.88.0.2.
        assert_eq!(container.join().unwrap(), "10.99.0.1");
        // A neighbour routing the container subnet through the host reaches nothing
        // unpublished: the forward chain drops it (a timeout, not a refusal).
        let mut nl = Netlink::open().unwrap();
        let eth0 = nl.link("eth0").unwrap();
        nl.add_route(&berth_netd::netlink::Route4 {
            destination: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 16,
            gateway: Some(Ipv4Addr::new(10, 99, 0, 1)),
            interface: eth0.index,
            source: None,
            metric: None,
        })
        .unwrap();
        let direct = TcpStream::connect_timeout(
            &std::net::SocketAddr::from((container_ip, 80)),
            Duration::from_millis(1500),
        );
        match direct {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => panic!("a routed connection to an unpublished port got through: {other:?}"),
        }
        enter(&host_ns);
    })
    .join()
    .unwrap();
}

/// Spawns dnsmasq serving `10.77.0.50-60` on `iface` of the current namespace.
fn dnsmasq(iface: &str, dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    let lease_file = dir.join("leases");
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--log-dhcp",
        "--log-facility=-",
        "--bind-interfaces",
        &format!("--interface={iface}"),
        "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
        "--dhcp-option=option:router,10.77.0.1",
        "--dhcp-option=option:dns-server,10.77.0.1",
        "--dhcp-option=option:domain-name,test.lan",
        &format!("--dhcp-leasefile={}", lease_file.display()),
        &format!("--pid-file={}", dir.join("pid").display()),
    ]);
    cmd.args(extra);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.spawn().expect("dnsmasq (Debian package dnsmasq-base)")
}

/// A server namespace and a client namespace joined by a veth; returns (server ns,
/// client ns, client interface index, client MAC). The calling thread ends in the
/// server namespace.
fn dhcp_pair() -> (std::fs::File, std::fs::File, u32, [u8; 6]) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(new_netns()).unwrap();
        std::thread::park();
    });
    let client_ns = rx.recv().unwrap();
    let server_ns = new_netns();
    let mut nl = Netlink::open().unwrap();
    let br = nl.ensure_bridge("srv0").unwrap().index;
    nl.add_address(br, Ipv4Addr::new(10, 77, 0, 1).into(), 24)
        .unwrap();
    nl.create_veth(
        "srv0-v",
        Some(br),
        1500,
        &VethPeer {
            name: "eth0",
            netns: client_ns.as_fd(),
            mac: Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        },
    )
    .unwrap();
    enter(&client_ns);
    let mut cnl = Netlink::open().unwrap();
    let eth0 = cnl.link("eth0").unwrap();
    cnl.set_link(eth0.index, true, None, None).unwrap();
    enter(&server_ns);
    (
        server_ns,
        client_ns,
        eth0.index,
        [0x52, 0x54, 0, 0x12, 0x34, 0x56],
    )
}

fn fast_timing() -> Timing {
    Timing {
        first_retry: Duration::from_millis(200),
        max_retry: Duration::from_secs(1),
        request_attempts: 3,
    }
}

#[test]
fn dhcp_lease_renew_and_release_with_dnsmasq() {
    if !root() {
        return;
    }
    std::thread::spawn(|| {
        let dir = tempfile::tempdir().unwrap();
        let (_server_ns, client_ns, index, mac) = dhcp_pair();
        // T1 of 2 s: the client renews within the test.
        let mut server = dnsmasq(
            "srv0",
            dir.path(),
            &[
                "--dhcp-option=option:T1,2",
                "--dhcp-option=option:T2,3",
                "--dhcp-option=option:mtu,1400",
                "--dhcp-option=option:classless-static-route,10.55.0.0/16,10.77.0.1,0.0.0.0/0,10.77.0.1",
            ],
        );
        let log = server.stderr.take().unwrap();
        let (log_tx, log_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                let _ = log_tx.send(line);
            }
        });
        enter(&client_ns);
        let stop = Arc::new(AtomicBool::new(false));
        let (ev_tx, ev_rx) = mpsc::channel();
        let client_stop = Arc::clone(&stop);
        let resolv_dir = tempfile::tempdir().unwrap();
        let resolv = resolv_dir.path().join("resolv.conf");
        let client_thread = std::thread::spawn(move || {
            enter(&client_ns);
            let client =
                Client::new("eth0", mac, Some("berth-test".into()), fast_timing()).unwrap();
            let mut nl = Netlink::open().unwrap();
            let held = client
                .run(&client_stop, &mut |e: Event| {
                    if let Event::Bound(lease) = &e {
                        host::apply_lease(&mut nl, index, lease, true, &[]).unwrap();
                    }
                    ev_tx.send(e).unwrap();
                })
                .unwrap();
            client.release(held.as_ref().unwrap());
            held
        });
        let started = Instant::now();
        let Event::Bound(first) = ev_rx.recv_timeout(Duration::from_secs(20)).unwrap() else {
            panic!("first event is not a lease")
        };
        let lease_ms = started.elapsed().as_millis();
        let ip = first.address.addr.octets();
        assert_eq!(&ip[..3], &[10, 77, 0], "{first:?}");
        assert!((50..=60).contains(&ip[3]), "{first:?}");
        assert_eq!(first.address.prefix, 24);
        assert_eq!(first.router, Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(first.dns, vec![Ipv4Addr::new(10, 77, 0, 1)]);
        assert_eq!(first.domain.as_deref(), Some("test.lan"));
        assert_eq!(first.renew, Duration::from_secs(2));
        eprintln!("lease from dnsmasq in {lease_ms} ms");
        // The kernel has it: address and default route on eth0.
        let addr = run(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            addr.contains(&format!("{}/24", first.address.addr)),
            "{addr}"
        );
        let route = run(&["ip", "-4", "route", "show", "default"]);
        assert!(route.contains("via 10.77.0.1 dev eth0"), "{route}");
        // A lease inside the container subnet is refused, never applied.
        {
            let mut nl = Netlink::open().unwrap();
            let refused = host::apply_lease(&mut nl, index, &first, false, &[net("10.77.0.0/16")]);
            assert!(matches!(refused, Err(host::LeaseError::Protected { .. })), "{refused:?}");
        }
        // Classless static routes (option 121) and the MTU option reach the kernel.
        let routes = run(&["ip", "-4", "route", "show", "10.55.0.0/16"]);
        assert!(routes.contains("via 10.77.0.1 dev eth0"), "{routes}");
        let link = run(&["ip", "-o", "link", "show", "dev", "eth0"]);
        assert!(link.contains("mtu 1400"), "{link}");
        // Renewal at T1 keeps the address.
        let Event::Bound(renewed) = ev_rx.recv_timeout(Duration::from_secs(10)).unwrap() else {
            panic!("lease lost instead of renewed")
        };
        assert_eq!(renewed.address, first.address);
        stop.store(true, Ordering::Relaxed);
        let held = client_thread.join().unwrap();
        assert_eq!(held.map(|l| l.address), Some(first.address));
        // dnsmasq saw the whole exchange, the renewal and the release.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut lines = Vec::new();
        while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("DHCPRELEASE"))
        {
            if let Ok(l) = log_rx.recv_timeout(Duration::from_millis(200)) {
                lines.push(l);
            }
        }
        let text = lines.join("\n");
        assert!(text.contains("DHCPDISCOVER(srv0)"), "{text}");
        assert!(
            text.matches("DHCPACK(srv0)").count() >= 2,
            "no renewal ACK:\n{text}"
        );
        assert!(text.contains("DHCPRELEASE(srv0)"), "{text}");
        let _ = server.kill();
        let _ = server.wait();
        let _ = resolv;
    })
    .join()
    .unwrap();
}

#[test]
fn silent_server_never_blocks_and_stops_promptly() {
    if !root() {
        return;
    }
    std::thread::spawn(|| {
        let (_server_ns, client_ns, _index, mac) = dhcp_pair();
        enter(&client_ns);
        let client = Client::new("eth0", mac, None, fast_timing()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            stopper.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let mut events = 0;
        let held = client.run(&stop, &mut |_| events += 1).unwrap();
        assert!(held.is_none());
        assert_eq!(events, 0);
        // Stop is noticed within the 200 ms poll slice.
        assert!(
            started.elapsed() < Duration::from_millis(2000),
            "{:?}",
            started.elapsed()
        );
    })
    .join()
    .unwrap();
}

/// A scripted DHCP server on `srv0` of the calling thread's namespace (port 67). For
/// each DISCOVER or REQUEST, `answer(kind, xid, acks_so_far)` gives the datagrams to send
/// (bytes and destination), where `kind` is OFFER or ACK; it stops after `acks` ACKs.
fn scripted_dhcp_server(
    acks: usize,
    mut answer: impl FnMut(dhcproto::v4::MessageType, u32, usize) -> Vec<(Vec<u8>, SocketAddrV4)>
        + Send
        + 'static,
) -> std::thread::JoinHandle<()> {
    use dhcproto::v4::{self, MessageType};
    use dhcproto::Decodable;
    let sock = UdpSocket::bind("0.0.0.0:67").unwrap();
    sock.set_broadcast(true).unwrap();
    // Broadcasts leave through the bridge; there is no route to choose one.
    nix::sys::socket::setsockopt(
        &sock,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from("srv0"),
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut acked = 0;
        while acked < acks {
            let n = sock.recv(&mut buf).unwrap();
            let Ok(req) = v4::Message::decode(&mut dhcproto::Decoder::new(&buf[..n])) else {
                continue;
            };
            let kind = match req.opts().msg_type() {
                Some(MessageType::Discover) => MessageType::Offer,
                Some(MessageType::Request) => MessageType::Ack,
                _ => continue,
            };
            for (bytes, to) in answer(kind, req.xid(), acked) {
                sock.send_to(&bytes, to).unwrap();
            }
            if kind == MessageType::Ack {
                acked += 1;
            }
        }
    })
}

/// A reply of `kind` offering 10.77.0.9 from server 10.77.0.1, with `options`.
fn reply_to(
    kind: dhcproto::v4::MessageType,
    xid: u32,
    mac: [u8; 6],
    options: Vec<dhcproto::v4::DhcpOption>,
) -> Vec<u8> {
    use dhcproto::v4::{self, DhcpOption, Opcode};
    use dhcproto::Encodable;
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut m = v4::Message::new_with_id(xid, zero, Ipv4Addr::new(10, 77, 0, 9), zero, zero, &mac);
    m.set_opcode(Opcode::BootReply);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 1)));
    for option in options {
        o.insert(option);
    }
    m.to_vec().unwrap()
}

/// A server that answers every request with a list of garbage first, then a valid
/// reply with a 4-second lease, then goes silent: the client must skip the garbage, take
/// the lease, and drop the address when it expires.
#[test]
fn hostile_server_garbage_then_expiry() {
    if !root() {
        return;
    }
    use dhcproto::v4::DhcpOption;
    std::thread::spawn(|| {
        let (_server_ns, client_ns, index, mac) = dhcp_pair();
        let server = scripted_dhcp_server(1, move |kind, xid, _| {
            let good = reply_to(
                kind,
                xid,
                mac,
                vec![
                    DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
                    DhcpOption::AddressLeaseTime(4),
                ],
            );
            let mut garbage: Vec<Vec<u8>> = vec![vec![0xff; 7], good[..good.len() / 2].to_vec()];
            // An option claiming more bytes than the datagram has.
            let mut overrun = good.clone();
            let end = overrun.len() - 1;
            overrun[end] = 3; // a Router option header in place of END
            overrun.push(200);
            garbage.push(overrun);
            // 4000 bytes of options: oversized, and pad.
            let mut oversized = good[..good.len() - 1].to_vec();
            for _ in 0..15 {
                oversized.extend_from_slice(&[43, 255]);
                oversized.extend_from_slice(&[0x41; 255]);
            }
            oversized.push(255);
            garbage.push(oversized);
            // A broadcast address as the offer.
            let mut bcast = good.clone();
            bcast[16..20].copy_from_slice(&[10, 77, 0, 255]);
            garbage.push(bcast);
            let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
            garbage.into_iter().chain([good]).map(|g| (g, to)).collect()
        });
        enter(&client_ns);
        let client = Client::new("eth0", mac, None, fast_timing()).unwrap();
        let mut nl = Netlink::open().unwrap();
        let stop = AtomicBool::new(false);
        let mut events = Vec::new();
        let started = Instant::now();
        client
            .run(&stop, &mut |e: Event| {
                match &e {
                    Event::Bound(lease) => {
                        host::apply_lease(&mut nl, index, lease, true, &[]).unwrap()
                    }
                    Event::Lost(lease) => {
                        nl.delete_address(index, lease.address.addr.into(), lease.address.prefix)
                            .unwrap();
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                events.push((started.elapsed(), e));
            })
            .unwrap();
        server.join().unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        let (_, Event::Bound(lease)) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(lease.address.to_string(), "10.77.0.9/24");
        let (at, Event::Lost(_)) = &events[1] else {
            panic!("{events:?}")
        };
        assert!(
            *at >= Duration::from_secs(4),
            "lost after {at:?}, before the lease expired"
        );
        let addr = run(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(!addr.contains("10.77.0.9"), "{addr}");
    })
    .join()
    .unwrap();
}

/// A server whose renewal ACK changes the prefix (/24 to /16) and stops sending a
/// classless route: the old address and the old route leave the kernel.
#[test]
fn renewal_that_changes_the_lease_leaves_nothing_stale() {
    if !root() {
        return;
    }
    use dhcproto::v4::{DhcpOption, MessageType};
    std::thread::spawn(|| {
        let (_server_ns, client_ns, index, mac) = dhcp_pair();
        let server = scripted_dhcp_server(2, move |kind, xid, acks| {
            let renewal = kind == MessageType::Ack && acks == 1;
            let mask = if renewal {
                [255, 255, 0, 0]
            } else {
                [255, 255, 255, 0]
            };
            let mut options = vec![
                DhcpOption::SubnetMask(mask.into()),
                DhcpOption::AddressLeaseTime(60),
                DhcpOption::Renewal(1),
                DhcpOption::Rebinding(2),
            ];
            if !renewal {
                options.push(DhcpOption::ClasslessStaticRoute(vec![(
                    "10.55.0.0/16".parse().unwrap(),
                    Ipv4Addr::new(10, 77, 0, 1),
                )]));
            }
            // The renewal is unicast to the server: answer where it came from.
            let to = if renewal {
                SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 9), 68)
            } else {
                SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
            };
            vec![(reply_to(kind, xid, mac, options), to)]
        });
        enter(&client_ns);
        let client = Client::new("eth0", mac, None, fast_timing()).unwrap();
        let mut nl = Netlink::open().unwrap();
        let mut state = host::LeaseState::new(index, true, Vec::new());
        let stop = AtomicBool::new(false);
        let mut bound = 0;
        client
            .run(&stop, &mut |e: Event| {
                if let Event::Bound(lease) = &e {
                    state.bound(&mut nl, lease).unwrap();
                    bound += 1;
                    if bound == 2 {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            })
            .unwrap();
        server.join().unwrap();
        let addr = run(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addr.contains("10.77.0.9/16"), "{addr}");
        assert!(
            !addr.contains("10.77.0.9/24"),
            "the old prefix stayed: {addr}"
        );
        let routes = run(&["ip", "-4", "route", "show", "10.55.0.0/16"]);
        assert!(
            routes.trim().is_empty(),
            "the dropped route stayed: {routes}"
        );
    })
    .join()
    .unwrap();
}
