//! Supervision of the `[[container]]`s: start in dependency order, restart by
//! policy with backoff, capture output, and stop in reverse dependency order.
//!
//! PID 1 creates each container itself with the runtime (no shim process); this
//! module is the state machine around it. It never blocks except in
//! [`Supervisor::stop_all`] at shutdown; the event loop asks it for its next
//! deadline and the descriptors to poll ([`Supervisor::poll_fds`]), and feeds it
//! exits, readable descriptors and ticks. A container's setup (mounts, pivot,
//! seccomp) runs in its own process; PID 1 only watches the sync pipe, so a slow or
//! stuck setup never holds up reaping, signals or the other containers.
//!
//! ```text
//! Waiting ──deps ready, images ready──▶ Starting ──execve──▶ Running ──exit──▶ Backoff
//!                                          │ setup failed, deadline  │            │
//!                                          └──▶ (exit) ──────────────┼──▶ Backoff or Done
//!                                                          stop_all  └──▶ Stopping ──exit──▶ Done
//! ```
//!
//! Backoff: 100 ms, doubling per restart, capped at 30 s, back to 100 ms once a run
//! has lasted 10 s. A crash loop thus costs at most one start per 30 s.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use berth_netd::container::Attachment;
use berth_runtime::spec::Network;
use berth_runtime::{ContainerSpec, Exit, Running, Runtime, Starting, Stdio};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::health::{Health, HealthStatus};
use crate::logs::{output_pipe, LogSink};
use crate::reaper::reap_all;
use crate::registry::ContainerId;
use crate::signals::Signals;
use crate::waiting::{DependencyState, Say, Wait, WaitReason};
use crate::workload::{ContainerConfig, NetworkMode, NETWORK_ONLINE};
use berth_proto::api::ApiResponse;
use berth_proto::RequestId;

mod view;

pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// After `cgroup.kill`, how long to wait for the exit before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The delay before restart number `restarts + 1`, given how long the last run lasted.
pub fn backoff(previous: Duration, ran: Duration) -> Duration {
    if ran >= STABLE_AFTER || previous.is_zero() {
        BACKOFF_START
    } else {
        (previous * 2).min(BACKOFF_MAX)
    }
}

enum State {
    Waiting,
    /// Between `clone3` and the program's `execve`. `killed`: when the child was
    /// SIGKILLed (its setup failed, ran out of time, or the host is shutting down);
    /// its exit is awaited, with `cgroup.kill` every `KILL_WAIT` while it lingers.
    Starting {
        start: Box<Starting>,
        killed: Option<Instant>,
    },
    Running(Box<Running>),
    Backoff(Instant),
    Stopping {
        run: Box<Running>,
        deadline: Instant,
        killed: bool,
    },
    Done,
}

struct Unit {
    config: ContainerConfig,
    spec: ContainerSpec,
    state: State,
    restarts: u32,
    last_delay: Duration,
    log: LogSink,
    pipe: Option<OwnedFd>,
    /// The current run's health, for a container with a `healthcheck`.
    health: Option<Health>,
    /// What it waits for, while its turn has come but it cannot start.
    waiting: Option<Wait>,
    /// Its image is a baked `[[image]]` whose import failed: it waits for good.
    image_failed: bool,
    /// What the API shows of it: its id, and when it was created, last started and
    /// last ended, and how.
    id: ContainerId,
    created: SystemTime,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    last_exit: Option<Exit>,
    /// What happened to it since the API last heard, oldest first (see
    /// [`Supervisor::take_events`]).
    news: Vec<News>,
    /// API requests answered when its run changes (a stop when it has exited).
    waiters: Vec<(RequestId, Awaiting)>,
    /// Their answers, for [`Supervisor::take_replies`].
    replies: Vec<(RequestId, ApiResponse)>,
}

/// What an API request about a container waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// Its program to run (`docker start`).
    Running,
    /// Its exit (`docker stop`).
    Exited,
    /// Its exit, then its program to run again (`docker restart`).
    Restarted,
}

/// A change of a container the API reports as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum News {
    Start,
    Die(i32),
}

/// A container's news kept for the API at most: older news is dropped first.
const MAX_NEWS: usize = 16;

