//! The boot sequence and PID 1's event loop.
//!
//! Boot: signals first (so that nothing can be missed), then mounts, the kernel log, the
//! config, hostname, loopback, modules (configured, then coldplug), the power button, and
//! "berth: ready": PID 1's own boot work is done, the host is up. The containers come
//! after, and the supervisor's "containers started: N of M" line is their milestone. Each step that fails is logged and boot goes on; only the loss of the
//! signalfd, without which PID 1 can neither reap nor shut down, is fatal.
//!
//! The supervisor then starts the `[[container]]`s (after the baked images are imported by
//! a child process), and the event loop waits on the signalfd, the power-button devices,
//! the containers' output pipes and the supervisor's next deadline. At power-off the
//! containers stop first, in reverse dependency order, then everything else.

use std::convert::Infallible;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::cgroup::CgroupParent;
use berth_runtime::spec::Limits;
use berth_runtime::Runtime;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::api::ApiServer;
use crate::boot_config::LoadError;
use crate::config::{CmdlineOverrides, HostConfig, CONFIG_PATH};
use crate::images;
use crate::klog::boot_ms;
use crate::modules::{running_kernel_dir, LoadOutcome, ModuleLoader};
use crate::mounts;
use crate::network::{self, Netd};
use crate::power_button;
use crate::reaper::reap_all;
use crate::shutdown::{shutdown, Action};
use crate::signals::{request_for, Request, SignalError, Signals};
use crate::supervisor::{Ready, Supervisor};

/// Modules PID 1 loads for itself: the ACPI power button and its event device.
pub const OWN_MODULES: &[&str] = &["button", "evdev"];
/// Modules containers need: overlayfs for their root filesystems. Loaded by PID 1
/// because the kernel's on-demand loading would call a `modprobe` berth does not have.
pub const CONTAINER_MODULES: &[&str] = &["overlay"];

/// Why boot could not go on.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("signal handling: {0}")]
    Signals(#[from] SignalError),
}

/// Boots the machine and runs the event loop. Returns only on a fatal error.
pub fn run(exec_ms: f64) -> Result<Infallible, BootError> {
    let mut signals = Signals::new()?;
    // ctrl-alt-del sends SIGINT to PID 1 instead of resetting the machine at once.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        log::warn!("cannot route ctrl-alt-del to PID 1: {e}");
    }

    // Before any mount: containers need a root that pivot_root can leave.
    let switched = if crate::switch_root::root_is_initramfs() {
        crate::unpack_check::log_check(Path::new("/"));
        Some(crate::switch_root::switch_to_tmpfs_root())
    } else {
        None
    };
    let failed_mounts = mounts::mount_all(Path::new("/"));
    crate::klog::attach_kmsg();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    crate::klog::quiet_kernel_console(&cmdline);
    log::info!("PID 1 started at {exec_ms:.1} ms; mounts done ({failed_mounts} failed)");
    match switched {
        Some(Ok(n)) => log::info!(
            "root moved from the initramfs to a tmpfs ({n} entries; PID 1's own binary stays where it runs)"
        ),
        Some(Err(e)) => {
            log::error!("cannot leave the initramfs root ({e}): containers will not start")
        }
        None => {}
    }
    match mounts::enable_cgroup_controllers(Path::new("/sys/fs/cgroup")) {
        Ok(list) => log::info!("cgroup2 controllers enabled: {list}"),
        Err(e) => log::error!("{e}"),
    }

    let (config, config_error) = load_config(&cmdline);
    set_hostname(&config);
    match berth_netd::netlink::loopback_up() {
        Ok(()) => log::info!("loopback up"),
        Err(e) => log::error!("cannot bring up loopback: {e}"),
    }

    let modules_started = boot_ms();
    load_modules(&config);
    let modules_ms = boot_ms() - modules_started;

    let mut buttons =
        power_button::open_power_buttons(Path::new("/sys/class/input"), Path::new("/dev/input"));
    log::info!("watching {} power button(s)", buttons.len());

    let ready_ms = boot_ms();
    // What boot read and parsed (the module index, the config) is freed by now.
    berth_runtime::release_free_heap();
    let loaded: Vec<String> = crate::modules::loaded_modules().into_iter().collect();
    log::info!("loaded modules: {}", loaded.join(" "));
    // "ready": PID 1's own boot work is done, the host is up. The containers' milestone
    // is the supervisor's "containers started" line (docs/config.md, "The console").
    let containers_next = match config.containers.len() {
        0 => String::new(),
        n => format!("; {n} container(s) start next"),
    };
    match &config_error {
        None => log::info!(
            "ready in {:.1} ms (exec at {exec_ms:.1} ms; PID 1's own work {:.1} ms, modules {modules_ms:.1} ms; rss {} KiB){containers_next}",
            ready_ms - exec_ms,
            ready_ms - exec_ms - modules_ms,
            rss_kib().unwrap_or(0),
        ),
        Some(e) if e.is_invalid_file() => log::error!(
            "degraded: the config is invalid and was not used: {e}; running with defaults (hostname {}), fix {CONFIG_PATH} and reboot",
            config.hostname
        ),
        Some(e) => log::error!(
            "degraded: the config could not be read: {e}; running with defaults (hostname {})",
            config.hostname
        ),
    }

    let mut netd = Netd::start(config_error.is_some());
    let bridge = if network::uses_bridge(&config) {
        // After "ready": the bridge and NAT modules are needed only by containers.
        load_bridge_modules();
        network::prepare_bridge(&config, &network::ipam_dir())
    } else {
        Ok(Default::default())
    };
    if let Err(e) = &bridge {
        log::error!("container bridge network: {e}");
    }
    let mut supervisor = Supervisor::new(&config.containers, container_runtime(), &bridge);
    let mut api = ApiServer::start(&config.api, Instant::now());
    let mut importer = Importer::start(config.images.iter().map(|i| i.name.0.clone()).collect());
    if importer.done() {
        if importer.attempts > 0 {
            // There were images, and their importer could not even start.
            supervisor.set_images_failed(&importer.images);
        }
        supervisor.set_images_ready();
    }
    let action = wait_for_request(
        &mut signals,
        &mut buttons,
        &mut supervisor,
        &mut importer,
        &mut netd,
        &mut api,
    );
    // No API requests while the containers stop.
    api.stop();
    if !supervisor.is_empty() {
        supervisor.stop_all(Some(&mut signals));
    }
    // The supervisor holds each container's log file open for writing in the store's
    // tmpfs: closed now, or that filesystem could be neither unmounted nor remounted
    // read-only at shutdown (EBUSY).
    drop(supervisor);
    shutdown(action, Some(&mut signals), config.shutdown.timeout.0)
}

