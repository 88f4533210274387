//! The seccomp filter every container process runs under.
//!
//! An allowlist modelled on Docker's default profile
//! (`moby/moby:profiles/seccomp/default.json`) for x86_64, and stricter: no `ptrace`
//! family unless `SYS_PTRACE` is added, no `io_uring`, and `socket` refuses
//! `AF_VSOCK`. Anything not allowed fails with `EPERM`. `clone` is allowed only
//! without namespace flags; `clone3`, whose flags live in memory the filter cannot
//! read, fails with `ENOSYS` so that libc falls back to `clone`. The filter is
//! built for `AUDIT_ARCH_X86_64`: i386 entry points kill the process, and x32
//! syscall numbers (bit 30 set) match nothing in the allowlist.
//!
//! The filter is compiled here rather than by a generic seccomp library, because
//! those emit one test per syscall: about 1,500 instructions for this list, which the
//! kernel converts and JIT-compiles at every container start and walks linearly for
//! every syscall that its constant-action cache does not cover. Here the allowed
//! numbers are merged into ranges and searched as a balanced tree: about 200
//! instructions (seccompiler's build of the same list: 1,482), of which a syscall
//! runs about 20. The tests run the program
//! in a small BPF interpreter against the list for every syscall number.
//!
//! ```text
//! arch != x86_64            → kill process
//! clone     (no SYS_ADMIN)  → allow unless a CLONE_NEW* flag is set, else EPERM
//! personality               → allow the listed values only
//! socket                    → allow unless AF_VSOCK
//! clone3                    → ENOSYS
//! anything else             → range tree: allow, or EPERM
//! ```

use std::collections::BTreeSet;

use caps::{Capability, CapsHashSet};

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
// `personality_block` jumps over the remaining tests with an 8-bit offset.
const _: () = assert!(PERSONALITIES.len() < 256);

/// `AUDIT_ARCH_X86_64` (linux/audit.h): `EM_X86_64` | 64-bit | little-endian.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Offsets into `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low and high 32-bit words of `args[0]` (little-endian).
const DATA_ARG0_LO: u32 = 16;
const DATA_ARG0_HI: u32 = 20;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const fn ret_errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}
const RET_EPERM: u32 = ret_errno(libc::EPERM);

/// A classic BPF program for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program(pub Vec<libc::sock_filter>);

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(op: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn load(offset: u32) -> libc::sock_filter {
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn ret(action: u32) -> libc::sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, action)
}

/// The syscalls allowed whatever their arguments, for a container with `caps`.
fn allowed_numbers(caps: &CapsHashSet) -> BTreeSet<u32> {
    let mut set: BTreeSet<u32> = ALLOWED.iter().map(|n| *n as u32).collect();
    for cap in caps {
        set.extend(allowed_for(*cap).iter().map(|n| *n as u32));
    }
    if caps.contains(&Capability::CAP_SYS_ADMIN) {
        set.insert(libc::SYS_clone as u32);
    }
    set
}