impl Unit {
    /// Answers the waiters `which` picks with `reply`.
    fn settle(&mut self, which: impl Fn(Awaiting) -> bool, reply: ApiResponse) {
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(_, a)| which(*a));
        self.waiters = rest;
        self.replies
            .extend(done.into_iter().map(|(id, _)| (id, reply.clone())));
    }

    /// After an exit: a stop is done; a restart starts it again; a start that never
    /// reached the program (`failed_start`) failed.
    fn after_exit_settle(&mut self, failed_start: Option<&Exit>) {
        // A container stopped on request is not restarted by its policy.
        if self.waiters.iter().any(|(_, a)| *a == Awaiting::Exited)
            && matches!(self.state, State::Backoff(_))
        {
            self.state = State::Done;
        }
        self.settle(|a| a == Awaiting::Exited, ApiResponse::Done);
        if self.waiters.iter().any(|(_, a)| *a == Awaiting::Restarted) {
            for (_, a) in &mut self.waiters {
                if *a == Awaiting::Restarted {
                    *a = Awaiting::Running;
                }
            }
            if matches!(self.state, State::Done | State::Backoff(_)) {
                self.state = State::Waiting;
            }
            return;
        }
        if let Some(exit) = failed_start {
            let message = format!("container {} could not start ({exit})", self.spec.name);
            self.settle(
                |a| a == Awaiting::Running,
                ApiResponse::Failed(crate::api::failure(
                    berth_proto::api::FailureKind::Internal,
                    message,
                )),
            );
        }
    }

    fn announce(&mut self, news: News) {
        if self.news.len() == MAX_NEWS {
            self.news.remove(0);
        }
        self.news.push(news);
    }
}

impl Unit {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn pid(&self) -> Option<Pid> {
        match &self.state {
            State::Running(r) | State::Stopping { run: r, .. } => Some(r.pid),
            State::Starting { start, .. } => Some(start.pid),
            _ => None,
        }
    }

    fn is_running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// Running, and healthy if it has a health check: what `depends_on` waits for.
    fn is_ready(&self) -> bool {
        self.is_running()
            && self
                .health
                .as_ref()
                .is_none_or(|h| h.status == HealthStatus::Healthy)
    }
}

/// What a descriptor from [`Supervisor::poll_fds`] carries, by unit index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The container's output pipe.
    Log(usize),
    /// A starting container's sync pipe.
    Setup(usize),
}

/// All containers of the host.
pub struct Supervisor {
    runtime: Result<Runtime, String>,
    units: Vec<Unit>,
    images_ready: bool,
    /// netd reported an address (the `network-online` pseudo-dependency).
    network_online: bool,
    /// Set by [`Supervisor::stop_all`]: nothing starts or restarts any more.
    shutting_down: bool,
    /// Whether the "all started" line was logged.
    reported_started: bool,
    /// Waiting for the baked images, said as a reminder only (the importer has its lines).
    images_wait: Option<Wait>,
}