/// Reads the config (through the helper, see [`crate::boot_config`]) and applies the kernel
/// command line. A broken config yields the defaults plus the error, so that the machine
/// still boots and says what is wrong.
fn load_config(cmdline: &str) -> (HostConfig, Option<LoadError>) {
    let overrides = CmdlineOverrides::parse(cmdline);
    for w in &overrides.warnings {
        log::warn!("kernel command line: {w}");
    }
    let (mut config, error) = match crate::boot_config::load() {
        Ok(Some(c)) => {
            log::info!("config {CONFIG_PATH} loaded");
            (c, None)
        }
        Ok(None) => {
            log::warn!("no config at {CONFIG_PATH}: using defaults");
            (HostConfig::default(), None)
        }
        Err(e) => {
            log::error!("config: {e}");
            (HostConfig::default(), Some(e))
        }
    };
    overrides.apply(&mut config);
    (config, error)
}

/// The container runtime over `/sys/fs/cgroup` and the store at `/var/lib/berth`.
fn container_runtime() -> Result<Runtime, String> {
    let cgroups = CgroupParent::prepare_at(Path::new("/sys/fs/cgroup"), &Limits::default())
        .map_err(|e| e.to_string())?;
    Ok(Runtime {
        store: PathBuf::from(images::STORE_DIR),
        state: PathBuf::from(images::STORE_DIR),
        cgroups,
    })
}

/// The child process importing the baked images, and its retries.
struct Importer {
    process: Option<images::ImporterProcess>,
    attempts: u32,
    /// The `[[image]]` names, by index.
    images: Vec<berth_imagefs::Reference>,
}

/// What the importer's exit means for the containers.
enum ImportOutcome {
    /// Not the importer's pid.
    NotImporter,
    /// Tried again: containers still wait.
    Retrying,
    /// Done, or given up: containers may start, but for those whose image is in `failed`.
    Finished {
        failed: Vec<berth_imagefs::Reference>,
    },
}

impl Importer {
    fn start(images: Vec<berth_imagefs::Reference>) -> Importer {
        let mut i = Importer {
            process: None,
            attempts: 0,
            images,
        };
        if !i.images.is_empty() {
            i.spawn();
        }
        i
    }

