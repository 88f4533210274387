//! Address management for a container network: which container has which address.
//!
//! The leases live in one JSON file, `<dir>/ipam.json`, changed only under an exclusive
//! `flock` on `<dir>/ipam.lock` and replaced atomically (write, fsync, rename, fsync the
//! directory), so that concurrent `berth run`s and a restarted PID 1 agree on it.
//!
//! - A lease is keyed by container name, and a container gets the same address every
//!   time it starts: the other containers' `/etc/hosts` stay right across restarts.
//! - A lease records the process that holds it (PID 1 for the containers it supervises,
//!   the `berth run` process otherwise) and that process's start time; a lease whose
//!   holder is gone is free again. An address held by a live process is never handed out.
//! - New addresses are taken round-robin after the last one handed out, so a released
//!   address is reused as late as possible (stale ARP entries elsewhere expire first).
//! - The network address, the gateway (the first host address, on the bridge) and the
//!   broadcast address are never handed out.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::addr::Ipv4Net;
use crate::config::PortSpec;

/// What went wrong with the lease file.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: locking: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path}: not a lease file berth wrote: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} holds leases for subnet {found}, not {wanted}: remove the file after stopping every container on it")]
    OtherSubnet {
        path: PathBuf,
        found: Ipv4Net,
        wanted: Ipv4Net,
    },
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
    #[error("container name {name:?} already holds {address} for the running process {pid}")]
    NameInUse {
        name: String,
        address: Ipv4Addr,
        pid: u32,
    },
}

/// One address handed to a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    pub address: Ipv4Addr,
    /// The process holding the lease.
    pub pid: u32,
    /// That process's start time (field 22 of `/proc/PID/stat`), against pid reuse.
    pub start_time: u64,
    /// The ports the container publishes, so that any holder can rebuild the NAT
    /// table for every live container.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseFile {
    subnet: String,
    /// Offset in the subnet of the last address handed out.
    last: u64,
    leases: Vec<Lease>,
}

/// The lease file of one network.
pub struct Ipam {
    dir: PathBuf,
    subnet: Ipv4Net,
}

/// The identity of a process that can hold leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub start_time: u64,
}

impl Holder {
    /// The calling process.
    pub fn current() -> Holder {
        Holder::of(std::process::id())
    }

    /// Process `pid` (its start time read now).
    pub fn of(pid: u32) -> Holder {
        Holder {
            pid,
            start_time: start_time(pid).unwrap_or(0),
        }
    }

    fn holds(&self, lease: &Lease) -> bool {
        lease.pid == self.pid && lease.start_time == self.start_time
    }
}

/// The start time of process `pid`, or `None` if there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}

fn alive(lease: &Lease) -> bool {
    start_time(lease.pid) == Some(lease.start_time)
}

impl Ipam {
    pub fn new(dir: &Path, subnet: Ipv4Net) -> Ipam {
        Ipam {
            dir: dir.to_path_buf(),
            subnet,
        }
    }

    fn io(&self, path: &Path) -> impl Fn(io::Error) -> IpamError {
        let path = path.to_path_buf();
        move |source| IpamError::Io {
            path: path.clone(),
            source,
        }
    }

