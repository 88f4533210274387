//! The privileges a container keeps: its capability sets and its seccomp filter.
//!
//! Capabilities: Podman's default eleven, which is Docker's fourteen without
//! `AUDIT_WRITE`, `MKNOD` and `NET_RAW` (so no raw sockets and no `mknod` of device
//! nodes unless asked for). Bounding, effective and permitted sets hold them;
//! inheritable and ambient sets are empty, and `no_new_privs` is set, so no
//! set-uid binary or file capability can add any back.
//!
//! Seccomp: an allowlist modelled on Docker's default profile
//! (`moby/moby:profiles/seccomp/default.json`) for x86_64, and stricter: no `ptrace`
//! family unless `SYS_PTRACE` is added, no `io_uring`, and `socket` refuses
//! `AF_VSOCK`. Anything not allowed fails with `EPERM`. `clone` is allowed only
//! without namespace flags; `clone3`, whose flags live in memory the filter cannot
//! read, fails with `ENOSYS` so that libc falls back to `clone`. The filter is
//! built for `AUDIT_ARCH_X86_64`: i386 entry points kill the process, and x32
//! syscall numbers (bit 30 set) match nothing in the allowlist.

use std::collections::BTreeMap;

use caps::{CapSet, Capability, CapsHashSet};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::spec::ContainerSpec;

/// The default capability set (Podman's).
pub const DEFAULT_CAPS: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SYS_CHROOT,
];

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("switching to uid {uid}, gid {gid}: {source}")]
    Identity {
        uid: u32,
        gid: u32,
        source: nix::Error,
    },
    #[error("dropping capability {cap} from the bounding set: {source}")]
    Bounding {
        cap: Capability,
        source: caps::errors::CapsError,
    },
    #[error("setting the {set:?} capability set: {source}")]
    SetCaps {
        set: CapSet,
        source: caps::errors::CapsError,
    },
    #[error("clearing the ambient capability set: {0}")]
    Ambient(caps::errors::CapsError),
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("building the seccomp filter: {0}")]
    Build(seccompiler::BackendError),
    #[error("loading the seccomp filter: {0}")]
    Load(seccompiler::Error),
}

/// The capabilities `spec` ends up with.
pub fn capabilities(spec: &ContainerSpec) -> CapsHashSet {
    let mut set: CapsHashSet = if spec.cap_drop_all {
        CapsHashSet::new()
    } else {
        DEFAULT_CAPS.iter().copied().collect()
    };
    for c in &spec.cap_drop {
        set.remove(c);
    }
    set.extend(spec.cap_add.iter().copied());
    set
}

/// Shrinks the bounding set to `keep`. Must run before the switch to the
/// container's user, while `CAP_SETPCAP` is still held.
pub fn limit_bounding_set(keep: &CapsHashSet) -> Result<(), SecurityError> {
    for cap in caps::all() {
        if !keep.contains(&cap) {
            match caps::drop(None, CapSet::Bounding, cap) {
                Ok(()) => {}
                // Capabilities newer than the running kernel are not in its set.
                Err(_) if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(true) => {}
                Err(source) => return Err(SecurityError::Bounding { cap, source }),
            }
        }
    }
    Ok(())
}

/// Sets effective and permitted to `keep` (empty for a non-root user, whose switch
/// already cleared them), empties inheritable and ambient, and sets `no_new_privs`.
pub fn set_capabilities(keep: &CapsHashSet, is_root: bool) -> Result<(), SecurityError> {
    let effective = if is_root {
        keep.clone()
    } else {
        CapsHashSet::new()
    };
    caps::clear(None, CapSet::Inheritable).map_err(|source| SecurityError::SetCaps {
        set: CapSet::Inheritable,
        source,
    })?;
    caps::clear(None, CapSet::Ambient).map_err(SecurityError::Ambient)?;
    // Effective must stay within permitted: narrow effective first, then permitted.
    for set in [CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &effective)
            .map_err(|source| SecurityError::SetCaps { set, source })?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(SecurityError::NoNewPrivs)
}