impl Supervisor {
    /// `runtime` is an error when the machine cannot run containers (no cgroup2);
    /// each container then reports that error instead of starting.
    ///
    /// `bridge` holds each bridge container's attachment (address, peers), or why the
    /// bridge network could not be prepared; those containers then report it.
    pub fn new(
        containers: &[ContainerConfig],
        runtime: Result<Runtime, String>,
        bridge: &Result<BTreeMap<String, Attachment>, String>,
    ) -> Supervisor {
        let state = runtime
            .as_ref()
            .map(|r| r.state.clone())
            .unwrap_or_else(|_| crate::images::STORE_DIR.into());
        // Each container mirroring to the console gets an even share of it.
        let share = crate::klog::console_share(containers.iter().filter(|c| c.log_console).count());
        let units = containers
            .iter()
            .map(|c| {
                let mut spec = c.spec();
                let mut initial = State::Waiting;
                if c.network == NetworkMode::Bridge {
                    match bridge.as_ref().map(|b| b.get(&spec.name)) {
                        Ok(Some(a)) => spec.network = Network::Bridge(a.clone()),
                        Ok(None) => initial = State::Done,
                        Err(e) => {
                            log::error!("container {}: no bridge network: {e}", spec.name);
                            initial = State::Done;
                        }
                    }
                }
                let dir = state.join("containers").join(&spec.name);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    log::warn!("container {}: {}: {e}", spec.name, dir.display());
                }
                Unit {
                    log: LogSink::new(&spec.name, dir.join("log"), c.log_console.then_some(share)),
                    config: c.clone(),
                    spec,
                    state: initial,
                    restarts: 0,
                    last_delay: Duration::ZERO,
                    pipe: None,
                    health: None,
                    waiting: None,
                    image_failed: false,
                    id: ContainerId::random(),
                    created: SystemTime::now(),
                    started_at: None,
                    finished_at: None,
                    last_exit: None,
                    news: Vec::new(),
                    waiters: Vec::new(),
                    replies: Vec::new(),
                }
            })
            .collect();
        Supervisor {
            runtime,
            units,
            images_ready: false,
            network_online: false,
            shutting_down: false,
            reported_started: false,
            images_wait: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The baked images are in the store (or their import gave up): containers may start.
    pub fn set_images_ready(&mut self) {
        self.images_ready = true;
    }

    /// Marks the host as online: containers depending on `network-online` may start.
    pub fn set_network_online(&mut self) {
        if !self.network_online {
            self.network_online = true;
            log::info!("network online");
        }
    }

    /// The baked images in `failed` could not be imported: the containers that run one
    /// of them wait, and say so, instead of failing to start.
    pub fn set_images_failed(&mut self, failed: &[berth_imagefs::Reference]) {
        for u in &mut self.units {
            u.image_failed = berth_imagefs::Reference::parse(&u.config.image)
                .is_ok_and(|image| failed.contains(&image));
        }
    }

    /// Why unit `i` cannot start now; `None` when it can.
    fn wait_reason(&self, i: usize) -> Option<WaitReason> {
        let unit = self.units.get(i)?;
        if unit.image_failed {
            return Some(WaitReason::ImageNotImported {
                image: unit.config.image.clone(),
            });
        }
        unit.config.depends_on.iter().find_map(|d| {
            if d.0 == NETWORK_ONLINE {
                return (!self.network_online).then_some(WaitReason::NetworkOnline);
            }
            let other = self.units.iter().find(|o| o.name() == d.0)?;
            if other.is_ready() {
                return None;
            }
            let state = match (&other.state, other.health.as_ref().map(|h| h.status)) {
                (State::Running(_), Some(HealthStatus::Unhealthy)) => DependencyState::Unhealthy,
                (State::Running(_), _) => DependencyState::HealthPending,
                (State::Done, _) => DependencyState::Exited,
                _ => DependencyState::NotRunning,
            };
            Some(WaitReason::Dependency {
                name: d.0.clone(),
                state,
            })
        })
    }

    /// Starts unit `i` if nothing holds it back; otherwise records and says why.
    fn start_or_wait(&mut self, i: usize, now: Instant) {
        let Some(reason) = self.wait_reason(i) else {
            if let Some(u) = self.units.get_mut(i) {
                u.waiting = None;
            }
            self.start(i);
            return;
        };
        let Some(unit) = self.units.get_mut(i) else {
            return;
        };
        // A restart held back waits as a first start does (a due backoff left in place
        // would be a deadline in the past: a busy loop).
        unit.state = State::Waiting;
        match Wait::update(&mut unit.waiting, reason.clone(), now) {
            Some(Say::Waiting) => log::info!("container {}: waiting {reason}", unit.spec.name),
            Some(Say::StillWaiting(d)) => log::info!(
                "container {}: still waiting {reason}, for {} s",
                unit.spec.name,
                d.as_secs()
            ),
            None => {}
        }
    }

    /// Reminds, at most every [`crate::waiting::REMIND_EVERY`], that the containers
    /// wait for the baked images.
    fn remind_images(&mut self, now: Instant) {
        if let Some(Say::StillWaiting(d)) =
            Wait::update(&mut self.images_wait, WaitReason::ImagesImporting, now)
        {
            log::info!(
                "containers still waiting for the baked images to be imported, for {} s",
                d.as_secs()
            );
        }
    }

    /// The `containers started` line: how many run, and what the others wait for.
    fn report_started(&self) {
        let running = self.units.iter().filter(|u| u.is_running()).count();
        let waiting: Vec<String> = self
            .units
            .iter()
            .filter(|u| matches!(u.state, State::Waiting))
            .filter_map(|u| {
                u.waiting
                    .as_ref()
                    .map(|w| format!("{} {}", u.spec.name, w.reason))
            })
            .collect();
        let waiting = if waiting.is_empty() {
            String::new()
        } else {
            format!("; waiting: {}", waiting.join("; "))
        };
        log::info!(
            "containers started: {running} of {} running{waiting}; PID 1 rss {} KiB",
            self.units.len(),
            crate::boot::rss_kib().unwrap_or(0)
        );
    }

    /// Starts whatever may start now and escalates stops past their deadline.
    pub fn tick(&mut self, now: Instant) {
        if !self.shutting_down {
            self.run_checks(now);
        }
        if !self.images_ready && !self.shutting_down && !self.units.is_empty() {
            self.remind_images(now);
        }
        if self.images_ready && !self.shutting_down {
            for i in 0..self.units.len() {
                let due = match self.units.get(i).map(|u| &u.state) {
                    Some(State::Waiting) => true,
                    Some(State::Backoff(at)) => *at <= now,
                    _ => false,
                };
                if due {
                    self.start_or_wait(i, now);
                }
            }
        }
        // Every container has had its turn: none is starting, and those still waiting
        // were just told why (one that could start has been started above).
        if !self.reported_started
            && !self.shutting_down
            && self.images_ready
            && !self.units.is_empty()
            && self
                .units
                .iter()
                .all(|u| !matches!(u.state, State::Starting { .. }))
        {
            self.reported_started = true;
            // Starting them parsed image configs and specs, all freed by now.
            berth_runtime::release_free_heap();
            self.report_started();
        }
        for u in &mut self.units {
            if let State::Starting { start, killed } = &mut u.state {
                match killed {
                    None if start.deadline() <= now => {
                        Self::report_start_error(&mut u.log, &start.timeout_error());
                        start.kill();
                        *killed = Some(now);
                    }
                    Some(at) if *at + KILL_WAIT <= now => {
                        log::error!(
                            "container {}: setup process still not gone after SIGKILL: killing its cgroup",
                            u.spec.name
                        );
                        start.kill_cgroup();
                        *killed = Some(now);
                    }
                    _ => {}
                }
            }
            if let State::Stopping {
                run,
                deadline,
                killed,
            } = &mut u.state
            {
                if *deadline <= now {
                    if *killed {
                        log::error!(
                            "container {}: still not gone after cgroup.kill",
                            u.spec.name
                        );
                        *deadline = now + KILL_WAIT;
                    } else {
                        log::warn!(
                            "container {}: did not stop within {} ms: killing its cgroup",
                            u.spec.name,
                            u.config.stop_timeout.0.as_millis()
                        );
                        run.leaf.kill();
                        *killed = true;
                        *deadline = now + KILL_WAIT;
                    }
                }
            }
        }
    }

    /// The earliest moment [`Supervisor::tick`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let images_reminder = self
            .images_wait
            .as_ref()
            .filter(|_| !self.images_ready && !self.shutting_down)
            .map(Wait::next_reminder);
        let reminders = self
            .units
            .iter()
            .filter(|u| !self.shutting_down && matches!(u.state, State::Waiting))
            .filter_map(|u| u.waiting.as_ref().map(Wait::next_reminder));
        self.units
            .iter()
            .filter_map(|u| match &u.state {
                State::Backoff(at) if self.images_ready => Some(*at),
                State::Starting { start, killed } => {
                    Some(killed.map_or(start.deadline(), |at| at + KILL_WAIT))
                }
                State::Stopping { deadline, .. } => Some(*deadline),
                State::Running(_) => u
                    .health
                    .as_ref()
                    .filter(|h| h.check.is_none())
                    .map(|h| h.next_check),
                _ => None,
            })
            .chain(images_reminder)
            .chain(reminders)
            .min()
    }