    fn spawn(&mut self) {
        self.attempts += 1;
        match images::spawn_importer() {
            Ok(process) => {
                log::info!(
                    "importing {} baked image(s) (pid {})",
                    self.images.len(),
                    process.pid
                );
                self.process = Some(process);
            }
            Err(e) => log::error!("cannot start the image importer: {e}"),
        }
    }

    fn done(&self) -> bool {
        self.process.is_none()
    }

    /// Handles the importer's exit.
    fn on_exit(&mut self, pid: Pid, status: WaitStatus) -> ImportOutcome {
        if self.process.as_ref().map(|p| p.pid) != Some(pid) {
            return ImportOutcome::NotImporter;
        }
        let failed_indices = self
            .process
            .take()
            .map(images::ImporterProcess::failed_images)
            .unwrap_or_default();
        if matches!(status, WaitStatus::Exited(_, 0)) {
            log::info!("baked images imported");
            return ImportOutcome::Finished { failed: Vec::new() };
        }
        let status = berth_runtime::ProcessStatus(status);
        if self.attempts < images::MAX_ATTEMPTS {
            log::error!("image import failed ({status}): trying again");
            self.spawn();
            if self.done() {
                // Could not even start it again: as if given up, every image failed.
                return ImportOutcome::Finished {
                    failed: self.images.clone(),
                };
            }
            return ImportOutcome::Retrying;
        }
        // An importer that died without its report (a crash, a kill) failed them all.
        let failed: Vec<berth_imagefs::Reference> = if failed_indices.is_empty() {
            self.images.clone()
        } else {
            failed_indices
                .iter()
                .filter_map(|i| self.images.get(*i).cloned())
                .collect()
        };
        let names: Vec<String> = failed.iter().map(ToString::to_string).collect();
        log::error!(
            "image import failed {} times ({status}): {} not imported; the containers that run them wait",
            self.attempts,
            names.join(" ")
        );
        ImportOutcome::Finished { failed }
    }
}

fn set_hostname(config: &HostConfig) {
    if let Err(e) = nix::unistd::sethostname(config.hostname.as_str()) {
        log::error!("cannot set hostname {}: {e}", config.hostname);
        return;
    }
    // Report what the kernel now holds, not what was asked for.
    let actual = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    log::info!("hostname: {actual}");
}

fn load_modules(config: &HostConfig) {
    let dir = running_kernel_dir();
    let mut loader = match ModuleLoader::open(&dir) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("no module index ({e}): no modules loaded");
            return;
        }
    };
    let configured = config.kernel.modules.iter().map(|m| m.as_str());
    let for_containers = if config.containers.is_empty() {
        &[][..]
    } else {
        CONTAINER_MODULES
    };
    for name in configured
        .chain(OWN_MODULES.iter().copied())
        .chain(for_containers.iter().copied())
    {
        load_one(&mut loader, name);
    }
    let coldplugged = loader.coldplug(Path::new("/sys/devices"));
    log::info!("coldplug loaded {}", list_or_none(&coldplugged));
}

/// Loads the bridge network's modules (bridge, veth, nf_tables NAT).
fn load_bridge_modules() {
    let started = boot_ms();
    let mut loader = match ModuleLoader::open(&running_kernel_dir()) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("no module index ({e}): bridge modules not loaded");
            return;
        }
    };
    let failed = network::BRIDGE_MODULES
        .iter()
        .filter(|name| !load_one(&mut loader, name))
        .count();
    log::info!(
        "bridge network modules loaded in {:.1} ms ({failed} failed)",
        boot_ms() - started
    );
}

/// Loads one module (with its dependencies) and logs the outcome; false on failure.
fn load_one(loader: &mut ModuleLoader, name: &str) -> bool {
    match loader.load(name) {
        Ok(LoadOutcome::Loaded) => log::info!("module {name}: loaded"),
        Ok(LoadOutcome::AlreadyLoaded) => log::info!("module {name}: already loaded"),
        Ok(LoadOutcome::BuiltIn) => log::info!("module {name}: built in"),
        Err(e) => {
            log::error!("module {name}: {e}");
            return false;
        }
    }
    true
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(" ")
    }
}

