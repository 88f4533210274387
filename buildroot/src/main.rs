//! The `berth` command line: parses arguments and hands them to `berth_buildroot`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_buildroot::boot::{self, Accel, BootOptions};
use berth_buildroot::build::{self, BuildOptions};
use berth_buildroot::kernel::{self, PIN};
use clap::{Parser, Subcommand};

/// Build and boot berth images.
#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    after_help = "Examples:
  berth build host.toml -o out/       build out/vmlinuz, out/initramfs.img, out/manifest.json
  berth boot out/                     boot it in QEMU, serial console on this terminal
  berth kernel show                   print the pinned kernel package
  berth image import busybox.oci.tar --name busybox:latest   import an OCI or docker-archive image
  berth run --rm busybox:latest echo hello                    run a container in the foreground
  berth run -d --name web busybox:latest httpd -f             ... or in the background
  berth ps -a; berth logs web; berth stop web; berth rm web   the containers berth run keeps

Environment:
  BERTH_CACHE     cache directory (default $XDG_CACHE_HOME/berth or ~/.cache/berth)
  BERTH_INIT      init binary to use when --init is not given"
)]
struct Cli {
    #[command(flatten)]
    logging: Logging,
    #[command(subcommand)]
    command: Command,
}

/// The options every subcommand takes.
#[derive(clap::Args, Debug)]
struct Logging {
    /// More log output on stderr (--verbose: debug, twice: trace). No short form:
    /// `-v` is `berth run`'s volume flag, as in Docker.
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

/// `berth run` alone, the command run once per container: clap builds the parser of
/// every subcommand before it parses anything, and for `berth` that is about 0.12 ms of
/// a `berth run` (a sixth of the container's own setup). [`parse`] takes this
/// path when the first argument is `run`; `run_parser_matches_the_full_one` keeps its
/// help, errors and results the same as [`Cli`]'s.
#[derive(Parser, Debug)]
#[command(name = "berth", version)]
struct RunCli {
    #[command(flatten)]
    logging: Logging,
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Subcommand, Debug)]
enum RunOnly {
    /// Run a container, in the foreground or detached (needs root).
    Run(Box<berth_buildroot::run::RunArgs>),
}