    fn start(&mut self, i: usize) {
        let Some(unit) = self.units.get_mut(i) else {
            return;
        };
        let runtime = match &self.runtime {
            Ok(r) => r,
            Err(e) => {
                log::error!("container {}: cannot run containers: {e}", unit.spec.name);
                unit.state = State::Done;
                return;
            }
        };
        let (read, write) = match output_pipe() {
            Ok(p) => p,
            Err(e) => {
                log::error!("container {}: output pipe: {e}", unit.spec.name);
                unit.state = State::Backoff(Instant::now() + BACKOFF_MAX);
                return;
            }
        };
        let stdio = Stdio {
            stdin: File::open("/dev/null").ok().map(OwnedFd::from),
            stdout: write.try_clone().ok(),
            stderr: Some(write),
            console: None,
        };
        match runtime.begin(&unit.spec, stdio) {
            Ok(start) => {
                unit.pipe = Some(read);
                unit.state = State::Starting {
                    start: Box::new(start),
                    killed: None,
                };
            }
            Err(e) => {
                Self::report_start_error(&mut unit.log, &e);
                Self::after_failed_setup(unit, None);
            }
        }
    }

    /// Logs why a start failed, on the console and in the container's log.
    fn report_start_error(log: &mut LogSink, e: &berth_runtime::StartError) {
        log::error!("{e}");
        log.note(&format!("failed to start: {e}"));
    }

    /// Applies the restart policy to a start that never reached the program, as to
    /// an exit with Docker's "cannot run" code, or as to an OOM kill when the setup
    /// process was killed for memory under the container's limit (`status` and
    /// `oom_kills` are the reaped setup process's; `None` when there was none).
    fn after_failed_setup(unit: &mut Unit, reaped: Option<(WaitStatus, u64)>) {
        let exit = Exit::failed_setup(reaped);
        unit.finished_at = Some(SystemTime::now());
        unit.last_exit = Some(exit);
        unit.announce(News::Die(exit.code));
        Self::after_exit(unit, exit, Duration::ZERO);
        unit.after_exit_settle(Some(&exit));
    }

