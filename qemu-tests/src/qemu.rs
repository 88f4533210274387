//! The QEMU command line, built by a plain builder and rendered by a pure
//! function ([`Qemu::argv`]) so every flag is unit-tested without QEMU.
//!
//! Only two environment variables are read, once, in [`Qemu::new`]:
//! `BERTH_QEMU` (the binary) and `BERTH_QEMU_ACCEL` (`kvm` to opt in to KVM;
//! anything else means TCG). [`Qemu::with_env`] takes the lookup as a closure
//! so tests can pin it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The binary run when `BERTH_QEMU` is not set; found through `PATH`.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// Guest memory when [`Qemu::memory_mib`] is not called.
pub const DEFAULT_MEMORY_MIB: u32 = 256;

/// How long a VM may live before the watchdog kills it, unless
/// [`Qemu::deadline`] says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);

/// The id of the serial chardev; the guest's ttyS0 is wired to it.
const SERIAL_CHARDEV: &str = "serial0";
/// The id of the QMP chardev.
const QMP_CHARDEV: &str = "qmp0";

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Pure emulation. The default: KVM hangs on the machines we test on.
    Tcg,
    /// Hardware virtualisation; only when asked for with `BERTH_QEMU_ACCEL=kvm`.
    Kvm,
}

impl Accel {
    /// Reads the value of `BERTH_QEMU_ACCEL`: exactly `kvm` selects KVM,
    /// anything else (including unset) selects TCG.
    pub fn from_env_value(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some("kvm") => Accel::Kvm,
            _ => Accel::Tcg,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// The guest's network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Net {
    /// `-nic none`: no network device at all.
    #[default]
    None,
    /// `-nic user,model=virtio-net-pci` (slirp), with `hostfwd=` rules such as
    /// `tcp:127.0.0.1:2222-:22`.
    User {
        /// Host-forwarding rules, each passed as one `hostfwd=` option.
        hostfwd: Vec<String>,
    },
}

/// A builder option that QEMU's option parser would misread.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// QEMU splits `-nic` options on commas, so a rule must not contain one.
    #[error("hostfwd rule {rule:?} contains a comma")]
    HostfwdComma {
        /// The offending rule.
        rule: String,
    },
    /// `-kernel`/`-initrd` paths with commas would be split by QEMU's option parser.
    #[error("path {path:?} contains a comma, which qemu would split")]
    PathComma {
        /// The offending path.
        path: PathBuf,
    },
}

/// Describes one QEMU guest: kernel, initrd, memory, devices, deadline.
///
/// ```no_run
/// # use berth_qemu_tests::Qemu;
/// let vm = Qemu::new("/path/to/vmlinuz")
///     .initrd("/path/to/initrd.img")
///     .kernel_arg("panic=-1")
///     .spawn()?;
/// # Ok::<(), berth_qemu_tests::VmError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Qemu {
    pub(crate) program: PathBuf,
    pub(crate) name: Option<String>,
    memory_mib: u32,
    smp: Option<u32>,
    accel: Accel,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    kernel_args: Vec<String>,
    pvpanic: bool,
    no_reboot: bool,
    net: Net,
    extra_args: Vec<OsString>,
    pub(crate) deadline: Duration,
    pub(crate) log_dir: Option<PathBuf>,
}