/// Maximal runs of consecutive numbers, as inclusive `(first, last)` pairs.
fn ranges(numbers: &BTreeSet<u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &n in numbers {
        match out.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(n) => *last = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// A search tree over sorted, disjoint `ranges` (the syscall number is in the
/// accumulator): allow inside any, EPERM outside all. Each node is
///
/// ```text
///     jgt  last    → next, else skip 1     (above this range: go right)
///     ja   RIGHT
///     jge  first   → next, else skip 1
///     ret  ALLOW
///     LEFT…
///     RIGHT…
/// ```
///
/// `ja` takes a 32-bit offset, so subtrees of any size can be jumped over.
fn range_tree(ranges: &[(u32, u32)], out: &mut Vec<libc::sock_filter>) {
    let mid = ranges.len() / 2;
    let Some(&(first, last)) = ranges.get(mid) else {
        out.push(ret(RET_EPERM));
        return;
    };
    out.push(jump(libc::BPF_JGT, last, 0, 1));
    let ja_at = out.len();
    out.push(stmt(libc::BPF_JMP | libc::BPF_JA, 0));
    out.push(jump(libc::BPF_JGE, first, 0, 1));
    out.push(ret(RET_ALLOW));
    range_tree(&ranges[..mid], out);
    // The offset counts from the instruction after the `ja`.
    out[ja_at].k = (out.len() - ja_at - 1) as u32;
    range_tree(&ranges[mid + 1..], out);
}

/// Compiles the filter for a container that keeps `caps`.
pub fn compile(caps: &CapsHashSet) -> Program {
    let mut p = vec![
        load(DATA_ARCH),
        jump(libc::BPF_JEQ, AUDIT_ARCH_X86_64, 1, 0),
        ret(RET_KILL),
        load(DATA_NR),
    ];
    // Syscalls decided by their first argument: each block is entered with the
    // number in the accumulator and leaves through a return.
    let mut special: Vec<(u32, Vec<libc::sock_filter>)> = vec![
        (libc::SYS_personality as u32, personality_block()),
        (
            libc::SYS_socket as u32,
            vec![
                // Allowed unless the family is AF_VSOCK. The kernel takes `family` as
                // an int, so only the low word counts: a high word set must not let
                // AF_VSOCK through (seccompiler's 64-bit comparison does).
                load(DATA_ARG0_LO),
                jump(libc::BPF_JEQ, libc::AF_VSOCK as u32, 0, 1),
                ret(RET_EPERM),
                ret(RET_ALLOW),
            ],
        ),
        (libc::SYS_clone3 as u32, vec![ret(ret_errno(libc::ENOSYS))]),
    ];
    if !caps.contains(&Capability::CAP_SYS_ADMIN) {
        // The namespace flags all sit in the low word of the flags argument.
        special.push((
            libc::SYS_clone as u32,
            vec![
                load(DATA_ARG0_LO),
                jump(libc::BPF_JSET, NAMESPACE_FLAGS as u32, 0, 1),
                ret(RET_EPERM),
                ret(RET_ALLOW),
            ],
        ));
    }
    // A chain of `jeq NR; ja its block` pairs (a `ja` takes a 32-bit offset where a
    // `jeq` target is 8 bits, so no block is ever out of reach); each block follows
    // the chain in order.
    let chain_len = special.len();
    let mut offset = 0u32;
    for (i, (nr, block)) in special.iter().enumerate() {
        // From the instruction after this `ja` to the block: the rest of the chain,
        // the `ja` over the blocks, then the earlier blocks.
        let rest_of_chain = 2 * (chain_len - i - 1) as u32;
        p.push(jump(libc::BPF_JEQ, *nr, 0, 1));
        p.push(stmt(
            libc::BPF_JMP | libc::BPF_JA,
            rest_of_chain + 1 + offset,
        ));
        offset += block.len() as u32;
    }
    p.push(stmt(libc::BPF_JMP | libc::BPF_JA, offset));
    for (_, block) in &special {
        p.extend_from_slice(block);
    }
    let allowed: BTreeSet<u32> = allowed_numbers(caps)
        .into_iter()
        .filter(|n| !special.iter().any(|(s, _)| s == n))
        .collect();
    range_tree(&ranges(&allowed), &mut p);
    Program(p)
}

fn personality_block() -> Vec<libc::sock_filter> {
    // Allowed when args[0] (64 bits) is one of PERSONALITIES, all of which fit in
    // the low word.
    let mut b = vec![
        load(DATA_ARG0_HI),
        jump(libc::BPF_JEQ, 0, 1, 0),
        ret(RET_EPERM),
        load(DATA_ARG0_LO),
    ];
    let n = PERSONALITIES.len();
    for (i, v) in PERSONALITIES.iter().enumerate() {
        // Match: jump over the remaining tests and the EPERM to the ALLOW.
        b.push(jump(libc::BPF_JEQ, *v as u32, (n - i) as u8, 0));
    }
    b.push(ret(RET_EPERM));
    b.push(ret(RET_ALLOW));
    b
}

/// Loads `program` for the calling thread; `no_new_privs` must already be set.
pub fn load_filter(program: &Program) -> std::io::Result<()> {
    crate::sys::seccomp_set_filter(&program.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` on one `struct seccomp_data`, for the instructions
    /// [`compile`] emits (and the ones seccompiler emits, for the comparison).
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let word = |k: u32| match k {
            DATA_NR => nr,
            DATA_ARCH => arch,
            DATA_ARG0_LO => arg0 as u32,
            DATA_ARG0_HI => (arg0 >> 32) as u32,
            _ => 0,
        };
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = program[pc];
            let code = u32::from(i.code);
            pc += 1;
            let class = code & 0x07;
            if class == libc::BPF_LD {
                assert_eq!(code, libc::BPF_LD | libc::BPF_W | libc::BPF_ABS);
                acc = word(i.k);
            } else if class == libc::BPF_RET {
                return i.k;
            } else if class == libc::BPF_ALU {
                assert_eq!(code, libc::BPF_ALU | libc::BPF_AND | libc::BPF_K);
                acc &= i.k;
            } else if class == libc::BPF_JMP {
                let op = code & 0xf0;
                if op == libc::BPF_JA {
                    pc += i.k as usize;
                    continue;
                }
                let taken = match op {
                    libc::BPF_JEQ => acc == i.k,
                    libc::BPF_JGT => acc > i.k,
                    libc::BPF_JGE => acc >= i.k,
                    libc::BPF_JSET => acc & i.k != 0,
                    other => panic!("jump op {other:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            } else {
                panic!("instruction class {class:#x}");
            }
        }
    }

    /// What the filter must decide, from the lists alone.
    fn expected(caps: &CapsHashSet, nr: u32, arg0: u64) -> u32 {
        let sys_admin = caps.contains(&Capability::CAP_SYS_ADMIN);
        match i64::from(nr) {
            libc::SYS_clone3 => ret_errno(libc::ENOSYS),
            libc::SYS_clone if !sys_admin && arg0 & NAMESPACE_FLAGS != 0 => RET_EPERM,
            libc::SYS_clone => RET_ALLOW,
            libc::SYS_personality if PERSONALITIES.contains(&arg0) => RET_ALLOW,
            libc::SYS_personality => RET_EPERM,
            libc::SYS_socket if arg0 as u32 == libc::AF_VSOCK as u32 => RET_EPERM,
            libc::SYS_socket => RET_ALLOW,
            _ if allowed_numbers(caps).contains(&nr) => RET_ALLOW,
            _ => RET_EPERM,
        }
    }

    const ARGS: &[u64] = &[
        0,
        8,
        0x20000,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0008,
        40,
        0x1_0000_0028,
        libc::AF_INET as u64,
        libc::CLONE_NEWNET as u64,
        libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64,
        (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD) as u64,
        u64::MAX,
    ];

    fn cap_sets() -> Vec<CapsHashSet> {
        let default: CapsHashSet = crate::security::DEFAULT_CAPS.iter().copied().collect();
        let mut all = default.clone();
        all.extend([
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_SYS_PTRACE,
            Capability::CAP_SYS_TIME,
            Capability::CAP_SYS_BOOT,
            Capability::CAP_SYS_MODULE,
            Capability::CAP_SYS_NICE,
            Capability::CAP_SYSLOG,
        ]);
        vec![default, all, CapsHashSet::new()]
    }

    #[test]
    fn every_syscall_number_gets_the_listed_decision() {
        for caps in cap_sets() {
            let program = compile(&caps);
            assert!(program.0.len() < 400, "{} instructions", program.0.len());
            for nr in (0..1100).chain([0x4000_0000, 0x4000_0038, 0x4000_0001, u32::MAX]) {
                for &arg0 in ARGS {
                    assert_eq!(
                        run(&program.0, AUDIT_ARCH_X86_64, nr, arg0),
                        expected(&caps, nr, arg0),
                        "syscall {nr} arg0 {arg0:#x} caps {caps:?}"
                    );
                }
            }
            // i386 (and any other architecture) is killed, whatever the number.
            for arch in [0x4000_0003, 0xc000_00b7, 0] {
                assert_eq!(run(&program.0, arch, libc::SYS_read as u32, 0), RET_KILL);
            }
        }
    }

    /// The same decisions as the filter seccompiler builds from the same lists (the
    /// linear program this module replaced), but for `socket` with bits set above
    /// the 32-bit family, where this filter is the stricter one.
    #[test]
    fn agrees_with_seccompiler() {
        for caps in cap_sets() {
            let ours = compile(&caps);
            let theirs = reference::filters(&caps);
            for nr in 0..600u32 {
                for &arg0 in ARGS {
                    if i64::from(nr) == libc::SYS_socket && arg0 >> 32 != 0 {
                        continue;
                    }
                    let t = theirs
                        .iter()
                        .map(|p| run(p, AUDIT_ARCH_X86_64, nr, arg0))
                        // Of equal precedence the later filter decides; ERRNO's
                        // precedence is below KILL and above ALLOW.
                        .reduce(|a, b| if precedence(b) >= precedence(a) { b } else { a })
                        .unwrap();
                    assert_eq!(
                        run(&ours.0, AUDIT_ARCH_X86_64, nr, arg0),
                        t,
                        "syscall {nr} arg0 {arg0:#x}"
                    );
                }
            }
        }
    }

    /// How the kernel ranks the actions of several filters (the later one wins a tie).
    fn precedence(action: u32) -> u8 {
        match action & !libc::SECCOMP_RET_DATA {
            RET_KILL => 3,
            libc::SECCOMP_RET_ERRNO => 2,
            _ => 1,
        }
    }

    #[test]
    fn ranges_merge_neighbours() {
        let set: BTreeSet<u32> = [1, 2, 3, 5, 7, 8].into_iter().collect();
        assert_eq!(ranges(&set), [(1, 3), (5, 5), (7, 8)]);
        assert_eq!(ranges(&BTreeSet::new()), []);
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
        let caps: CapsHashSet = crate::security::DEFAULT_CAPS.iter().copied().collect();
        let program = compile(&caps);
        assert_eq!(
            run(&program.0, AUDIT_ARCH_X86_64, libc::SYS_mount as u32, 0),
            RET_EPERM
        );
    }

    /// seccompiler's build of the same lists, for [`agrees_with_seccompiler`].
    mod reference {
        use std::collections::BTreeMap;

        use caps::{Capability, CapsHashSet};
        use seccompiler::{
            SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
            SeccompRule, TargetArch,
        };

        use super::super::*;

        fn rule(conds: Vec<SeccompCondition>) -> SeccompRule {
            SeccompRule::new(conds).unwrap()
        }

        fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
            SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).unwrap()
        }

        /// The two programs to load, in order: the allowlist, then the `clone3` → `ENOSYS`
        /// filter. The kernel runs every filter and, for equal actions, the one loaded last
        /// decides; so for `clone3` the second filter's `ENOSYS` wins over the first's
        /// `EPERM`, and everything else is decided by the allowlist.
        pub fn filters(caps: &CapsHashSet) -> [Vec<libc::sock_filter>; 2] {
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
                let no_ns = rule(vec![cond(0, SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS), 0)]);
                rules.insert(libc::SYS_clone, vec![no_ns]);
            } else {
                rules.insert(libc::SYS_clone, Vec::new());
            }
            let personality = PERSONALITIES
                .iter()
                .map(|v| rule(vec![cond(0, SeccompCmpOp::Eq, *v)]))
                .collect::<Vec<_>>();
            rules.insert(libc::SYS_personality, personality);
            let not_vsock = rule(vec![cond(0, SeccompCmpOp::Ne, libc::AF_VSOCK as u64)]);
            rules.insert(libc::SYS_socket, vec![not_vsock]);

            let errno = |e: i32| SeccompAction::Errno(e as u32);
            let allowlist = SeccompFilter::new(
                rules,
                errno(libc::EPERM),
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
            .unwrap();
            let clone3 = SeccompFilter::new(
                BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
                SeccompAction::Allow,
                errno(libc::ENOSYS),
                TargetArch::x86_64,
            )
            .unwrap();
            let program = |f: SeccompFilter| -> Vec<libc::sock_filter> {
                let bpf: seccompiler::BpfProgram = f.try_into().unwrap();
                bpf.iter()
                    .map(|i| libc::sock_filter {
                        code: i.code,
                        jt: i.jt,
                        jf: i.jf,
                        k: i.k,
                    })
                    .collect()
            };
            [program(allowlist), program(clone3)]
        }
    }
}