    /// Reads a starting container's report; moves it to `Running` once its program
    /// runs, or kills it when setup failed (its exit finishes the job).
    fn on_setup_ready(unit: &mut Unit) {
        let State::Starting {
            start,
            killed: None,
        } = &mut unit.state
        else {
            return;
        };
        match start.advance() {
            None => {}
            Some(Ok(stop_signal)) => {
                let State::Starting { start, .. } = std::mem::replace(&mut unit.state, State::Done)
                else {
                    return;
                };
                log::info!(
                    "container {}: started (pid {}) in {:.1} ms",
                    unit.spec.name,
                    start.pid,
                    start.elapsed().as_secs_f64() * 1000.0
                );
                unit.log.note(&format!("started (pid {})", start.pid));
                unit.health = unit
                    .config
                    .healthcheck
                    .as_ref()
                    .map(|h| Health::new(h, Instant::now()));
                unit.state = State::Running(Box::new(start.into_running(stop_signal)));
                unit.started_at = Some(SystemTime::now());
                unit.announce(News::Start);
                unit.settle(|a| a == Awaiting::Running, ApiResponse::Done);
            }
            Some(Err(e)) => {
                Self::report_start_error(&mut unit.log, &e);
                start.kill();
                if let State::Starting { killed, .. } = &mut unit.state {
                    *killed = Some(Instant::now());
                }
            }
        }
    }

    /// Decides what follows an exit that was not asked for.
    fn after_exit(unit: &mut Unit, exit: Exit, ran: Duration) {
        if unit.config.restart.restarts(exit.code, unit.restarts) {
            let delay = backoff(unit.last_delay, ran);
            unit.last_delay = delay;
            unit.restarts += 1;
            log::info!(
                "container {}: {exit}; restart {} in {} ms",
                unit.spec.name,
                unit.restarts,
                delay.as_millis()
            );
            unit.state = State::Backoff(Instant::now() + delay);
        } else {
            log::info!(
                "container {}: {exit}; not restarting (restart = {})",
                unit.spec.name,
                unit.config.restart
            );
            unit.state = State::Done;
        }
    }

    /// Reads what is left in an exited container's output pipe into its log, and closes
    /// it. Every writer is gone with the container, so this reads to the end, which the
    /// pipe's 1 MiB bounds (the extra rounds only guard against a writer that somehow
    /// survived).
    fn drain_output(unit: &mut Unit) {
        if let Some(pipe) = unit.pipe.take() {
            for _ in 0..(2 << 20) / crate::logs::DRAIN_BUDGET {
                if !unit.log.drain(pipe.as_fd()) {
                    break;
                }
            }
        }
    }

    /// Handles a reaped child; false if it was not a container.
    pub fn on_exit(&mut self, pid: Pid, status: WaitStatus) -> bool {
        if self.on_check_exit(pid, status) {
            return true;
        }
        let Some(unit) = self.units.iter_mut().find(|u| u.pid() == Some(pid)) else {
            return false;
        };
        if matches!(unit.state, State::Starting { killed: None, .. }) {
            // The child's end of the pipe is closed now: the report is complete.
            Self::on_setup_ready(unit);
        }
        // A check still in flight dies with the container's cgroup; it is reaped as a
        // stranger.
        unit.health = None;
        let state = std::mem::replace(&mut unit.state, State::Done);
        let (run, stopping) = match state {
            State::Running(r) => (r, false),
            State::Stopping { run, .. } => (run, true),
            State::Starting { start, .. } => {
                // What setup (or a program killed right after its exec) wrote.
                Self::drain_output(unit);
                let leaf = start.into_leaf();
                let oom_kills = leaf.oom_kills();
                if let Err(e) = leaf.remove() {
                    log::warn!("container {}: {e}", unit.spec.name);
                }
                if self.shutting_down {
                    unit.state = State::Done;
                } else {
                    Self::after_failed_setup(unit, Some((status, oom_kills)));
                }
                return true;
            }
            other => {
                unit.state = other;
                return false;
            }
        };
        Self::drain_output(unit);
        let exit = Exit::from_wait(status, run.leaf.oom_kills());
        unit.finished_at = Some(SystemTime::now());
        unit.last_exit = Some(exit);
        unit.announce(News::Die(exit.code));
        let ran = run.started.elapsed();
        let run = *run;
        if let Err(e) = run.leaf.remove() {
            log::warn!("container {}: {e}", unit.spec.name);
        }
        unit.log.note(&exit.to_string());
        if stopping || self.shutting_down {
            log::info!("container {}: stopped ({exit})", unit.spec.name);
            unit.state = State::Done;
        } else {
            Self::after_exit(unit, exit, ran);
        }
        unit.after_exit_settle(None);
        true
    }