/// Syscalls allowed whatever the arguments (x86_64 names; see the module docs).
#[rustfmt::skip]
const ALLOWED: &[i64] = &[
    libc::SYS_accept, libc::SYS_accept4, libc::SYS_access, libc::SYS_adjtimex,
    libc::SYS_alarm, libc::SYS_arch_prctl, libc::SYS_bind, libc::SYS_brk,
    libc::SYS_capget, libc::SYS_capset, libc::SYS_chdir, libc::SYS_chmod, libc::SYS_chown,
    libc::SYS_chroot, libc::SYS_clock_getres, libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep, libc::SYS_close, libc::SYS_close_range, libc::SYS_connect,
    libc::SYS_copy_file_range, libc::SYS_creat, libc::SYS_dup, libc::SYS_dup2, libc::SYS_dup3,
    libc::SYS_epoll_create, libc::SYS_epoll_create1, libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait, libc::SYS_epoll_pwait2, libc::SYS_epoll_wait, libc::SYS_eventfd,
    libc::SYS_eventfd2, libc::SYS_execve, libc::SYS_execveat, libc::SYS_exit,
    libc::SYS_exit_group, libc::SYS_faccessat, libc::SYS_faccessat2, libc::SYS_fadvise64,
    libc::SYS_fallocate, libc::SYS_fanotify_mark, libc::SYS_fchdir, libc::SYS_fchmod,
    libc::SYS_fchmodat, libc::SYS_fchown, libc::SYS_fchownat, libc::SYS_fcntl,
    libc::SYS_fdatasync, libc::SYS_fgetxattr, libc::SYS_flistxattr, libc::SYS_flock,
    libc::SYS_fork, libc::SYS_fremovexattr, libc::SYS_fsetxattr, libc::SYS_fstat,
    libc::SYS_fstatfs, libc::SYS_fsync, libc::SYS_ftruncate, libc::SYS_futex,
    libc::SYS_futex_waitv, libc::SYS_futimesat, libc::SYS_getcpu, libc::SYS_getcwd,
    libc::SYS_getdents, libc::SYS_getdents64, libc::SYS_getegid, libc::SYS_geteuid,
    libc::SYS_getgid, libc::SYS_getgroups, libc::SYS_getitimer, libc::SYS_getpeername,
    libc::SYS_getpgid, libc::SYS_getpgrp, libc::SYS_getpid, libc::SYS_getppid,
    libc::SYS_getpriority, libc::SYS_getrandom, libc::SYS_getresgid, libc::SYS_getresuid,
    libc::SYS_getrlimit, libc::SYS_get_robust_list, libc::SYS_getrusage, libc::SYS_getsid,
    libc::SYS_getsockname, libc::SYS_getsockopt, libc::SYS_get_thread_area, libc::SYS_gettid,
    libc::SYS_gettimeofday, libc::SYS_getuid, libc::SYS_getxattr, libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init, libc::SYS_inotify_init1, libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel, libc::SYS_ioctl, libc::SYS_io_destroy, libc::SYS_io_getevents,
    libc::SYS_ioprio_get, libc::SYS_ioprio_set, libc::SYS_io_setup,
    libc::SYS_io_submit, libc::SYS_kill, libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset, libc::SYS_landlock_restrict_self, libc::SYS_lchown,
    libc::SYS_lgetxattr, libc::SYS_link, libc::SYS_linkat, libc::SYS_listen,
    libc::SYS_listxattr, libc::SYS_llistxattr, libc::SYS_lremovexattr, libc::SYS_lseek,
    libc::SYS_lsetxattr, libc::SYS_lstat, libc::SYS_madvise, libc::SYS_membarrier,
    libc::SYS_memfd_create, libc::SYS_mincore, libc::SYS_mkdir, libc::SYS_mkdirat,
    libc::SYS_mknod, libc::SYS_mknodat, libc::SYS_mlock, libc::SYS_mlock2, libc::SYS_mlockall,
    libc::SYS_mmap, libc::SYS_modify_ldt, libc::SYS_mprotect, libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify, libc::SYS_mq_open, libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend, libc::SYS_mq_unlink, libc::SYS_mremap, libc::SYS_msgctl,
    libc::SYS_msgget, libc::SYS_msgrcv, libc::SYS_msgsnd, libc::SYS_msync, libc::SYS_munlock,
    libc::SYS_munlockall, libc::SYS_munmap, libc::SYS_name_to_handle_at, libc::SYS_nanosleep,
    libc::SYS_newfstatat, libc::SYS_open, libc::SYS_openat, libc::SYS_openat2,
    libc::SYS_pause, libc::SYS_pidfd_open, libc::SYS_pidfd_send_signal, libc::SYS_pipe,
    libc::SYS_pipe2, libc::SYS_pkey_alloc, libc::SYS_pkey_free, libc::SYS_pkey_mprotect,
    libc::SYS_poll, libc::SYS_ppoll, libc::SYS_prctl, libc::SYS_pread64, libc::SYS_preadv,
    libc::SYS_preadv2, libc::SYS_prlimit64, libc::SYS_process_mrelease, libc::SYS_pselect6,
    libc::SYS_pwrite64, libc::SYS_pwritev, libc::SYS_pwritev2, libc::SYS_read,
    libc::SYS_readahead, libc::SYS_readlink, libc::SYS_readlinkat, libc::SYS_readv,
    libc::SYS_recvfrom, libc::SYS_recvmmsg, libc::SYS_recvmsg, libc::SYS_remap_file_pages,
    libc::SYS_removexattr, libc::SYS_rename, libc::SYS_renameat, libc::SYS_renameat2,
    libc::SYS_restart_syscall, libc::SYS_rmdir, libc::SYS_rseq, libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending, libc::SYS_rt_sigprocmask, libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn, libc::SYS_rt_sigsuspend, libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo, libc::SYS_sched_getaffinity, libc::SYS_sched_getattr,
    libc::SYS_sched_getparam, libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min, libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval, libc::SYS_sched_setaffinity, libc::SYS_sched_setattr,
    libc::SYS_sched_setparam, libc::SYS_sched_setscheduler, libc::SYS_sched_yield,
    libc::SYS_seccomp, libc::SYS_select, libc::SYS_semctl, libc::SYS_semget, libc::SYS_semop,
    libc::SYS_semtimedop, libc::SYS_sendfile, libc::SYS_sendmmsg, libc::SYS_sendmsg,
    libc::SYS_sendto, libc::SYS_setfsgid, libc::SYS_setfsuid, libc::SYS_setgid,
    libc::SYS_setgroups, libc::SYS_setitimer, libc::SYS_setpgid, libc::SYS_setpriority,
    libc::SYS_setregid, libc::SYS_setresgid, libc::SYS_setresuid, libc::SYS_setreuid,
    libc::SYS_setrlimit, libc::SYS_set_robust_list, libc::SYS_setsid, libc::SYS_setsockopt,
    libc::SYS_set_thread_area, libc::SYS_set_tid_address, libc::SYS_setuid,
    libc::SYS_setxattr, libc::SYS_shmat, libc::SYS_shmctl, libc::SYS_shmdt, libc::SYS_shmget,
    libc::SYS_shutdown, libc::SYS_sigaltstack, libc::SYS_signalfd, libc::SYS_signalfd4,
    libc::SYS_socketpair, libc::SYS_splice, libc::SYS_stat, libc::SYS_statfs, libc::SYS_statx,
    libc::SYS_symlink, libc::SYS_symlinkat, libc::SYS_sync, libc::SYS_sync_file_range,
    libc::SYS_syncfs, libc::SYS_sysinfo, libc::SYS_tee, libc::SYS_tgkill, libc::SYS_time,
    libc::SYS_timer_create, libc::SYS_timer_delete, libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime, libc::SYS_timer_settime, libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime, libc::SYS_timerfd_settime, libc::SYS_times, libc::SYS_tkill,
    libc::SYS_truncate, libc::SYS_umask, libc::SYS_uname, libc::SYS_unlink, libc::SYS_unlinkat,
    libc::SYS_utime, libc::SYS_utimensat, libc::SYS_utimes, libc::SYS_vfork, libc::SYS_vmsplice,
    libc::SYS_wait4, libc::SYS_waitid, libc::SYS_write, libc::SYS_writev,
];