/// Parses the command line; a usage error of `berth run` exits 125, as `docker run`'s
/// does (so that scripts can tell it from the container's own codes), others clap's 2.
fn parse() -> (Logging, Command) {
    let run = std::env::args_os().nth(1).is_some_and(|a| a == "run");
    // `berth --verbose run ...` too: the global options take no values, so the first
    // argument that is not an option is the subcommand.
    let subcommand_is_run = std::env::args_os()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .is_some_and(|a| a == "run");
    let parsed = if run {
        RunCli::try_parse().map(|c| {
            let RunOnly::Run(args) = c.command;
            (c.logging, Command::Run(args))
        })
    } else {
        Cli::try_parse().map(|c| (c.logging, c.command))
    };
    match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            let code = match (usage_error, subcommand_is_run) {
                (false, _) => 0,
                (true, true) => i32::from(berth_buildroot::run::RUNTIME_FAILED),
                (true, false) => 2,
            };
            std::process::exit(code)
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a kernel + initramfs image from a host config.
    #[command(
        after_help = "The config is validated with the same code PID 1 runs; an error \
names the key and the line. The init binary is taken from --init, else $BERTH_INIT, else \
`berth-init` next to this executable, else target/x86_64-unknown-linux-gnu/release/berth-init \
under the current directory; it must be a static x86-64 ELF, with `berth-helper` (netd and the \
image importer, PID 1's child processes) from the same build beside it.

The kernel is the pinned Debian package (see `berth kernel show`), fetched into the cache on \
first use with apt-get and verified by SHA-256. The image carries the modules the config's \
kernel.modules names, common virtual-hardware drivers, and their dependencies.

Each [[image]] is imported into a scratch store first (digests and sizes checked), and each \
[[container]] is checked against it: its image must be baked, its program (entrypoint + \
command, looked up in the image's PATH) and its user must be in the image. A container \
memory limit above the image's memory, or cpus above the one CPU `berth boot` gives, is a \
warning.

The build prints how much memory the image needs to unpack and run its baked images, and \
writes it to manifest.json as memory_mib (docs/config.md, \"How memory is sized\"). On a \
machine with less, PID 1 says on its first line that the initramfs is incomplete.

The same inputs always give byte-identical outputs.

Examples:
  make init                           # the static PID 1, as the image needs it
  berth build host.toml -o out/
  berth build host.toml -o out/ --init ./my-init --kernel-deb linux-image.deb"
    )]
    Build {
        /// The host config (becomes /etc/berth/host.toml).
        config: PathBuf,
        /// Output directory; created if missing.
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// The init binary (a static ELF) to install as /init.
        #[arg(long, value_name = "PATH")]
        init: Option<PathBuf>,
        /// Use this kernel .deb instead of fetching the pinned one (still hash-checked).
        #[arg(long, value_name = "PATH")]
        kernel_deb: Option<PathBuf>,
        /// Do not check --kernel-deb against the pin.
        #[arg(long, requires = "kernel_deb")]
        kernel_deb_unpinned: bool,
    },
    /// Boot a built image in QEMU with the serial console on this terminal.
    #[command(
        after_help = "Before QEMU starts, vmlinuz and initramfs.img are checked against the \
manifest.json beside them (size and sha256; a mismatch is refused, naming the file). The \
guest gets the larger of 256 MiB and the memory the build says the image needs \
(memory_mib in manifest.json); an explicit --memory below that need is a warning.

The kernel boots with `quiet` (its own messages stay off the console until PID 1 \
speaks); --verbose shows them all. `panic=1` makes a kernel panic, even before PID 1 \
runs, end QEMU: berth boot exits 1 and quotes the panic line.

The console: in the terminal's foreground, QEMU takes the keyboard (ctrl-a x quits \
QEMU, repeated after `berth: ready`). In the background (`cmd &`, or under `timeout`) \
QEMU does not get the terminal, which is never put in raw mode: the console is printed, \
input is not read. With stdin not a terminal, QEMU reads it as console input.

Stopping: QEMU never outlives berth boot, even after `kill -9` of berth. SIGTERM \
presses the guest's ACPI power button (a clean power-off by PID 1); if QEMU is still \
running after --stop-timeout, it is stopped (SIGTERM, then SIGKILL a second later). \
SIGINT, SIGHUP and a closed output (SIGPIPE) stop QEMU at once. Forwarded ports are free \
again when berth boot exits.

Exit status: 0 when the guest powers off; 1 when its kernel panics, the image is refused \
or QEMU fails; 128+N after signal N (143 SIGTERM, 130 SIGINT, 129 SIGHUP, 141 SIGPIPE). \
A guest reboot (ctrl-alt-del) restarts the guest in the same QEMU; berth boot goes on.

Examples:
  berth boot out/
  berth boot out/ --verbose --append 'berth.hostname=test'
  timeout 600 berth boot out/ --memory 1G -- -smp 2
  berth boot out/ -p 8080:80          # http://localhost:8080 reaches the guest's port 80
  berth boot out/ -p 127.0.0.1:5353:53/udp
  berth boot out/ --qmp /tmp/vm.qmp & # then: kill -TERM $! powers the guest off
  berth boot out/ --api-port 2375     # then: DOCKER_HOST=tcp://127.0.0.1:2375 docker ps

The guest gets a virtio NIC on QEMU's user network (DHCP gives it 10.0.2.15; this \
machine is 10.0.2.2 to it). A published guest port is usually a container's published \
port (`ports = [\"80:80\"]` in its [[container]])."
    )]
    Boot {
        /// The directory `berth build` wrote.
        dir: PathBuf,
        /// Guest memory: MiB, or a size with M or G (512, 512M, 1G); at least 64.
        /// Default: 256, or what the image needs if more (manifest.json's memory_mib).
        #[arg(long, value_name = "SIZE")]
        memory: Option<boot::MemoryMib>,
        /// QEMU accelerator; kvm needs /dev/kvm.
        #[arg(long, value_enum, default_value_t = Accel::Tcg)]
        accel: Accel,
        /// Extra kernel command-line parameters (after berth's own, so they win).
        #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
        append: Option<String>,
        /// The QEMU binary.
        #[arg(long, value_name = "PATH", default_value = boot::DEFAULT_QEMU)]
        qemu: PathBuf,
        /// Forward a port of this machine to the guest: [IP:]HOST:GUEST[/udp]; repeatable.
        #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:GUEST[/udp]")]
        publish: Vec<boot::Publish>,
        /// Boot without a network device.
        #[arg(long, conflicts_with_all = ["publish", "api_port"])]
        no_network: bool,
        /// Forward the guest's Docker Engine API (an [api] listener on tcp port 2375 in
        /// its host.toml) to 127.0.0.1:PORT here, and print the DOCKER_HOST to use.
        #[arg(long, value_name = "PORT")]
        api_port: Option<u16>,
        /// Also serve QMP (QEMU's JSON control protocol) on a unix socket at PATH, for
        /// your own tools; berth keeps a private one for the power button.
        #[arg(long, value_name = "PATH")]
        qmp: Option<PathBuf>,
        /// On SIGTERM, seconds the guest has to power off before QEMU is stopped.
        #[arg(long, value_name = "SECONDS", default_value_t = boot::DEFAULT_STOP_TIMEOUT_SECS)]
        stop_timeout: u64,
        /// Extra QEMU arguments, after `--`.
        #[arg(last = true, value_name = "QEMU ARGS")]
        extra: Vec<OsString>,
    },
    /// The pinned kernel package.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Manage an image store: import OCI and docker-archive images, inspect, mount, gc.
    Image(berth_imagefs::cli::ImageArgs),
    /// Run a container, in the foreground or detached (needs root).
    Run(Box<berth_buildroot::run::RunArgs>),
    /// List the containers `berth run` started (needs root).
    Ps(berth_buildroot::run::PsArgs),
    /// Stop containers that `berth run` started (needs root).
    Stop(berth_buildroot::run::StopArgs),
    /// Show a detached container's output (needs root).
    Logs(berth_buildroot::run::LogsArgs),
    /// Remove containers that `berth run` kept (needs root).
    Rm(berth_buildroot::run::RmArgs),
}