impl Qemu {
    /// A guest booting `kernel`, configured from the process environment
    /// (`BERTH_QEMU`, `BERTH_QEMU_ACCEL`).
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self::with_env(kernel, |key| std::env::var(key).ok())
    }

    /// Like [`Qemu::new`], but environment variables are read through `env`.
    pub fn with_env(kernel: impl Into<PathBuf>, env: impl Fn(&str) -> Option<String>) -> Self {
        let program = env("BERTH_QEMU")
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_QEMU), PathBuf::from);
        Qemu {
            program,
            name: None,
            memory_mib: DEFAULT_MEMORY_MIB,
            smp: None,
            accel: Accel::from_env_value(env("BERTH_QEMU_ACCEL").as_deref()),
            kernel: kernel.into(),
            initrd: None,
            kernel_args: Vec::new(),
            pvpanic: false,
            no_reboot: false,
            net: Net::None,
            extra_args: Vec::new(),
            deadline: DEFAULT_DEADLINE,
            log_dir: None,
        }
    }

    /// Names the VM in logs, dumps and errors. Defaults to the current
    /// thread's name, which libtest sets to the test's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The QEMU binary to run (overrides `BERTH_QEMU`).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The QEMU binary that will be run.
    pub fn program_path(&self) -> &Path {
        &self.program
    }

    /// Guest memory in MiB (default 256).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Number of virtual CPUs; QEMU's default (one) when not called.
    pub fn smp(mut self, cpus: u32) -> Self {
        self.smp = Some(cpus);
        self
    }

    /// Overrides the accelerator chosen from `BERTH_QEMU_ACCEL`.
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// The initramfs passed with `-initrd`.
    pub fn initrd(mut self, initrd: impl Into<PathBuf>) -> Self {
        self.initrd = Some(initrd.into());
        self
    }

    /// Appends one word to the kernel command line (after `console=ttyS0`).
    pub fn kernel_arg(mut self, arg: impl Into<String>) -> Self {
        self.kernel_args.push(arg.into());
        self
    }

    /// Appends several words to the kernel command line.
    pub fn kernel_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.kernel_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds the ISA `pvpanic` device, so a guest panic shows up as a
    /// `GUEST_PANICKED` QMP event.
    pub fn pvpanic(mut self, on: bool) -> Self {
        self.pvpanic = on;
        self
    }

    /// With `-no-reboot`, a guest reboot makes QEMU exit instead. Off by
    /// default: some tests need the guest to reboot.
    pub fn no_reboot(mut self, on: bool) -> Self {
        self.no_reboot = on;
        self
    }

    /// Gives the guest a virtio-net NIC on QEMU's user-mode network.
    pub fn user_net(mut self) -> Self {
        if self.net == Net::None {
            self.net = Net::User {
                hostfwd: Vec::new(),
            };
        }
        self
    }

    /// Adds a host-forwarding rule (e.g. `tcp:127.0.0.1:2222-:22`); implies
    /// [`Qemu::user_net`].
    pub fn hostfwd(mut self, rule: impl Into<String>) -> Self {
        self = self.user_net();
        if let Net::User { hostfwd } = &mut self.net {
            hostfwd.push(rule.into());
        }
        self
    }

    /// Appends one raw argument to the QEMU command line.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Appends raw arguments to the QEMU command line.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// After this long the watchdog kills QEMU, whatever the test is doing
    /// (default 300 s).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Where the console log file goes; see [`crate::log_dir`] for the default.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// The kernel command line: `console=ttyS0` and then the added words.
    pub fn kernel_cmdline(&self) -> String {
        std::iter::once("console=ttyS0")
            .chain(self.kernel_args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Rejects options QEMU would misparse. [`Qemu::spawn`](crate::Qemu::spawn) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Net::User { hostfwd } = &self.net {
            if let Some(rule) = hostfwd.iter().find(|r| r.contains(',')) {
                return Err(ConfigError::HostfwdComma { rule: rule.clone() });
            }
        }
        for path in std::iter::once(&self.kernel).chain(self.initrd.as_ref()) {
            if path.as_os_str().as_encoded_bytes().contains(&b',') {
                return Err(ConfigError::PathComma { path: path.clone() });
            }
        }
        Ok(())
    }

    /// The arguments after the program name, given the path of the unix
    /// socket QMP should connect to (the harness listens there, QEMU
    /// connects as a client at start-up so there is no race on the socket
    /// appearing). The serial port is a `stdio` chardev: the guest's output
    /// arrives on QEMU's stdout and whatever is written to QEMU's stdin is
    /// typed on ttyS0. `signal=off` keeps a typed Ctrl-C going to the guest
    /// instead of killing QEMU.
    pub fn argv(&self, qmp_socket: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| argv.extend(items.iter().map(OsString::from));

        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        push(&["-accel", self.accel.as_str()]);
        push(&["-m", &self.memory_mib.to_string()]);
        if let Some(cpus) = self.smp {
            push(&["-smp", &cpus.to_string()]);
        }
        if let Some(name) = &self.name {
            push(&["-name", &sanitize(name)]);
        }
        push(&[
            "-chardev",
            &format!("stdio,id={SERIAL_CHARDEV},signal=off"),
            "-serial",
            &format!("chardev:{SERIAL_CHARDEV}"),
        ]);
        let mut qmp = OsString::from(format!("socket,id={QMP_CHARDEV},path="));
        qmp.push(qmp_socket.as_os_str());
        argv.extend([OsString::from("-chardev"), qmp]);
        argv.extend(
            ["-mon", &format!("chardev={QMP_CHARDEV},mode=control")]
                .iter()
                .map(OsString::from),
        );
        match &self.net {
            Net::None => argv.extend(["-nic", "none"].iter().map(OsString::from)),
            Net::User { hostfwd } => {
                let mut nic = String::from("user,model=virtio-net-pci");
                for rule in hostfwd {
                    nic.push_str(",hostfwd=");
                    nic.push_str(rule);
                }
                argv.extend([OsString::from("-nic"), OsString::from(nic)]);
            }
        }
        if self.pvpanic {
            argv.extend(["-device", "pvpanic"].iter().map(OsString::from));
        }
        if self.no_reboot {
            argv.push(OsString::from("-no-reboot"));
        }
        argv.push(OsString::from("-kernel"));
        argv.push(self.kernel.clone().into_os_string());
        if let Some(initrd) = &self.initrd {
            argv.push(OsString::from("-initrd"));
            argv.push(initrd.clone().into_os_string());
        }
        argv.push(OsString::from("-append"));
        argv.push(OsString::from(self.kernel_cmdline()));
        argv.extend(self.extra_args.iter().cloned());
        argv
    }
}

