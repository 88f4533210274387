//! The supervisor as the API sees it: each container as a [`ContainerView`], and the
//! answers to what the API asks of them ([`ContainerHost`]).

use std::time::{SystemTime, UNIX_EPOCH};

use berth_proto::api::{
    ApiEvent, ContainerDetails, ContainerState, ContainerView, CreateSpec, Failure, FailureKind,
    PortView, SystemInfo,
};
use berth_runtime::spec::{Network, VolumeSource};

use super::{Awaiting, News, State, Supervisor, Unit};
use crate::api::{failure, ContainerHost, Control};
use crate::health::HealthStatus;
use crate::registry::{Origin, ORIGIN_LABEL};
use berth_proto::api::ApiResponse;
use berth_proto::RequestId;

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Docker's time format, from the log's formatter (millisecond precision).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    crate::logs::rfc3339(d.as_secs(), d.subsec_millis())
}

impl Unit {
    /// Docker's state for the unit's.
    fn api_state(&self) -> ContainerState {
        match &self.state {
            State::Running(_) | State::Stopping { .. } => ContainerState::Running,
            State::Backoff(_) => ContainerState::Restarting,
            State::Waiting | State::Starting { .. } | State::Done => {
                if self.last_exit.is_some() {
                    ContainerState::Exited
                } else {
                    ContainerState::Created
                }
            }
        }
    }

    fn view(&self) -> ContainerView {
        let command: Vec<String> = self
            .config
            .entrypoint
            .iter()
            .flatten()
            .chain(self.config.command.iter().flatten())
            .cloned()
            .collect();
        let ip_address = match &self.spec.network {
            Network::Bridge(a) => Some(a.address.to_string()),
            _ => None,
        };
        ContainerView {
            id: self.id.to_string(),
            name: self.spec.name.clone(),
            image: self.config.image.clone(),
            image_id: None,
            command,
            labels: [(ORIGIN_LABEL.to_owned(), Origin::Config.label().to_owned())].into(),
            state: self.api_state(),
            created: unix_secs(self.created),
            started_at: self.started_at.map(rfc3339),
            finished_at: self.finished_at.map(rfc3339),
            exit_code: self.last_exit.map(|e| e.code),
            oom_killed: self.last_exit.is_some_and(|e| e.oom_killed),
            pid: self.pid().map(|p| p.as_raw() as u32),
            restart_count: self.restarts,
            health: self.health.as_ref().map(|h| {
                match h.status {
                    HealthStatus::Starting => "starting",
                    HealthStatus::Healthy => "healthy",
                    HealthStatus::Unhealthy => "unhealthy",
                }
                .to_owned()
            }),
            ports: self
                .config
                .ports
                .iter()
                .map(|p| PortView {
                    private_port: p.container_port,
                    protocol: p.protocol.as_str().to_owned(),
                    host_ip: Some(p.host_ip.map_or("0.0.0.0".to_owned(), |ip| ip.to_string())),
                    host_port: Some(p.host_port),
                })
                .collect(),
            details: self.details(),
            network_mode: match self.config.network {
                crate::workload::NetworkMode::Bridge => "bridge",
                crate::workload::NetworkMode::Host => "host",
                crate::workload::NetworkMode::None => "none",
            }
            .to_owned(),
            ip_address,
        }
    }
}

