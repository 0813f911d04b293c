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

/// Open a new pseudo-terminal from `/dev/ptmx` of the calling process's
/// mount namespace; returns the master and the path of its slave.
pub fn open_pty() -> io::Result<(std::os::fd::OwnedFd, std::path::PathBuf)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: posix_openpt takes only flags; the returned fd is checked and
    // owned at once.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: grantpt/unlockpt take a valid pty master descriptor.
    if unsafe { libc::grantpt(fd) } != 0 || unsafe { libc::unlockpt(fd) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: `buf` is writable for `buf.len()` bytes and outlives the call;
    // ptsname_r NUL-terminates what it writes.
    let rc = unsafe { libc::ptsname_r(fd, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: ptsname_r succeeded, so `buf` holds a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok((
        master,
        std::path::PathBuf::from(name.to_string_lossy().into_owned()),
    ))
}

/// Set the window size of the terminal `fd` (`TIOCSWINSZ`).
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `size` is a valid winsize that outlives the call; the ioctl
    // only reads it.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ as _, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make terminal `fd` the controlling terminal of the calling process (a
/// session leader), `TIOCSCTTY`.
pub fn set_controlling_terminal(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSCTTY takes an integer argument and touches no memory.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY as _, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Own descriptor `fd`, which the caller just created (`F_DUPFD`) and which
/// nothing else owns.
pub fn own_fresh_fd(fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller guarantees `fd` is open and owned by nobody else.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}
