//! Networking under the real PID 1 in QEMU, on QEMU's user network: netd's DHCP lease
//! from QEMU's server (10.0.2.15, nameserver 10.0.2.3), an IPv6 address from the
//! kernel's SLAAC, a container's published port
//! answering an HTTP request made on this machine through a `hostfwd` rule, two
//! containers reaching each other by name, a container reaching a server on this
//! machine's loopback through the NAT and QEMU's gateway 10.0.2.2, a static address on
//! an interface matched by MAC, and a guest without a network device booting to ready.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use berth_qemu_tests::{build_busybox_test_image, build_test_image, require_qemu, Qemu};

const BOOT: Duration = Duration::from_secs(120);

fn config(host_port: u16) -> String {
    format!(
        r#"version = 1
hostname = "net-host"

[[image]]
path = "busybox"
name = "busybox:latest"

[[container]]
name = "web"
image = "busybox:latest"
command = ["sh", "-c", "mkdir -p /www && echo hello from web > /www/index.html && exec httpd -f -p 80 -h /www"]
ports = ["8080:80"]

# On the host's network: the guest's IPv6 address from the kernel's SLAAC (QEMU's user
# network advertises fec0::/64).
[[container]]
name = "v6"
image = "busybox:latest"
network = "host"
depends_on = ["network-online"]
command = ["sh", "-c", "for i in $(seq 50); do ip -6 addr show dev eth0 | grep -q 'inet6 fec0' && break; sleep 0.2; done; echo slaac: $(ip -6 addr show dev eth0 | grep -o 'inet6 [0-9a-f:]*' | tr '\\n' ' '); exec sleep 1000"]

[[container]]
name = "client"
image = "busybox:latest"
depends_on = ["web", "network-online"]
command = ["sh", "-c", "sleep 1; echo by-name: $(wget -q -O- http://web/); echo host-loopback: $(wget -q -O- http://10.0.2.2:{host_port}/); cat /etc/resolv.conf | grep nameserver | sed 's/^/resolv: /'; exec sleep 1000"]
"#
    )
}

/// Waits until every marker is on the console.
fn wait_all(vm: &berth_qemu_tests::Vm, markers: &[&str], timeout: Duration) -> String {
    vm.wait_for_all(markers, timeout).unwrap_or_else(|| {
        panic!(
            "timed out waiting for {markers:?}; console:\n{}",
            vm.console()
        )
    })
}

/// An HTTP server on this machine's loopback answering every request with `body`,
/// which the guest reaches as 10.0.2.2; returns its port.
fn serve_on_loopback(body: &'static str) -> u16 {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in server.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    port
}

/// A clean power-off leaves no filesystem busy: the store's tmpfs included, which held
/// the containers' logs and network leases.
fn assert_clean_unmount(vm: &berth_qemu_tests::Vm) {
    let console = vm.console();
    let warnings: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("cannot unmount"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn dhcp_published_port_names_and_nat_to_host_loopback() {
    if !require_qemu() {
        return;
    }
    // A server on this machine's loopback, which the guest reaches as 10.0.2.2.
    let host_port = serve_on_loopback("hello from host");
    // A free port on this machine for the guest's published port.
    let forward_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let image = build_busybox_test_image("network", &config(host_port));
    let vm = Qemu::new(image.join("vmlinuz"))
        .initrd(image.join("initramfs.img"))
        .user_net()
        .hostfwd(format!("tcp:127.0.0.1:{forward_port}-:8080"))
        .deadline(Duration::from_secs(300))
        .spawn()
        .expect("start QEMU");
    let console = wait_all(
        &vm,
        &[
            "netd: eth0 leased 10.0.2.15/24 from 10.0.2.2",
            "network online",
        ],
        BOOT,
    );
    assert!(
        console.contains("nameservers [10.0.2.3]"),
        "resolv.conf not written:\n{console}"
    );

    // Name resolution between containers, and NAT out to this machine's loopback.
    let console = wait_all(
        &vm,
        &[
            "client | by-name:",
            "client | host-loopback:",
            "client | resolv:",
            "v6 | slaac:",
        ],
        Duration::from_secs(60),
    );
    assert!(
        console.contains("client | by-name: hello from web"),
        "{console}"
    );
    assert!(
        console.contains("client | host-loopback: hello from host"),
        "{console}"
    );
    assert!(
        console.contains("client | resolv: nameserver 10.0.2.3"),
        "{console}"
    );
    assert!(console.contains("v6 | slaac: inet6 fec0::"), "{console}");

    // The published port, from this machine through QEMU's hostfwd and the DNAT rule.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let attempt = TcpStream::connect(("127.0.0.1", forward_port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match attempt {
            Ok(out) if out.contains("hello from web") => break out,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no answer on the published port: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    assert!(body.starts_with("HTTP/1."), "{body}");
    vm.system_powerdown().unwrap();
    assert!(vm.wait_exit(Duration::from_secs(60)).unwrap().success());
    assert_clean_unmount(&vm);
}

#[test]
fn no_network_device_still_boots_promptly() {
    if !require_qemu() {
        return;
    }
    let image = build_test_image("no-nic", "version = 1\n", |_| {});
    let vm = Qemu::new(image.join("vmlinuz"))
        .initrd(image.join("initramfs.img"))
        .deadline(Duration::from_secs(200))
        .spawn()
        .expect("start QEMU");
    vm.wait_for("berth: ready in", BOOT).unwrap();
    let console = wait_all(
        &vm,
        &["netd: no network interface to configure"],
        Duration::from_secs(30),
    );
    assert!(!console.contains("netd exited"), "{console}");
    vm.system_powerdown().unwrap();
    assert!(vm.wait_exit(Duration::from_secs(60)).unwrap().success());
    assert_clean_unmount(&vm);
}

#[test]
fn static_address_matched_by_mac_routes_containers_out() {
    if !require_qemu() {
        return;
    }
    let host_port = serve_on_loopback("static");
    // QEMU gives the first NIC 52:54:00:12:34:56; no DHCP at all.
    let config = format!(
        r#"version = 1

[[network.interface]]
match = {{ mac = "52:54:00:12:34:56" }}
addresses = ["10.0.2.15/24"]
gateway = "10.0.2.2"
dns = ["10.0.2.3"]

[[image]]
path = "busybox"
name = "busybox:latest"

[[container]]
name = "out"
image = "busybox:latest"
depends_on = ["network-online"]
command = ["sh", "-c", "echo via-static: $(wget -q -O- http://10.0.2.2:{host_port}/); exec sleep 1000"]
"#
    );
    let image = build_busybox_test_image("static", &config);
    let vm = Qemu::new(image.join("vmlinuz"))
        .initrd(image.join("initramfs.img"))
        .user_net()
        .deadline(Duration::from_secs(300))
        .spawn()
        .expect("start QEMU");
    let console = wait_all(
        &vm,
        &[
            "netd: eth0 has static address 10.0.2.15/24",
            "out | via-static:",
        ],
        BOOT,
    );
    assert!(console.contains("out | via-static: static"), "{console}");
    assert!(console.contains("nameservers [10.0.2.3]"), "{console}");
    assert!(
        !console.contains("leased"),
        "DHCP ran with dhcp unset and addresses given:\n{console}"
    );
    vm.system_powerdown().unwrap();
    assert!(vm.wait_exit(Duration::from_secs(60)).unwrap().success());
    assert_clean_unmount(&vm);
}