/// Syscalls that an added capability brings with it, as in Docker's profile.
#[rustfmt::skip]
fn allowed_for(cap: Capability) -> &'static [i64] {
    match cap {
        Capability::CAP_SYS_ADMIN => &[
            libc::SYS_mount, libc::SYS_umount2, libc::SYS_unshare, libc::SYS_setns,
            libc::SYS_sethostname, libc::SYS_setdomainname, libc::SYS_pivot_root,
            libc::SYS_fsopen, libc::SYS_fsconfig, libc::SYS_fsmount, libc::SYS_fspick,
            libc::SYS_move_mount, libc::SYS_open_tree, libc::SYS_quotactl,
        ],
        Capability::CAP_SYS_PTRACE => &[
            libc::SYS_ptrace, libc::SYS_process_vm_readv, libc::SYS_process_vm_writev,
            libc::SYS_kcmp, libc::SYS_pidfd_getfd,
        ],
        Capability::CAP_SYS_TIME => &[libc::SYS_settimeofday, libc::SYS_clock_settime, libc::SYS_clock_adjtime],
        Capability::CAP_SYS_BOOT => &[libc::SYS_reboot],
        Capability::CAP_SYS_MODULE => &[libc::SYS_init_module, libc::SYS_finit_module, libc::SYS_delete_module],
        Capability::CAP_SYS_NICE => &[libc::SYS_get_mempolicy, libc::SYS_mbind, libc::SYS_set_mempolicy],
        Capability::CAP_SYSLOG => &[libc::SYS_syslog],
        _ => &[],
    }
}

