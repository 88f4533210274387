//! `berth boot`: run a built image in QEMU with the serial console on the terminal.
//!
//! The command line is built by the pure [`qemu_command`]. Exit status:
//! - the guest powers off → QEMU exits 0 → `berth boot` exits 0;
//! - the guest kernel panics → the pvpanic device tells QEMU, and
//!   `-action panic=exit-failure` (QEMU ≥ 7.1; Debian bookworm has 7.2) makes QEMU exit 1
//!   at once. `-device pvpanic` is the ISA device, which the guest finds through ACPI
//!   (`QEMU0001`) and drives with `pvpanic_mmio`, one of the default modules that PID 1
//!   loads at coldplug.
//!
//! A panic *before* that driver is bound (e.g. `/init` cannot be executed) cannot reach
//! QEMU; the kernel then halts (its default `panic=0` waits forever) and QEMU keeps running
//! until killed, so wrap unattended runs in `timeout`. berth does not pass `panic=-1`:
//! the kernel would reboot, and a reboot is indistinguishable from success to QEMU with
//! `-no-reboot`, or loops forever without it.
//!
//! TCG is the default accelerator: KVM is faster but not available (or not reliable) on
//! every build machine; `--accel kvm` asks for it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;

use crate::exec::{Exec, ExecError};

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

/// The default guest memory, MiB.
pub const DEFAULT_MEMORY_MB: u32 = 256;

/// The default QEMU binary.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// What `berth boot` was asked to do.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The `berth build` output directory.
    pub dir: PathBuf,
    pub memory_mb: u32,
    pub accel: Accel,
    /// Extra kernel command-line parameters.
    pub append: Option<String>,
    pub qemu: PathBuf,
    /// Ports forwarded from this machine into the guest (QEMU user network).
    pub publish: Vec<Publish>,
    /// No network device at all (`-nic none`).
    pub no_network: bool,
    /// Extra QEMU arguments, appended last.
    pub extra: Vec<OsString>,
}

/// A port forwarded from this machine into the guest, `-p [IP:]HOST:GUEST[/udp]`: the
/// same syntax as a container's `ports`, so `container_port` is the guest's port here.
pub use berth_netd::config::PortSpec as Publish;

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

/// Why a boot failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{path} not found: build the image first with `berth build CONFIG.toml -o {}`", dir.display())]
    MissingImage { path: PathBuf, dir: PathBuf },
    #[error("{qemu} is not installed: run `make deps` or `apt-get install qemu-system-x86`")]
    QemuMissing { qemu: String, source: ExecError },
    #[error(transparent)]
    Run(ExecError),
    #[error("qemu exited with {status}: the guest kernel panicked (reported by pvpanic), or qemu itself failed; see the output above")]
    GuestFailed { status: ExitStatus },
}

/// The QEMU command line for `opts`.
pub fn qemu_command(opts: &BootOptions) -> Exec {
    let mut append = String::from("console=ttyS0");
    if let Some(extra) = opts
        .append
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        append.push(' ');
        append.push_str(extra);
    }
    Exec::new(opts.qemu.as_os_str())
        .args(["-accel", opts.accel.as_str()])
        .arg("-m")
        .arg(opts.memory_mb.to_string())
        .arg("-nographic")
        .arg("-kernel")
        .arg(opts.dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(opts.dir.join("initramfs.img"))
        .arg("-append")
        .arg(append)
        .args(["-device", "pvpanic", "-action", "panic=exit-failure"])
        .arg("-nic")
        .arg(nic(opts))
        .args(opts.extra.iter().cloned())
}

/// Boots the image in `opts.dir`; returns when QEMU exits.
pub fn boot(opts: &BootOptions) -> Result<(), BootError> {
    for name in ["vmlinuz", "initramfs.img"] {
        let path = opts.dir.join(name);
        if !path.is_file() {
            return Err(BootError::MissingImage {
                path,
                dir: opts.dir.clone(),
            });
        }
    }
    let status = qemu_command(opts).interactive().map_err(|e| match e {
        ExecError::NotFound { .. } => BootError::QemuMissing {
            qemu: opts.qemu.display().to_string(),
            source: e,
        },
        other => BootError::Run(other),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BootError::GuestFailed { status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BootOptions {
        BootOptions {
            dir: PathBuf::from("out"),
            memory_mb: DEFAULT_MEMORY_MB,
            accel: Accel::default(),
            append: None,
            qemu: PathBuf::from(DEFAULT_QEMU),
            publish: Vec::new(),
            no_network: false,
            extra: Vec::new(),
        }
    }

    fn args(e: &Exec) -> Vec<String> {
        e.command_line()
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn default_command() {
        let e = qemu_command(&opts());
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
                "console=ttyS0",
                "-device",
                "pvpanic",
                "-action",
                "panic=exit-failure",
                "-nic",
                "user,model=virtio-net-pci"
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
        let a = args(&qemu_command(&o));
        let i = a.iter().position(|x| x == "-nic").unwrap();
        assert_eq!(
            a[i + 1],
            "user,model=virtio-net-pci,hostfwd=tcp::8080-:80,hostfwd=udp:127.0.0.1:5353-:53"
        );
        let none = BootOptions {
            no_network: true,
            ..opts()
        };
        let a = args(&qemu_command(&none));
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
            memory_mb: 512,
            accel: Accel::Kvm,
            append: Some(" berth.hostname=vm1 quiet ".into()),
            qemu: PathBuf::from("/opt/qemu/bin/qemu-system-x86_64"),
            extra: vec!["-smp".into(), "2".into()],
            ..opts()
        };
        let e = qemu_command(&o);
        let a = args(&e);
        assert_eq!(e.command_line().program, "/opt/qemu/bin/qemu-system-x86_64");
        assert_eq!(&a[..4], ["-accel", "kvm", "-m", "512"]);
        let i = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(a[i + 1], "console=ttyS0 berth.hostname=vm1 quiet");
        assert_eq!(&a[a.len() - 2..], ["-smp", "2"]);
    }

    #[test]
    fn missing_image_and_missing_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let o = BootOptions {
            dir: dir.path().to_owned(),
            ..opts()
        };
        assert!(matches!(boot(&o), Err(BootError::MissingImage { .. })));
        std::fs::write(dir.path().join("vmlinuz"), b"").unwrap();
        std::fs::write(dir.path().join("initramfs.img"), b"").unwrap();
        let o = BootOptions {
            qemu: PathBuf::from("berth-no-such-qemu"),
            ..o
        };
        let err = boot(&o).unwrap_err();
        assert!(matches!(err, BootError::QemuMissing { .. }), "{err:?}");
        assert!(
            err.to_string().contains("apt-get install qemu-system-x86"),
            "{err}"
        );
    }
}