/// Keeps names usable as file names and as QEMU option values (no commas,
/// no slashes): anything outside `[A-Za-z0-9._-]` becomes `_`.
pub(crate) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("vm{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn strings(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The value following `flag`, for every occurrence.
    fn values(argv: &[String], flag: &str) -> Vec<String> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn defaults() {
        let q = Qemu::with_env("/k/vmlinuz", no_env);
        assert_eq!(q.program_path(), Path::new("qemu-system-x86_64"));
        let argv = strings(&q.argv(Path::new("/tmp/vm/qmp.sock")));
        let expected: Vec<String> = [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-chardev",
            "stdio,id=serial0,signal=off",
            "-serial",
            "chardev:serial0",
            "-chardev",
            "socket,id=qmp0,path=/tmp/vm/qmp.sock",
            "-mon",
            "chardev=qmp0,mode=control",
            "-nic",
            "none",
            "-kernel",
            "/k/vmlinuz",
            "-append",
            "console=ttyS0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(argv, expected);
        assert!(!argv.iter().any(|a| a == "-machine" || a == "-no-reboot"));
    }

    #[test]
    fn env_selects_binary_and_accel() {
        let env = |k: &str| match k {
            "BERTH_QEMU" => Some("/opt/qemu/bin/qemu-system-x86_64".to_string()),
            "BERTH_QEMU_ACCEL" => Some("kvm".to_string()),
            _ => None,
        };
        let q = Qemu::with_env("/k", env);
        assert_eq!(
            q.program_path(),
            Path::new("/opt/qemu/bin/qemu-system-x86_64")
        );
        let argv = strings(&q.argv(Path::new("/s")));
        assert_eq!(values(&argv, "-accel"), ["kvm"]);
    }

    #[test]
    fn accel_is_tcg_unless_exactly_kvm() {
        assert_eq!(Accel::from_env_value(None), Accel::Tcg);
        assert_eq!(Accel::from_env_value(Some("")), Accel::Tcg);
        assert_eq!(Accel::from_env_value(Some("tcg")), Accel::Tcg);
        assert_eq!(Accel::from_env_value(Some("hvf")), Accel::Tcg);
        assert_eq!(Accel::from_env_value(Some("kvm")), Accel::Kvm);
        let empty = |k: &str| (k == "BERTH_QEMU").then(String::new);
        assert_eq!(
            Qemu::with_env("/k", empty).program_path(),
            Path::new(DEFAULT_QEMU)
        );
    }

    #[test]
    fn every_option() {
        let q = Qemu::with_env("/k/vmlinuz", no_env)
            .name("tests::boot, twice")
            .memory_mib(512)
            .smp(2)
            .initrd("/k/initrd.img")
            .kernel_arg("panic=-1")
            .kernel_args(["berth.debug", "quiet"])
            .pvpanic(true)
            .no_reboot(true)
            .hostfwd("tcp:127.0.0.1:2222-:22")
            .hostfwd("udp::5353-:53")
            .args(["-drive", "file=disk.img,if=virtio"]);
        let argv = strings(&q.argv(Path::new("/s")));
        assert_eq!(values(&argv, "-m"), ["512"]);
        assert_eq!(values(&argv, "-smp"), ["2"]);
        assert_eq!(values(&argv, "-name"), ["tests__boot__twice"]);
        assert_eq!(values(&argv, "-initrd"), ["/k/initrd.img"]);
        assert_eq!(
            values(&argv, "-append"),
            ["console=ttyS0 panic=-1 berth.debug quiet"]
        );
        assert_eq!(values(&argv, "-device"), ["pvpanic"]);
        assert!(argv.iter().any(|a| a == "-no-reboot"));
        assert_eq!(
            values(&argv, "-nic"),
            ["user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp::5353-:53"]
        );
        // Raw arguments come last, in order.
        assert_eq!(
            &argv[argv.len() - 2..],
            ["-drive", "file=disk.img,if=virtio"]
        );
        assert_eq!(q.validate(), Ok(()));
    }

    #[test]
    fn user_net_without_forwarding() {
        let q = Qemu::with_env("/k", no_env).user_net().user_net();
        let argv = strings(&q.argv(Path::new("/s")));
        assert_eq!(values(&argv, "-nic"), ["user,model=virtio-net-pci"]);
    }

    #[test]
    fn commas_are_rejected() {
        let q = Qemu::with_env("/k", no_env).hostfwd("tcp::1-:2,hostfwd=x");
        assert!(matches!(
            q.validate(),
            Err(ConfigError::HostfwdComma { .. })
        ));
        let q = Qemu::with_env("/k,evil", no_env);
        assert!(matches!(q.validate(), Err(ConfigError::PathComma { .. })));
    }

    #[test]
    fn sanitize_names() {
        assert_eq!(sanitize("boot_ok"), "boot_ok");
        assert_eq!(sanitize("tests::a b/c"), "tests__a_b_c");
        assert_eq!(sanitize(""), "vm");
        assert_eq!(sanitize(".."), "vm..");
    }
}