impl Unit {
    /// The configuration half of `docker inspect`.
    fn details(&self) -> ContainerDetails {
        let spec = &self.spec;
        let signal_name = |n: i32| {
            nix::sys::signal::Signal::try_from(n).map_or(n.to_string(), |s| s.as_str().to_owned())
        };
        ContainerDetails {
            env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            hostname: spec.hostname().to_owned(),
            working_dir: spec.workdir.clone().unwrap_or_default(),
            user: spec.user.clone().unwrap_or_default(),
            tty: false,
            open_stdin: false,
            restart: self.config.restart.to_string(),
            memory_bytes: spec.limits.memory.unwrap_or(0),
            nano_cpus: spec.limits.cpus.map_or(0, |c| (c * 1e9) as u64),
            pids_limit: spec.limits.pids.unwrap_or(0),
            read_only: spec.read_only,
            auto_remove: false,
            init: spec.init,
            cap_add: spec.cap_add.iter().map(|c| c.to_string()).collect(),
            cap_drop: if spec.cap_drop_all {
                vec!["ALL".to_owned()]
            } else {
                spec.cap_drop.iter().map(|c| c.to_string()).collect()
            },
            binds: spec
                .volumes
                .iter()
                .map(|v| {
                    let source = match &v.source {
                        VolumeSource::Named(n) => n.clone(),
                        VolumeSource::Host(p) => p.display().to_string(),
                    };
                    let ro = if v.read_only { ":ro" } else { "" };
                    format!("{source}:{}{ro}", v.target)
                })
                .collect(),
            tmpfs: spec.tmpfs.clone(),
            stop_signal: self
                .config
                .stop_signal
                .as_ref()
                .map_or("SIGTERM".to_owned(), |s| signal_name(s.0)),
            stop_timeout_secs: self.config.stop_timeout.0.as_secs() as u32,
            log_path: self.log.path().display().to_string(),
            error: String::new(),
        }
    }
}

impl Supervisor {
    /// What happened to the containers since the last call, as API events.
    pub fn take_events(&mut self) -> Vec<ApiEvent> {
        let mut events = Vec::new();
        for u in &mut self.units {
            for news in std::mem::take(&mut u.news) {
                let (action, exit_code) = match news {
                    News::Start => ("start", None),
                    News::Die(code) => ("die", Some(code)),
                };
                events.push(ApiEvent::Container {
                    id: u.id.to_string(),
                    name: u.spec.name.clone(),
                    image: u.config.image.clone(),
                    action: action.to_owned(),
                    time_nano: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as i64),
                    exit_code,
                });
            }
        }
        events
    }
}

fn not_found(reference: &str) -> Failure {
    failure(
        FailureKind::NotFound,
        format!("No such container: {reference}"),
    )
}

impl Supervisor {
    /// The unit a client named: full id, name (with or without `/`), unique id prefix.
    fn find(&self, reference: &str) -> Result<usize, Failure> {
        let bare = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(i) = self
            .units
            .iter()
            .position(|u| u.id.as_str() == reference || u.spec.name == bare)
        {
            return Ok(i);
        }
        let hex = !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_hexdigit());
        let mut hits = self
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| hex && u.id.as_str().starts_with(reference));
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => Ok(i),
            (Some(_), Some(_)) => Err(failure(
                FailureKind::Invalid,
                format!("multiple IDs found with provided prefix: {reference}"),
            )),
            (None, _) => Err(not_found(reference)),
        }
    }
}

/// Most API requests one container holds waiting at once.
const MAX_WAITERS: usize = 64;

impl ContainerHost for Supervisor {
    fn system_info(&self) -> SystemInfo {
        let state = self
            .runtime
            .as_ref()
            .map(|r| r.state.clone())
            .unwrap_or_else(|_| crate::images::STORE_DIR.into());
        crate::api_host::system_info(&state)
    }

    fn containers(&self) -> Vec<ContainerView> {
        self.units.iter().map(Unit::view).collect()
    }

    fn inspect(&self, reference: &str) -> Result<ContainerView, Failure> {
        let i = self.find(reference)?;
        self.units
            .get(i)
            .map(Unit::view)
            .ok_or_else(|| not_found(reference))
    }

