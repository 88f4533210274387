//! `make bench`: the time to give one container its network (veth pair with the host end
//! on the bridge, `eth0` up with its address, loopback up, the default route), berth's
//! netlink path beside `ip` commands doing the same work, in the same run.
//!
//! Both run in a private network namespace standing for the host, with a bridge. Each
//! sample gets a fresh container namespace, created outside the timed part: berth's
//! through `unshare` in the thread (as the container child has one from `clone3`),
//! `ip`'s through `ip netns add`. Medians of 50. Needs root.

use std::process::Command;
use std::time::Instant;

use berth_netd::addr::Ipv4Net;
use berth_netd::bridge;
use berth_netd::config::BridgeConfig;
use berth_netd::container::{attach, Attachment};
use berth_netd::netlink::Netlink;
use nix::sched::{setns, unshare, CloneFlags};

const RUNS: usize = 50;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2)");
    assert!(status.success(), "ip {args:?}");
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench_network: needs root");
        std::process::exit(2);
    }
    // The "host": a namespace of our own, so the machine's network is untouched.
    std::thread::spawn(run).join().expect("bench thread");
}

fn run() {
    unshare(CloneFlags::CLONE_NEWNET).expect("unshare");
    let host_ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    let config = BridgeConfig::default();
    let mut nl = Netlink::open().unwrap();
    berth_netd::netlink::loopback_up().unwrap();
    let br = bridge::ensure(&mut nl, &config).unwrap();
    let subnet: Ipv4Net = config.subnet;

    // berth: the container child's path, socket opening included.
    let mut berth = Vec::new();
    for i in 0..RUNS {
        let address = subnet.nth(2 + i as u64).unwrap();
        let mut host = Netlink::open().unwrap();
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        let started = Instant::now();
        attach(
            &mut host,
            &Attachment {
                bridge_index: br.index,
                address,
                prefix: subnet.prefix,
                gateway: config.gateway(),
                mtu: br.mtu,
                peers: Vec::new(),
            },
        )
        .unwrap();
        berth.push(started.elapsed().as_secs_f64() * 1000.0);
        // Back to the host; the container namespace dies with its last reference.
        setns(&host_ns, CloneFlags::CLONE_NEWNET).unwrap();
    }

    // ip: the same work as commands (a namespace made beforehand, untimed).
    let mut ip_ms = Vec::new();
    for i in 0..RUNS {
        let ns = format!("berthbench{i}");
        let veth = format!("vbip{i}");
        let address = format!("{}/{}", subnet.nth(100 + i as u64).unwrap(), subnet.prefix);
        let gw = config.gateway().to_string();
        ip(&["netns", "add", &ns]);
        let started = Instant::now();
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["link", "set", &veth, "master", &config.name.0, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
        ip(&["-n", &ns, "route", "add", "default", "via", &gw]);
        ip_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        ip(&["netns", "del", &ns]);
    }

    println!();
    println!("container network setup (veth on the bridge, address, route), {RUNS} runs, medians");
    println!(
        "{:<40} {:>10.3} ms",
        "berth (netlink, in the container child)",
        median(berth.clone())
    );
    println!(
        "{:<40} {:>10.3} ms",
        "ip commands (iproute2)",
        median(ip_ms.clone())
    );
    println!(
        "{:<40} {:>10.3} ms",
        "berth, fastest",
        berth.iter().copied().fold(f64::MAX, f64::min)
    );
    println!("target: <= 1 ms per container");
}
