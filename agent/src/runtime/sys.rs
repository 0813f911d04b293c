//! The few kernel calls that `nix` does not wrap. Every `unsafe` block in the
//! agent lives here, each with its `SAFETY:` argument.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;

/// `lsetxattr(2)`.
pub fn lsetxattr(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `path` and `name` are NUL-terminated C strings that live for the
    // call; `value` is a valid slice whose pointer and length are passed
    // together. The call does not retain any pointer.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Brings the loopback interface of the calling thread's network namespace
/// up (`SIOCGIFFLAGS` / `SIOCSIFFLAGS` on an `AF_INET` datagram socket).
pub fn loopback_up() -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2) call with constant arguments; the returned fd
    // is checked and immediately owned by an `OwnedFd`.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifreq` is a plain C struct for which all-zero bytes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid, initialised `ifreq` that outlives the call;
    // SIOCGIFFLAGS writes only into it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the flags member of the union is the active one.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads the name and flags from `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fork(2)` for the single-threaded shim.
///
/// Only call this from a process that has exactly one thread (the shim, right
/// after `main` starts): the child of a multi-threaded process may deadlock
/// on locks held by threads that do not exist in it.
pub fn fork_single_threaded() -> io::Result<nix::unistd::ForkResult> {
    debug_assert!(thread_count().map(|n| n == 1).unwrap_or(true));
    // SAFETY: the caller guarantees the process is single-threaded, so the
    // child gets a consistent copy of every lock and allocator state.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Number of threads of this process, from `/proc/self/status`.
pub fn thread_count() -> Option<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}