    fn control(
        &mut self,
        reference: &str,
        control: Control,
        id: RequestId,
    ) -> Result<bool, Failure> {
        let i = self.find(reference)?;
        if self.shutting_down {
            return Err(failure(FailureKind::Conflict, "the host is shutting down"));
        }
        let Some(unit) = self.units.get_mut(i) else {
            return Err(not_found(reference));
        };
        if unit.waiters.len() >= MAX_WAITERS {
            return Err(failure(
                FailureKind::Conflict,
                format!(
                    "container {} has too many requests under way",
                    unit.spec.name
                ),
            ));
        }
        let name = unit.spec.name.clone();
        let not_running = || {
            failure(
                FailureKind::Conflict,
                format!("Container {name} is not running"),
            )
        };
        let waiting = |unit: &mut Unit, a: Awaiting| {
            unit.waiters.push((id, a));
            Ok(false)
        };
        match (control, &mut unit.state) {
            (
                Control::Start,
                State::Running(_) | State::Starting { .. } | State::Stopping { .. },
            ) => Err(failure(
                FailureKind::NotModified,
                "container already started",
            )),
            (
                Control::Start | Control::Restart { .. },
                state @ (State::Done | State::Backoff(_)),
            ) => {
                *state = State::Waiting;
                waiting(unit, Awaiting::Running)
            }
            (Control::Start | Control::Restart { .. }, State::Waiting) => {
                waiting(unit, Awaiting::Running)
            }
            (Control::Stop { .. }, State::Done) => Err(failure(
                FailureKind::NotModified,
                "container already stopped",
            )),
            (Control::Stop { .. }, state @ (State::Waiting | State::Backoff(_))) => {
                *state = State::Done;
                Ok(true)
            }
            (Control::Stop { .. }, State::Stopping { .. }) => waiting(unit, Awaiting::Exited),
            (Control::Restart { .. }, State::Stopping { .. }) => waiting(unit, Awaiting::Restarted),
            (Control::Stop { .. } | Control::Restart { .. }, State::Starting { start, killed }) => {
                if killed.is_none() {
                    start.kill();
                    *killed = Some(std::time::Instant::now());
                }
                waiting(unit, Awaiting::Exited)
            }
            (Control::Stop { timeout }, State::Running(_)) => {
                let timeout = timeout.unwrap_or(unit.config.stop_timeout.0);
                Self::begin_stop(unit, timeout);
                waiting(unit, Awaiting::Exited)
            }
            (Control::Restart { timeout }, State::Running(_)) => {
                let timeout = timeout.unwrap_or(unit.config.stop_timeout.0);
                Self::begin_stop(unit, timeout);
                waiting(unit, Awaiting::Restarted)
            }
            (Control::Kill { signal }, State::Running(run) | State::Stopping { run, .. }) => {
                let number = match signal.as_deref().filter(|s| !s.is_empty()) {
                    None => nix::sys::signal::Signal::SIGKILL as i32,
                    Some(s) => berth_runtime::spec::parse_signal(s)
                        .map_err(|e| failure(FailureKind::Invalid, e.to_string()))?,
                };
                let sig = nix::sys::signal::Signal::try_from(number).map_err(|_| {
                    failure(FailureKind::Invalid, format!("invalid signal {number}"))
                })?;
                run.signal(sig).map_err(|e| {
                    failure(FailureKind::Internal, format!("signalling {name}: {e}"))
                })?;
                Ok(true)
            }
            (Control::Kill { .. }, _) => Err(not_running()),
        }
    }

    fn take_replies(&mut self) -> Vec<(RequestId, ApiResponse)> {
        self.units
            .iter_mut()
            .flat_map(|u| std::mem::take(&mut u.replies))
            .collect()
    }

    fn create(
        &mut self,
        _name: Option<&str>,
        _spec: CreateSpec,
    ) -> Result<(String, Vec<String>), Failure> {
        Err(failure(
            FailureKind::NotImplemented,
            "berth does not create containers through the API yet: list them in host.toml's [[container]]s",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_dockers() {
        let t = UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.005Z");
        assert_eq!(unix_secs(t), 1_700_000_000);
    }
}