/// PID 1's resident memory. From `smaps_rollup`, which walks the page tables: the
/// `VmRSS` of `/proc/self/status` comes from per-task counters that the kernel folds in
/// only every 64 page faults, and reads near zero for a process this young.
pub fn rss_kib() -> Option<u64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Rss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the event loop until something asks for power-off or reboot.
fn wait_for_request(
    signals: &mut Signals,
    buttons: &mut Vec<File>,
    supervisor: &mut Supervisor,
    importer: &mut Importer,
    netd: &mut Netd,
    api: &mut ApiServer,
) -> Action {
    loop {
        netd.tick(Instant::now());
        api.tick(Instant::now());
        supervisor.tick(Instant::now());
        // Before the loop sleeps: what the last round changed reaches the API now.
        for event in supervisor.take_events() {
            api.publish(event);
        }
        for (id, reply) in crate::api::ContainerHost::take_replies(supervisor) {
            api.respond(id, reply);
        }
        let deadline = [
            supervisor.next_deadline(),
            netd.next_deadline(),
            api.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(at) => {
                let ms = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
                    .as_millis()
                    .min(60_000);
                PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let (signal_ready, button_events, supervisor_ready, netd_ready, api_ready) = {
            use std::os::fd::AsFd;
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            // Each optional source's place in `fds`, if it is there.
            let mut at = [None; 2];
            for (slot, fd) in at.iter_mut().zip([netd.output_fd(), api.poll_fd()]) {
                if let Some(fd) = fd {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    *slot = Some(fds.len() - 1);
                }
            }
            let [netd_at, api_at] = at;
            let base = fds.len();
            fds.extend(
                buttons
                    .iter()
                    .map(|b| PollFd::new(b.as_fd(), PollFlags::POLLIN)),
            );
            let own = supervisor.poll_fds();
            fds.extend(
                own.iter()
                    .map(|(_, fd)| PollFd::new(*fd, PollFlags::POLLIN)),
            );
            if let Err(e) = poll(&mut fds, timeout) {
                if e != nix::errno::Errno::EINTR {
                    log::warn!("poll failed: {e}");
                }
                continue;
            }
            let events: Vec<PollFlags> = fds
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect();
            let signal_ready = events.first().is_some_and(|e| !e.is_empty());
            let ready_at = |at: Option<usize>| {
                at.and_then(|i| events.get(i))
                    .is_some_and(|e| !e.is_empty())
            };
            let netd_ready = ready_at(netd_at);
            let api_ready = ready_at(api_at);
            let button_events = events
                .get(base..base + buttons.len())
                .unwrap_or(&[])
                .to_vec();
            let own_events = events.get(base + buttons.len()..).unwrap_or(&[]);
            let supervisor_ready: Vec<Ready> = own
                .iter()
                .zip(own_events)
                .filter(|(_, e)| !e.is_empty())
                .map(|((ready, _), _)| *ready)
                .collect();
            (
                signal_ready,
                button_events,
                supervisor_ready,
                netd_ready,
                api_ready,
            )
        };
        if api_ready {
            api.on_readable(supervisor);
        }
        if netd_ready {
            for report in netd.on_output() {
                match report {
                    network::Report::Online(_) => supervisor.set_network_online(),
                    network::Report::Offline(iface) => log::warn!("netd: {iface} lost its address"),
                }
            }
        }
        for ready in supervisor_ready {
            supervisor.on_ready(ready);
        }
        if signal_ready {
            for signal in signals.drain() {
                match request_for(signal) {
                    Request::Reap => reap(supervisor, importer, netd, api),
                    Request::PowerOff => {
                        log::info!("{signal} received: power-off");
                        return Action::PowerOff;
                    }
                    Request::Reboot => {
                        log::info!("{signal} received (ctrl-alt-del): reboot");
                        return Action::Reboot;
                    }
                    Request::Ignore => log::info!("{signal} received: ignored"),
                }
            }
        }
        let mut gone = Vec::new();
        for (i, (button, events)) in buttons.iter_mut().zip(button_events).enumerate() {
            if events.contains(PollFlags::POLLIN) && power_button::read_press(button) {
                log::info!("power button pressed: power-off");
                return Action::PowerOff;
            }
            // A device that went away would report POLLHUP/POLLERR forever: drop it.
            if events.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            log::warn!("a power button device went away");
            buttons.remove(i);
        }
    }
}

fn reap(
    supervisor: &mut Supervisor,
    importer: &mut Importer,
    netd: &mut Netd,
    api: &mut ApiServer,
) {
    for (pid, status) in reap_all().exited {
        if supervisor.on_exit(pid, status)
            || netd.on_exit(pid, status)
            || api.on_exit(pid, status, Instant::now())
        {
            continue;
        }
        match importer.on_exit(pid, status) {
            ImportOutcome::Finished { failed } => {
                supervisor.set_images_failed(&failed);
                supervisor.set_images_ready();
            }
            ImportOutcome::Retrying => {}
            ImportOutcome::NotImporter => {
                log::debug!("reaped {pid}: {}", berth_runtime::ProcessStatus(status))
            }
        }
    }
}