    /// Handles the end of a health check; false if `pid` is not one.
    fn on_check_exit(&mut self, pid: Pid, status: WaitStatus) -> bool {
        let Some(unit) = self
            .units
            .iter_mut()
            .find(|u| u.health.as_ref().is_some_and(|h| h.check == Some(pid)))
        else {
            return false;
        };
        let code = Exit::from_wait(status, 0).code;
        let (Some(health), Some(config)) = (unit.health.as_mut(), unit.config.healthcheck.as_ref())
        else {
            return true;
        };
        let failures_before = health.failures;
        if let Some(status) = health.on_result(config, code, Instant::now()) {
            log::info!("container {}: {status}", unit.spec.name);
            unit.log.note(&format!("health: {status}"));
        } else if health.failures > failures_before && health.status != HealthStatus::Unhealthy {
            let why = match code {
                berth_runtime::exec::TIMED_OUT => "timed out".to_string(),
                c => format!("exit {c}"),
            };
            log::info!(
                "container {}: health check failed ({why}), {} of {} in a row",
                unit.spec.name,
                health.failures,
                config.retries
            );
        }
        true
    }

    /// Starts the health checks that are due.
    fn run_checks(&mut self, now: Instant) {
        for unit in &mut self.units {
            let (State::Running(run), Some(health), Some(config)) = (
                &unit.state,
                unit.health.as_mut(),
                unit.config.healthcheck.as_ref(),
            ) else {
                continue;
            };
            if !health.due(now) {
                continue;
            }
            let Ok(runtime) = &self.runtime else {
                continue;
            };
            match berth_runtime::exec::exec_in(
                run,
                &unit.spec,
                &runtime.store,
                &config.command,
                config.timeout.0,
            ) {
                Ok(pid) => health.check = Some(pid),
                Err(e) => {
                    log::warn!(
                        "container {}: cannot start its health check: {e}",
                        unit.spec.name
                    );
                    health.next_check = now + config.interval.0;
                }
            }
        }
    }

    /// The descriptors to poll, each with what its readiness means.
    pub fn poll_fds(&self) -> Vec<(Ready, BorrowedFd<'_>)> {
        let mut fds = Vec::new();
        for (i, u) in self.units.iter().enumerate() {
            if let Some(p) = &u.pipe {
                fds.push((Ready::Log(i), p.as_fd()));
            }
            if let State::Starting {
                start,
                killed: None,
            } = &u.state
            {
                fds.push((Ready::Setup(i), start.sync_fd()));
            }
        }
        fds
    }

    /// Handles a descriptor from [`Supervisor::poll_fds`] that poll reported.
    pub fn on_ready(&mut self, ready: Ready) {
        match ready {
            Ready::Log(i) => {
                if let Some(u) = self.units.get_mut(i) {
                    let open = match &u.pipe {
                        Some(p) => u.log.drain(p.as_fd()),
                        None => return,
                    };
                    if !open {
                        u.pipe = None;
                    }
                }
            }
            Ready::Setup(i) => {
                if let Some(u) = self.units.get_mut(i) {
                    Self::on_setup_ready(u);
                }
            }
        }
    }

    fn stop_signal(unit: &Unit, run: &Running) -> Signal {
        let n = unit
            .config
            .stop_signal
            .as_ref()
            .map(|s| s.0)
            .or(run.image_stop_signal)
            .unwrap_or(Signal::SIGTERM as i32);
        Signal::try_from(n).unwrap_or(Signal::SIGTERM)
    }

    /// Sends the stop signal to every running container none of whose dependents
    /// is still up.
    fn stop_leaves(&mut self) {
        let up: Vec<String> = self
            .units
            .iter()
            .filter(|u| u.pid().is_some())
            .map(|u| u.spec.name.clone())
            .collect();
        for i in 0..self.units.len() {
            let name = match self.units.get(i) {
                Some(u) if u.is_running() => u.spec.name.clone(),
                _ => continue,
            };
            let has_live_dependent = self.units.iter().any(|o| {
                up.contains(&o.spec.name) && o.config.depends_on.iter().any(|d| d.0 == name)
            });
            if has_live_dependent {
                continue;
            }
            let Some(unit) = self.units.get_mut(i) else {
                continue;
            };
            let timeout = unit.config.stop_timeout.0;
            Self::begin_stop(unit, timeout);
        }
    }

    /// Sends a running container its stop signal; `cgroup.kill` follows after `timeout`.
    fn begin_stop(unit: &mut Unit, timeout: Duration) {
        if let State::Running(run) = std::mem::replace(&mut unit.state, State::Done) {
            let sig = Self::stop_signal(unit, &run);
            log::info!(
                "container {}: stopping ({sig}, then cgroup.kill after {} ms)",
                unit.spec.name,
                timeout.as_millis()
            );
            let _ = run.signal(sig);
            // Timed from after the log line, so that the console never shows a kill
            // sooner than `stop_timeout` after "stopping".
            unit.state = State::Stopping {
                run,
                deadline: Instant::now() + timeout,
                killed: false,
            };
        }
    }

