//! berth's container runtime, shared by PID 1 (which supervises containers) and
//! `berth run` (one container in the foreground on an ordinary host).
//!
//! Starting a container: the caller prepares the state directory and a cgroup leaf
//! with its limits ([`spawn`], [`cgroup`]), then `clone3` creates the child directly
//! inside that cgroup and in new mount, PID, UTS, IPC (and network) namespaces. The
//! child ([`child`]) takes a new cgroup namespace, mounts the image's overlay and the
//! system filesystems by fd ([`rootfs`]), pivots into the rootfs, resolves the
//! program, user and working directory from the image ([`process`]), drops to the
//! container's capabilities ([`security`]) and seccomp filter ([`seccomp`]) and executes the
//! program. Everything that reads image bytes happens in the child.
//!
//! # Modules
//! - [`spec`]: the validated container description and its value parsers.
//! - [`spawn`]: the caller's side, the state layout, [`spawn::Exit`].
//! - [`child`]: the container's side up to `execve`.
//! - [`exec`]: a command inside a running container (health checks).
//! - [`rootfs`]: mounts inside the container, resolved by fd.
//! - [`process`]: argv, env, user and workdir from image + spec.
//! - [`security`]: capabilities and `no_new_privs`.
//! - [`seccomp`]: the seccomp filter, compiled to a range tree.
//! - [`cgroup`]: cgroup v2 leaves, limits, `cgroup.kill`, OOM counts.
//! - [`volume`]: named volumes, seeded from the image on first use.
//! - `reaper`: the optional init inside the container.
//! - `sys`: the only `unsafe` code.

pub mod cgroup;
pub mod child;
pub mod exec;
pub mod process;
mod reaper;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod spawn;
pub mod spec;
mod sys;
pub mod volume;

pub use spawn::{Console, Exit, ProcessStatus, Running, Runtime, StartError, Starting, Stdio};
pub use spec::{ContainerSpec, Network, SpecError};
pub use sys::release_free_heap;
