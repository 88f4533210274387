//! The QEMU command line of `berth boot`, a pure function of [`BootOptions`] and the
//! decisions made before the start (memory, private QMP socket).

use std::path::Path;

use super::BootOptions;
use crate::exec::Exec;

/// The QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation: works everywhere, slower.
    #[default]
    Tcg,
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
}

impl Accel {
    fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// A port forwarded from this machine into the guest, `-p [IP:]HOST:GUEST[/udp]`: the
/// same syntax as a container's `ports`, so `container_port` is the guest's port here.
pub use berth_netd::config::PortSpec as Publish;

/// Seconds the kernel waits after a panic before it resets the machine (`panic=`). The
/// default, 0, halts forever and leaves QEMU running; 1 leaves time to print the trace.
pub const PANIC_RESET_SECS: u32 = 1;

/// The `hostfwd=` rule for QEMU's `-nic user`; no address listens on every one, as
/// `docker run -p` does.
fn hostfwd(p: &Publish) -> String {
    format!(
        "hostfwd={}:{}:{}-:{}",
        p.protocol.as_str(),
        p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        p.host_port,
        p.container_port
    )
}

/// The `-nic` argument: a virtio NIC on QEMU's user network with the forwards.
fn nic(opts: &BootOptions) -> String {
    if opts.no_network {
        return "none".into();
    }
    let mut nic = String::from("user,model=virtio-net-pci");
    for p in &opts.publish {
        nic.push(',');
        nic.push_str(&hostfwd(p));
    }
    nic
}

/// The kernel command line: the serial console, a reset shortly after a panic, `quiet`
/// unless the kernel's chatter was asked for, then the user's `--append` (last, so that
/// its `loglevel=` or `panic=` wins).
pub fn kernel_cmdline(opts: &BootOptions) -> String {
    let mut append = format!("console=ttyS0 panic={PANIC_RESET_SECS}");
    if !opts.kernel_chatter {
        append.push_str(" quiet");
    }
    if let Some(extra) = opts
        .append
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        append.push(' ');
        append.push_str(extra);
    }
    append
}

/// A `-qmp` argument for a unix socket at `path`, listening without waiting for a client.
fn qmp_arg(path: &Path) -> String {
    format!("unix:{},server=on,wait=off", path.display())
}

/// The QEMU command line for `opts` with `memory_mib` of guest memory and berth's own
/// QMP socket at `control` (the user's `--qmp` socket, if any, is a second one).
pub fn qemu_command(opts: &BootOptions, memory_mib: u64, control: &Path) -> Exec {
    let mut exec = Exec::new(opts.qemu.as_os_str())
        .args(["-accel", opts.accel.as_str()])
        .arg("-m")
        .arg(memory_mib.to_string())
        .arg("-nographic")
        .arg("-kernel")
        .arg(opts.dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(opts.dir.join("initramfs.img"))
        .arg("-append")
        .arg(kernel_cmdline(opts))
        .args(["-device", "pvpanic", "-action", "panic=exit-failure"])
        .arg("-nic")
        .arg(nic(opts))
        .arg("-qmp")
        .arg(qmp_arg(control));
    if let Some(user) = &opts.qmp {
        exec = exec.arg("-qmp").arg(qmp_arg(user));
    }
    exec.args(opts.extra.iter().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::tests::opts;

    fn args(e: &Exec) -> Vec<String> {
        e.command_line()
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn command(o: &BootOptions) -> Exec {
        qemu_command(o, 256, Path::new("/run/b/control.sock"))
    }

    #[test]
    fn default_command() {
        let e = command(&opts());
        assert_eq!(e.command_line().program, "qemu-system-x86_64");
        assert_eq!(
            args(&e),
            [
                "-accel",
                "tcg",
                "-m",
                "256",
                "-nographic",
                "-kernel",
                "out/vmlinuz",
                "-initrd",
                "out/initramfs.img",
                "-append",
                "console=ttyS0 panic=1 quiet",
                "-device",
                "pvpanic",
                "-action",
                "panic=exit-failure",
                "-nic",
                "user,model=virtio-net-pci",
                "-qmp",
                "unix:/run/b/control.sock,server=on,wait=off"
            ]
        );
    }

    #[test]
    fn verbose_keeps_the_kernel_chatter_and_append_comes_last() {
        let o = BootOptions {
            kernel_chatter: true,
            ..opts()
        };
        assert_eq!(kernel_cmdline(&o), "console=ttyS0 panic=1");
        let o = BootOptions {
            append: Some(" loglevel=7 panic=0 ".into()),
            ..opts()
        };
        assert_eq!(
            kernel_cmdline(&o),
            "console=ttyS0 panic=1 quiet loglevel=7 panic=0"
        );
    }

    #[test]
    fn user_qmp_socket_is_a_second_one() {
        let o = BootOptions {
            qmp: Some("/tmp/mine.sock".into()),
            ..opts()
        };
        let a = args(&command(&o));
        let sockets: Vec<&str> = a
            .windows(2)
            .filter(|w| w[0] == "-qmp")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(
            sockets,
            [
                "unix:/run/b/control.sock,server=on,wait=off",
                "unix:/tmp/mine.sock,server=on,wait=off"
            ]
        );
    }

    #[test]
    fn published_ports_become_hostfwd_rules() {
        let o = BootOptions {
            publish: ["8080:80", "127.0.0.1:5353:53/udp"]
                .iter()
                .map(|p| p.parse().unwrap())
                .collect(),
            ..opts()
        };
        let a = args(&command(&o));
        let i = a.iter().position(|x| x == "-nic").unwrap();
        assert_eq!(
            a[i + 1],
            "user,model=virtio-net-pci,hostfwd=tcp::8080-:80,hostfwd=udp:127.0.0.1:5353-:53"
        );
        let none = BootOptions {
            no_network: true,
            ..opts()
        };
        let a = args(&command(&none));
        assert!(a.windows(2).any(|w| w == ["-nic", "none"]), "{a:?}");
        for bad in [
            "80",
            "0:80",
            "8080:80/sctp",
            "a:1:2",
            "8080:80,hostfwd=tcp::22-:22",
            "1:2:3:4",
        ] {
            assert!(bad.parse::<Publish>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn options_reach_the_command() {
        let o = BootOptions {
            accel: Accel::Kvm,
            append: Some(" berth.hostname=vm1 ".into()),
            qemu: "/opt/qemu/bin/qemu-system-x86_64".into(),
            extra: vec!["-smp".into(), "2".into()],
            ..opts()
        };
        let e = qemu_command(&o, 512, Path::new("c.sock"));
        let a = args(&e);
        assert_eq!(e.command_line().program, "/opt/qemu/bin/qemu-system-x86_64");
        assert_eq!(&a[..4], ["-accel", "kvm", "-m", "512"]);
        let i = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(a[i + 1], "console=ttyS0 panic=1 quiet berth.hostname=vm1");
        assert_eq!(&a[a.len() - 2..], ["-smp", "2"]);
    }
}