    /// Stops every container in reverse dependency order and waits for them, reaping
    /// as it goes. Returns when all are stopped or hopelessly stuck.
    pub fn stop_all(&mut self, mut signals: Option<&mut Signals>) {
        // A container that exits on its own from here on is not restarted.
        self.shutting_down = true;
        for u in &mut self.units {
            match &mut u.state {
                State::Waiting | State::Backoff(_) => u.state = State::Done,
                // Its program has not started: nothing to stop gracefully.
                State::Starting {
                    start,
                    killed: killed @ None,
                } => {
                    log::info!("container {}: still starting: killed", u.spec.name);
                    start.kill();
                    *killed = Some(Instant::now());
                }
                _ => {}
            }
        }
        let limit: Duration = self
            .units
            .iter()
            .map(|u| u.config.stop_timeout.0 + KILL_WAIT)
            .sum::<Duration>()
            + KILL_WAIT;
        let give_up = Instant::now() + limit;
        loop {
            let now = Instant::now();
            self.stop_leaves();
            self.tick(now);
            if self.units.iter().all(|u| u.pid().is_none()) || now >= give_up {
                break;
            }
            let wait = self
                .next_deadline()
                .map_or(Duration::from_millis(100), |d| {
                    d.saturating_duration_since(now)
                })
                .min(Duration::from_millis(100));
            let readable = {
                let mut fds: Vec<PollFd<'_>> = Vec::new();
                if let Some(s) = signals.as_deref() {
                    fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                }
                let own = self.poll_fds();
                fds.extend(
                    own.iter()
                        .map(|(_, fd)| PollFd::new(*fd, PollFlags::POLLIN)),
                );
                let ms = PollTimeout::try_from(wait.as_millis().max(1) as i32)
                    .unwrap_or(PollTimeout::MAX);
                let _ = poll(&mut fds, ms);
                let skip = usize::from(signals.is_some());
                own.iter()
                    .zip(fds.iter().skip(skip))
                    .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                    .map(|((ready, _), _)| *ready)
                    .collect::<Vec<_>>()
            };
            for ready in readable {
                self.on_ready(ready);
            }
            if let Some(s) = signals.as_deref_mut() {
                let _ = s.drain();
            }
            for (pid, status) in reap_all().exited {
                self.on_exit(pid, status);
            }
        }
        let stuck: Vec<&str> = self
            .units
            .iter()
            .filter(|u| u.pid().is_some())
            .map(|u| u.name())
            .collect();
        if stuck.is_empty() {
            log::info!("all containers stopped");
        } else {
            log::error!("containers still running at shutdown: {}", stuck.join(" "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..12 {
            d = backoff(d, Duration::from_millis(5));
            seen.push(d.as_millis());
        }
        assert_eq!(&seen[..5], &[100, 200, 400, 800, 1600]);
        assert_eq!(*seen.last().unwrap(), 30_000);
        assert_eq!(
            backoff(Duration::from_secs(30), STABLE_AFTER),
            BACKOFF_START
        );
    }

    fn configs(toml_text: &str) -> Vec<ContainerConfig> {
        #[derive(serde::Deserialize)]
        struct File {
            container: Vec<ContainerConfig>,
        }
        toml::from_str::<File>(toml_text).unwrap().container
    }

    /// A supervisor over a scratch state directory and cgroup "mount": enough to ask
    /// what its containers wait for, without starting any.
    fn scratch_supervisor(dir: &std::path::Path, containers: &[ContainerConfig]) -> Supervisor {
        let cgroups =
            berth_runtime::cgroup::CgroupParent::prepare_at(dir, &Default::default()).unwrap();
        let runtime = Runtime {
            store: dir.to_path_buf(),
            state: dir.to_path_buf(),
            cgroups,
        };
        Supervisor::new(containers, Ok(runtime), &Ok(BTreeMap::new()))
    }

    #[test]
    fn held_back_containers_name_what_they_wait_for() {
        let dir = tempfile::tempdir().unwrap();
        let containers = configs(
            r#"
            [[container]]
            name = "db"
            image = "busybox"
            network = "none"
            [[container]]
            name = "web"
            image = "other:1"
            network = "none"
            depends_on = ["db"]
            [[container]]
            name = "online"
            image = "other:1"
            network = "none"
            depends_on = ["network-online"]
            "#,
        );
        let mut sup = scratch_supervisor(dir.path(), &containers);
        assert_eq!(
            sup.wait_reason(1),
            Some(WaitReason::Dependency {
                name: "db".into(),
                state: DependencyState::NotRunning
            })
        );
        assert_eq!(sup.wait_reason(2), Some(WaitReason::NetworkOnline));
        sup.set_network_online();
        assert_eq!(sup.wait_reason(2), None);
        // `busybox` is `busybox:latest`, whose import failed: db waits for good.
        sup.set_images_failed(&[berth_imagefs::Reference::parse("busybox:latest").unwrap()]);
        assert_eq!(
            sup.wait_reason(0),
            Some(WaitReason::ImageNotImported {
                image: "busybox".into()
            })
        );
        assert_eq!(sup.wait_reason(2), None, "other images are not held back");
        // A dependency that exited for good is said to have.
        if let Some(db) = sup.units.get_mut(0) {
            db.state = State::Done;
        }
        assert_eq!(
            sup.wait_reason(1),
            Some(WaitReason::Dependency {
                name: "db".into(),
                state: DependencyState::Exited
            })
        );
    }

    #[test]
    fn a_held_back_restart_waits_without_a_deadline_in_the_past() {
        let dir = tempfile::tempdir().unwrap();
        let containers = configs(
            r#"
            [[container]]
            name = "db"
            image = "busybox"
            network = "none"
            [[container]]
            name = "web"
            image = "other:1"
            network = "none"
            depends_on = ["db"]
            restart = "always"
            "#,
        );
        let mut sup = scratch_supervisor(dir.path(), &containers);
        let now = Instant::now();
        // db's image failed to import; web's restart came due while db is not running.
        sup.set_images_failed(&[berth_imagefs::Reference::parse("busybox").unwrap()]);
        sup.set_images_ready();
        if let Some(web) = sup.units.get_mut(1) {
            web.state = State::Backoff(now - Duration::from_secs(1));
        }
        sup.tick(now);
        for u in &sup.units {
            assert!(
                matches!(u.state, State::Waiting),
                "{} not waiting",
                u.name()
            );
        }
        assert_eq!(
            sup.units[0].waiting.as_ref().map(|w| w.reason.clone()),
            Some(WaitReason::ImageNotImported {
                image: "busybox".into()
            })
        );
        // The loop next wakes for the reminders, not at once.
        assert_eq!(
            sup.next_deadline(),
            Some(now + crate::waiting::REMIND_EVERY)
        );
        assert!(sup.reported_started, "the summary came, naming both");
    }

    #[test]
    fn waiting_for_the_images_is_reminded_every_30_s() {
        let dir = tempfile::tempdir().unwrap();
        let containers = configs(
            r#"
            [[container]]
            name = "db"
            image = "busybox"
            network = "none"
            "#,
        );
        let mut sup = scratch_supervisor(dir.path(), &containers);
        let now = Instant::now();
        sup.tick(now);
        assert_eq!(
            sup.next_deadline(),
            Some(now + crate::waiting::REMIND_EVERY),
            "the loop wakes for the reminder"
        );
        assert!(!sup.reported_started);
        sup.set_images_ready();
        sup.set_images_failed(&[berth_imagefs::Reference::parse("busybox").unwrap()]);
        sup.tick(now + Duration::from_secs(1));
        assert!(sup.reported_started);
        assert_eq!(
            sup.next_deadline(),
            Some(now + Duration::from_secs(1) + crate::waiting::REMIND_EVERY),
            "no more images reminder, db's own instead"
        );
    }

    #[test]
    fn each_mirroring_container_gets_an_even_console_share() {
        let dir = tempfile::tempdir().unwrap();
        let containers = configs(
            r#"
            [[container]]
            name = "a"
            image = "x"
            network = "none"
            [[container]]
            name = "b"
            image = "x"
            network = "none"
            [[container]]
            name = "silent"
            image = "x"
            network = "none"
            log_console = false
            "#,
        );
        let mut sup = scratch_supervisor(dir.path(), &containers);
        // Two mirror: each may fill half of the budget within one window, not more.
        let line = "y".repeat(100);
        for u in &mut sup.units {
            for _ in 0..200 {
                u.log.feed(format!("{line}\n").as_bytes());
            }
        }
        let dropped: Vec<u64> = sup.units.iter().map(|u| u.log.dropped_lines()).collect();
        let per_line = crate::klog::format_container_line(0.0, "a", &line).len();
        let fits = crate::klog::console_share(2) / per_line;
        // (Within one window; a slow machine may roll into a second one.)
        for d in &dropped[..2] {
            assert!(*d > 0 && *d + 2 * fits as u64 >= 200, "{dropped:?}");
        }
        assert_eq!(dropped[2], 0, "log_console = false mirrors nothing");
    }
}