const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `personality(2)` values Docker allows: the default, `UNAME26`, `ADDR_NO_RANDOMIZE`
/// and both, plus the query value.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SecurityError> {
    SeccompRule::new(conds).map_err(SecurityError::Build)
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SecurityError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(SecurityError::Build)
}

/// The two programs to load, in order: the allowlist, then the `clone3` → `ENOSYS`
/// filter. The kernel runs every filter and, for equal actions, the one loaded last
/// decides; so for `clone3` the second filter's `ENOSYS` wins over the first's
/// `EPERM`, and everything else is decided by the allowlist.
pub fn filters(caps: &CapsHashSet) -> Result<[BpfProgram; 2], SecurityError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in ALLOWED {
        rules.insert(*nr, Vec::new());
    }
    let sys_admin = caps.contains(&Capability::CAP_SYS_ADMIN);
    for cap in caps {
        for nr in allowed_for(*cap) {
            rules.insert(*nr, Vec::new());
        }
    }
    if !sys_admin {
        let no_ns = rule(vec![cond(0, SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS), 0)?])?;
        rules.insert(libc::SYS_clone, vec![no_ns]);
    } else {
        rules.insert(libc::SYS_clone, Vec::new());
    }
    let personality = PERSONALITIES
        .iter()
        .map(|v| rule(vec![cond(0, SeccompCmpOp::Eq, *v)?]))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_personality, personality);
    let not_vsock = rule(vec![cond(0, SeccompCmpOp::Ne, libc::AF_VSOCK as u64)?])?;
    rules.insert(libc::SYS_socket, vec![not_vsock]);

    let errno = |e: i32| SeccompAction::Errno(e as u32);
    let allowlist = SeccompFilter::new(
        rules,
        errno(libc::EPERM),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SecurityError::Build)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        errno(libc::ENOSYS),
        TargetArch::x86_64,
    )
    .map_err(SecurityError::Build)?;
    Ok([
        allowlist.try_into().map_err(SecurityError::Build)?,
        clone3.try_into().map_err(SecurityError::Build)?,
    ])
}

/// Drops to `uid`/`gid` with supplementary `groups`, keeping only the capabilities in
/// `keep`: the bounding set first (it needs CAP_SETPCAP), then the ids, then the
/// remaining sets and `no_new_privs`. What the container's program and a command run
/// inside it later (a health check) both go through.
pub fn become_user(
    keep: &CapsHashSet,
    uid: u32,
    gid: u32,
    groups: &[u32],
) -> Result<(), SecurityError> {
    use nix::unistd::{Gid, Uid};
    limit_bounding_set(keep)?;
    let id_err = |source| SecurityError::Identity { uid, gid, source };
    let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(id_err)?;
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    nix::unistd::setresgid(g, g, g).map_err(id_err)?;
    nix::unistd::setresuid(u, u, u).map_err(id_err)?;
    set_capabilities(keep, uid == 0)
}

/// Loads the programs from [`filters`]; `no_new_privs` must already be set.
pub fn load_filters(programs: &[BpfProgram; 2]) -> Result<(), SecurityError> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(SecurityError::Load)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_within_dockers() {
        let docker = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ];
        for c in DEFAULT_CAPS {
            assert!(docker.contains(&c.to_string().as_str()), "{c}");
        }
        assert!(!DEFAULT_CAPS.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!DEFAULT_CAPS.contains(&Capability::CAP_MKNOD));
    }

    #[test]
    fn add_and_drop() {
        let mut spec = ContainerSpec::new("t", "i").unwrap();
        spec.cap_add = vec![Capability::CAP_NET_ADMIN];
        spec.cap_drop = vec![Capability::CAP_CHOWN];
        let set = capabilities(&spec);
        assert!(set.contains(&Capability::CAP_NET_ADMIN));
        assert!(!set.contains(&Capability::CAP_CHOWN));
        spec.cap_drop_all = true;
        assert_eq!(
            capabilities(&spec),
            [Capability::CAP_NET_ADMIN].into_iter().collect()
        );
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed_by_default() {
        for nr in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_bpf,
            libc::SYS_ptrace,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_reboot,
            libc::SYS_io_uring_setup,
            libc::SYS_userfaultfd,
            libc::SYS_perf_event_open,
            libc::SYS_open_by_handle_at,
            libc::SYS_pivot_root,
            libc::SYS_swapon,
            libc::SYS_clone3,
            libc::SYS_socket,
            libc::SYS_clone,
            libc::SYS_personality,
        ] {
            assert!(!ALLOWED.contains(&nr), "{nr}");
        }
        assert!(filters(&DEFAULT_CAPS.iter().copied().collect()).is_ok());
    }
}