    /// Runs `change` on the leases under the lock, and saves them if it returns true.
    fn locked<T>(
        &self,
        change: impl FnOnce(&mut LeaseFile) -> Result<(T, bool), IpamError>,
    ) -> Result<T, IpamError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let lock_path = self.dir.join("ipam.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(self.io(&lock_path))?;
        let _guard = lock(lock_file, &lock_path)?;
        let path = self.dir.join("ipam.json");
        let mut file = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: LeaseFile =
                    serde_json::from_slice(&bytes).map_err(|e| IpamError::Corrupt {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?;
                let found: Ipv4Net = file.subnet.parse().map_err(|e| IpamError::Corrupt {
                    path: path.clone(),
                    detail: e,
                })?;
                if found != self.subnet {
                    return Err(IpamError::OtherSubnet {
                        path,
                        found,
                        wanted: self.subnet,
                    });
                }
                file
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => LeaseFile {
                subnet: self.subnet.to_string(),
                last: 1,
                leases: Vec::new(),
            },
            Err(e) => return Err(self.io(&path)(e)),
        };
        let (value, changed) = change(&mut file)?;
        if changed {
            self.save(&path, &file)?;
        }
        Ok(value)
    }

    fn save(&self, path: &Path, file: &LeaseFile) -> Result<(), IpamError> {
        let tmp = self.dir.join("ipam.json.tmp");
        let mut bytes = serde_json::to_vec_pretty(file).map_err(|e| IpamError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        bytes.push(b'\n');
        let mut out = File::create(&tmp).map_err(self.io(&tmp))?;
        out.write_all(&bytes).map_err(self.io(&tmp))?;
        out.sync_all().map_err(self.io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(self.io(path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io(&self.dir))
    }

    /// The address of container `name` for `holder`, publishing `ports`: its existing
    /// lease if it has one (taking it over from a holder that is gone), else a free
    /// address. One locked transaction, saved only if something changed.
    pub fn allocate(
        &self,
        name: &str,
        holder: Holder,
        ports: &[PortSpec],
    ) -> Result<Ipv4Addr, IpamError> {
        let subnet = self.subnet;
        self.locked(|file| {
            if let Some(lease) = file.leases.iter_mut().find(|l| l.name == name) {
                if !holder.holds(lease) && alive(lease) {
                    return Err(IpamError::NameInUse {
                        name: name.to_owned(),
                        address: lease.address,
                        pid: lease.pid,
                    });
                }
                let changed = !holder.holds(lease) || lease.ports != ports;
                lease.pid = holder.pid;
                lease.start_time = holder.start_time;
                lease.ports = ports.to_vec();
                return Ok((lease.address, changed));
            }
            // Leases of processes that are gone are free again.
            file.leases.retain(|l| holder.holds(l) || alive(l));
            let size = subnet.size();
            if size < 4 {
                return Err(IpamError::Exhausted(subnet));
            }
            // Host offsets 2 ..= size-2: not the network, gateway or broadcast address.
            let hosts = size - 3;
            for step in 1..=hosts {
                // `last` is 1 before anything was handed out: the search starts at 2.
                let offset = 2 + file.last.wrapping_sub(2).wrapping_add(step) % hosts;
                let Some(address) = subnet.nth(offset) else {
                    continue;
                };
                if file.leases.iter().any(|l| l.address == address) {
                    continue;
                }
                file.last = offset;
                file.leases.push(Lease {
                    name: name.to_owned(),
                    address,
                    pid: holder.pid,
                    start_time: holder.start_time,
                    ports: ports.to_vec(),
                });
                return Ok((address, true));
            }
            Err(IpamError::Exhausted(subnet))
        })
    }

    /// Hands container `name`'s lease from `from` to `to` (the container's own process,
    /// so the lease lives exactly as long as the container).
    pub fn transfer(&self, name: &str, from: Holder, to: Holder) -> Result<(), IpamError> {
        self.locked(|file| {
            let mut changed = false;
            for l in file
                .leases
                .iter_mut()
                .filter(|l| l.name == name && from.holds(l))
            {
                l.pid = to.pid;
                l.start_time = to.start_time;
                changed = true;
            }
            Ok(((), changed))
        })
    }

    /// Gives back container `name`'s address (if `holder` holds it).
    pub fn release(&self, name: &str, holder: Holder) -> Result<(), IpamError> {
        self.locked(|file| {
            let before = file.leases.len();
            file.leases.retain(|l| !(l.name == name && holder.holds(l)));
            Ok(((), file.leases.len() != before))
        })
    }

    /// Every lease whose holder is alive.
    #[cfg(test)]
    pub fn leases(&self) -> Result<Vec<Lease>, IpamError> {
        self.with_live_leases(|l| l.to_vec())
    }

    /// Runs `f` on the live leases while holding the lock, so that what it derives from
    /// them (the NAT table) cannot be overtaken by another holder's older view.
    pub fn with_live_leases<T>(&self, f: impl FnOnce(&[Lease]) -> T) -> Result<T, IpamError> {
        self.locked(|file| {
            let live: Vec<Lease> = file.leases.iter().filter(|l| alive(l)).cloned().collect();
            Ok((f(&live), false))
        })
    }
}

/// How long to wait for another holder of the lease lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes an exclusive flock on `file`, released when the guard drops (and by the kernel
/// if the process dies).
/// Waits at most [`LOCK_WAIT`]: a holder that is stopped (a `berth run` under ctrl-z)
/// must not hang PID 1.
fn lock(file: File, path: &Path) -> Result<Flock<File>, IpamError> {
    let mut file = file;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(guard) => return Ok(guard),
            Err((f, nix::errno::Errno::EINTR)) => file = f,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err((_, source)) => {
                return Err(IpamError::Lock {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn sticky_round_robin_and_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), subnet("10.88.0.0/29"));
        let me = Holder::current();
        let a = ipam.allocate("a", me, &[]).unwrap();
        let b = ipam.allocate("b", me, &[]).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 88, 0, 3));
        // Same name, same address.
        assert_eq!(ipam.allocate("a", me, &[]).unwrap(), a);
        // Released addresses come back last: .4, .5, .6, then .2 again.
        ipam.release("a", me).unwrap();
        let got: Vec<Ipv4Addr> = ["c", "d", "e", "f"]
            .iter()
            .map(|n| ipam.allocate(n, me, &[]).unwrap())
            .collect();
        assert_eq!(
            got,
            [4, 5, 6, 2].map(|o| Ipv4Addr::new(10, 88, 0, o)).to_vec()
        );
        // /29 has 5 usable host addresses besides the gateway: now all taken.
        assert!(matches!(
            ipam.allocate("g", me, &[]),
            Err(IpamError::Exhausted(_))
        ));
        // Never the network, gateway or broadcast address.
        for l in ipam.leases().unwrap() {
            assert!(![0, 1, 7].contains(&l.address.octets()[3]), "{l:?}");
        }
    }

    #[test]
    fn leases_of_dead_holders_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), subnet("10.88.0.0/30"));
        // A /30 has exactly one address to hand out.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let other = Holder {
            pid,
            start_time: start_time(pid).unwrap(),
        };
        let a = ipam.allocate("x", other, &[]).unwrap();
        let me = Holder::current();
        assert!(matches!(
            ipam.allocate("y", me, &[]),
            Err(IpamError::Exhausted(_))
        ));
        assert!(matches!(
            ipam.allocate("x", me, &[]),
            Err(IpamError::NameInUse { .. })
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(ipam.allocate("y", me, &[]).unwrap(), a);
    }

    #[test]
    fn corrupt_and_foreign_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ipam.json"), b"{nope").unwrap();
        let ipam = Ipam::new(dir.path(), subnet("10.88.0.0/16"));
        let err = ipam.allocate("a", Holder::current(), &[]).unwrap_err();
        assert!(err.to_string().contains("ipam.json"), "{err}");
        let other = Ipam::new(dir.path(), subnet("10.99.0.0/16"));
        std::fs::remove_file(dir.path().join("ipam.json")).unwrap();
        ipam.allocate("a", Holder::current(), &[]).unwrap();
        assert!(matches!(
            other.allocate("b", Holder::current(), &[]),
            Err(IpamError::OtherSubnet { .. })
        ));
    }
}