#[derive(Subcommand, Debug)]
enum KernelCommand {
    /// Fetch the pinned kernel package into the cache (if needed) and print its path.
    #[command(after_help = "Example:\n  dpkg-deb -c \"$(berth kernel fetch)\"")]
    Fetch,
    /// Print the kernel pin and where it is cached.
    #[command(
        after_help = "To update the pin, run `apt-get update && apt-cache show PACKAGE` \
and copy Version, SHA256 and Size into PIN in buildroot/src/kernel.rs."
    )]
    Show,
}

fn main() -> ExitCode {
    let (logging, command) = parse();
    let level = match (logging.quiet, logging.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Info,
        (false, 1) => log::LevelFilter::Debug,
        (false, _) => log::LevelFilter::Trace,
    };
    berth_buildroot::logger::init(level);
    match run(command, logging.verbose > 0) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("berth: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `command`; `verbose` is the global --verbose.
fn run(command: Command, verbose: bool) -> Result<ExitCode, String> {
    match command {
        // The image commands print their own errors and choose their exit codes.
        Command::Image(args) => Ok(berth_imagefs::cli::run(args)),
        Command::Run(args) => match berth_buildroot::run::run(&args) {
            Ok(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
            Err(e) => {
                eprintln!("berth: error: {}", e.message);
                Ok(ExitCode::from(e.code))
            }
        },
        Command::Rm(args) => berth_buildroot::run::rm(&args).map(|()| ExitCode::SUCCESS),
        Command::Ps(args) => berth_buildroot::run::ps(&args).map(|()| ExitCode::SUCCESS),
        Command::Stop(args) => berth_buildroot::run::stop(&args).map(|()| ExitCode::SUCCESS),
        Command::Logs(args) => berth_buildroot::run::logs(&args).map(|()| ExitCode::SUCCESS),
        Command::Build {
            config,
            output,
            init,
            kernel_deb,
            kernel_deb_unpinned,
        } => {
            let report = build::build(&BuildOptions {
                config,
                out_dir: output.clone(),
                init,
                kernel_deb,
                kernel_deb_unpinned,
            })
            .map_err(|e| e.to_string())?;
            for out in &report.manifest.outputs {
                println!("{}  {}", out.sha256, output.join(&out.name).display());
            }
            // On stderr with the log, so that stdout stays `sha256sum -c` input.
            eprintln!(
                "memory: this image needs about {} MiB (manifest.json memory_mib; berth boot gives at least that)",
                report.memory.mib
            );
            log::info!(
                "built kernel {} with {} modules into {}",
                report.manifest.kernel_release,
                report.modules.len(),
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Boot {
            dir,
            memory,
            accel,
            append,
            qemu,
            mut publish,
            no_network,
            api_port,
            qmp,
            stop_timeout,
            extra,
        } => {
            if let Some(port) = api_port {
                publish.push(boot::Publish {
                    host_ip: Some(std::net::Ipv4Addr::LOCALHOST),
                    host_port: port,
                    container_port: boot::GUEST_API_PORT,
                    protocol: berth_netd::nft::Protocol::Tcp,
                });
                eprintln!(
                    "berth boot: the guest's Docker API is forwarded here: export DOCKER_HOST=tcp://127.0.0.1:{port}"
                );
            }
            boot::boot(&BootOptions {
                dir,
                memory,
                accel,
                append,
                qemu,
                publish,
                no_network,
                qmp,
                kernel_chatter: verbose,
                stop_timeout: Duration::from_secs(stop_timeout),
                extra,
            })
            .map(ExitCode::from)
            .map_err(|e| e.to_string())
        }
        Command::Kernel(KernelCommand::Fetch) => {
            let cache = kernel::cache_dir().map_err(|e| e.to_string())?;
            let path = kernel::fetch(&cache, &PIN).map_err(|e| e.to_string())?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Kernel(KernelCommand::Show) => {
            println!("package  {}", PIN.package);
            println!("version  {}", PIN.version);
            println!("arch     {}", PIN.arch);
            println!("sha256   {}", PIN.sha256);
            println!("size     {}", PIN.size);
            match kernel::cache_dir() {
                Ok(cache) => {
                    let path = kernel::cached_deb_path(&cache, &PIN);
                    let state = if path.is_file() {
                        "cached"
                    } else {
                        "not fetched"
                    };
                    println!("cache    {} ({state})", path.display());
                }
                Err(e) => println!("cache    ({e})"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The `berth run` fast path must be invisible: same help, same errors, same
    /// parse for every argument vector (a new `berth run` flag is picked up by both,
    /// a new global option must be added to `Logging`).
    #[test]
    fn run_parser_matches_the_full_one() {
        RunCli::command().debug_assert();
        let cases: &[&[&str]] = &[
            &["run", "--help"],
            &["run", "-h"],
            &["run"],
            &["run", "--rm", "busybox:latest", "echo", "hi", "--rm"],
            &[
                "run",
                "--verbose",
                "--verbose",
                "-e",
                "A=b",
                "-v",
                "d:/d",
                "img",
                "sh",
            ],
            &[
                "run",
                "-q",
                "--name",
                "web",
                "--memory",
                "64M",
                "--network",
                "host",
                "img",
            ],
            &["run", "-q", "--verbose", "img"],
            &["run", "--network", "cable", "img"],
            &["run", "--no-such-flag", "img"],
            &["run", "--memory"],
            &["run", "--version"],
            &["run", "-it", "--entrypoint", "", "img", "sh"],
            &["run", "-d", "-p", "80:80", "img"],
            &["run", "-d", "-t", "img"],
        ];
        for case in cases {
            let argv = std::iter::once("berth").chain(case.iter().copied());
            let full = Cli::try_parse_from(argv.clone())
                .map(|c| format!("{:?} {:?}", c.logging, c.command));
            let fast = RunCli::try_parse_from(argv).map(|c| {
                let RunOnly::Run(args) = c.command;
                format!("{:?} {:?}", c.logging, Command::Run(args))
            });
            match (full, fast) {
                (Ok(full), Ok(fast)) => assert_eq!(full, fast, "{case:?}"),
                (Err(full), Err(fast)) => {
                    assert_eq!(full.kind(), fast.kind(), "{case:?}");
                    assert_eq!(full.to_string(), fast.to_string(), "{case:?}");
                }
                (full, fast) => panic!("{case:?}: full {full:?}, fast {fast:?}"),
            }
        }
    }

    #[test]
    fn boot_takes_extra_qemu_args_after_dashes() {
        let cli = Cli::try_parse_from([
            "berth", "boot", "out", "--accel", "kvm", "--append", "quiet", "--", "-smp", "2",
        ])
        .unwrap();
        match cli.command {
            Command::Boot {
                accel,
                append,
                extra,
                memory,
                ..
            } => {
                assert_eq!(accel, Accel::Kvm);
                assert_eq!(append.as_deref(), Some("quiet"));
                assert_eq!(extra, [OsString::from("-smp"), OsString::from("2")]);
                assert_eq!(memory, None);
            }
            other => panic!("{other:?}"),
        }
        let memory_of = |value: &str| match Cli::try_parse_from([
            "berth".to_owned(),
            "boot".into(),
            "out".into(),
            format!("--memory={value}"),
        ]) {
            Ok(Cli {
                command: Command::Boot { memory, .. },
                ..
            }) => Ok(memory),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(memory_of("1G"), Ok(Some(boot::MemoryMib(1024))));
        assert_eq!(memory_of("512"), Ok(Some(boot::MemoryMib(512))));
        for bad in ["0", "32M", "lots", "-5", "4096G"] {
            let err = memory_of(bad).unwrap_err();
            assert!(err.contains("invalid value"), "{bad}: {err}");
        }
        assert!(memory_of("0").unwrap_err().contains("at least 64 MiB"));
        assert!(Cli::try_parse_from(["berth", "boot", "out", "--accel", "xen"]).is_err());
        assert!(Cli::try_parse_from([
            "berth",
            "build",
            "c.toml",
            "-o",
            "o",
            "--kernel-deb-unpinned"
        ])
        .is_err());
    }
}
