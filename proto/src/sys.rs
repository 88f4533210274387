//! The raw system calls of the protocol: `recvmsg(2)` with its control messages parsed
//! here, and taking ownership of an inherited descriptor.
//!
//! `nix::sys::socket::recvmsg` refuses to walk control messages when the kernel set
//! `MSG_CTRUNC`, yet the kernel has by then installed every descriptor that fit: they
//! would leak. Parsing them here, every descriptor the kernel installed becomes an
//! [`OwnedFd`] and is closed if the message is then refused.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What one `recvmsg` returned.
#[derive(Debug)]
pub struct RawMessage {
    /// Bytes written into the buffer (0 with `eof` at the end of the stream).
    pub len: usize,
    /// The message was longer than the buffer (`MSG_TRUNC`): its tail is lost.
    pub truncated: bool,
    /// More descriptors came than the control buffer holds (`MSG_CTRUNC`): the kernel
    /// closed the ones that did not fit.
    pub fds_truncated: bool,
    /// The descriptors that did arrive, in order.
    pub fds: Vec<OwnedFd>,
    /// The peer has closed its end (a zero-length read on a `SOCK_SEQPACKET` socket).
    pub eof: bool,
}

/// Bytes of control buffer for `max_fds` descriptors, in `u64`s so that the buffer has
/// `cmsghdr`'s alignment.
fn control_words(max_fds: usize) -> usize {
    let fd_bytes = (max_fds * size_of::<libc::c_int>()) as libc::c_uint;
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    let bytes = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    bytes.div_ceil(size_of::<u64>())
}

/// One `recvmsg` on `fd` into `buf`, taking up to `max_fds` descriptors (close-on-exec).
/// `flags` are added to `MSG_CMSG_CLOEXEC` (for example `MSG_DONTWAIT`).
pub fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    flags: libc::c_int,
) -> io::Result<RawMessage> {
    let mut control = vec![0u64; control_words(max_fds)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut header: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = control.len() * size_of::<u64>();
    // SAFETY: header points at one iovec over `buf` and at `control`, both alive and
    // writable for the call and sized as the header says.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC | flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let fds = take_fds(&header);
    Ok(RawMessage {
        len: n as usize,
        truncated: header.msg_flags & libc::MSG_TRUNC != 0,
        fds_truncated: header.msg_flags & libc::MSG_CTRUNC != 0,
        fds,
        eof: n == 0 && header.msg_controllen == 0,
    })
}

/// Every `SCM_RIGHTS` descriptor in the control messages `recvmsg` filled in.
fn take_fds(header: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: `header` was filled in by a successful recvmsg: msg_control and
    // msg_controllen describe the control messages the kernel wrote, which the CMSG_*
    // macros walk without reading past msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(header) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR returned a non-null pointer to a complete
        // cmsghdr inside the control buffer.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN only computes a size.
            let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(header_len) / size_of::<libc::c_int>();
            // SAFETY: the kernel wrote `count` ints after this cmsghdr (cmsg_len says so).
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<libc::c_int>();
            for i in 0..count {
                // SAFETY: i < count, inside the data; the data may be unaligned for c_int.
                let raw = unsafe { data.add(i).read_unaligned() };
                // SAFETY: the kernel just installed `raw` in this process for this message;
                // nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR: walks within the control buffer, null at its end.
        cmsg = unsafe { libc::CMSG_NXTHDR(header, cmsg) };
    }
    fds
}

/// Takes ownership of descriptor `raw`, inherited from the parent process, after checking
/// that it is open. Close-on-exec is set, so that it goes no further.
pub fn adopt_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; an unknown fd gives EBADF.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this process by its
    // parent for exactly this use; this is its only owner from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(fd)
}
