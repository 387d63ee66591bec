//! Kernel receive timestamps on TCP sockets (`SO_TIMESTAMPNS`): the fan-out
//! measurement takes the time the notify bytes reached the miner's socket,
//! not the time this one-thread generator got round to reading them.
//!
//! Through libc: rustix 1.1 has neither the socket option nor a parser for
//! the `SCM_TIMESTAMPNS` control message of `recvmsg`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Control-message buffer: room for one timestamp and then some, 8-aligned.
const CONTROL_WORDS: usize = 16;

/// Asks the kernel to stamp what `fd` receives with CLOCK_REALTIME.
pub fn enable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to an int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One non-blocking `recvmsg` into `buf`: the bytes read and the kernel
/// receive time (ns since the epoch, CLOCK_REALTIME) of the last segment
/// read, if the kernel sent one.
pub fn recv(fd: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Option<i64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: msg points at iov (covering buf) and control, both live here.
    let n = unsafe { libc::recvmsg(fd.as_fd().as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG
    // macros stay inside it, and the payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
}
