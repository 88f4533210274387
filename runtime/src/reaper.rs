//! `init = true`: a minimal PID 1 inside the container (what `docker run --init`
//! gives). It forwards every signal it receives to the container's program, reaps
//! orphans, and exits with the program's status. It runs with all of the
//! container's restrictions already applied, and non-dumpable, so its executable
//! cannot be opened through `/proc/1/exe` from inside.

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub fn run(main: Pid) -> ! {
    let all = SigSet::all();
    let _ = all.thread_block();
    loop {
        match all.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    match status {
                        WaitStatus::Exited(pid, code) if pid == main => crate::sys::exit_now(code),
                        WaitStatus::Signaled(pid, sig, _) if pid == main => {
                            crate::sys::exit_now(128 + sig as i32)
                        }
                        WaitStatus::StillAlive => break,
                        _ => {}
                    }
                }
            }
            Ok(sig) => {
                let _ = kill(main, sig);
            }
            Err(_) => {}
        }
    }
}
