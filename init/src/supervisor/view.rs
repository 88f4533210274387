//! The supervisor as the API sees it: each container as a [`ContainerView`], and the
//! answers to what the API asks of them ([`ContainerHost`]).

use std::time::{SystemTime, UNIX_EPOCH};

use berth_proto::api::{
    ApiEvent, ContainerDetails, ContainerState, ContainerView, CreateSpec, Failure, FailureKind,
    PortView, SystemInfo,
};
use berth_runtime::spec::{Network, VolumeSource};

use super::{News, State, Supervisor, Unit};
use crate::api::{failure, ContainerHost};
use crate::health::HealthStatus;
use crate::registry::{Origin, ORIGIN_LABEL};

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
        let not_found = || {
            failure(
                FailureKind::NotFound,
                format!("No such container: {reference}"),
            )
        };
        let bare = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(u) = self
            .units
            .iter()
            .find(|u| u.id.as_str() == reference || u.spec.name == bare)
        {
            return Ok(u.view());
        }
        let hex = !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_hexdigit());
        let mut hits = self
            .units
            .iter()
            .filter(|u| hex && u.id.as_str().starts_with(reference));
        match (hits.next(), hits.next()) {
            (Some(u), None) => Ok(u.view()),
            (Some(_), Some(_)) => Err(failure(
                FailureKind::Invalid,
                format!("multiple IDs found with provided prefix: {reference}"),
            )),
            (None, _) => Err(not_found()),
        }
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
