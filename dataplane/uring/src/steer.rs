//! Connection steering: a classic BPF program on an SO_REUSEPORT group that picks the listening
//! socket whose index equals the CPU the packet was received on (SO_ATTACH_REUSEPORT_CBPF).
//! With worker `i` pinned to CPU `i` and its socket the `i`-th to join the group, a connection is
//! accepted on the core whose NIC queue (RSS/RPS) delivered it, so its cache lines stay there.
//! [`incoming_napi_id`] tells which queue a connection's packets come from.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SKF_AD_OFF + SKF_AD_CPU`: the ancillary load that yields the current CPU.
const SKF_AD_CPU_OFFSET: u32 = (-0x1000i32 + 36) as u32;

/// Attaches the "socket index = current CPU" program to the reuseport group `listener` is in.
/// The kernel takes the index modulo the group size.
pub fn steer_to_cpu(listener: BorrowedFd<'_>) -> io::Result<()> {
    let mut program = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: SKF_AD_CPU_OFFSET,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_A) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` and the program it points to live on this stack frame for the whole call;
    // the kernel copies the program during setsockopt and keeps no pointer to it. The fd is
    // borrowed, so it is open for the call.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The NAPI instance (NIC receive queue) that last delivered a packet to `sock`
/// (SO_INCOMING_NAPI_ID); 0 when none has (loopback, or a driver without NAPI ids).
pub fn incoming_napi_id(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut id: libc::c_uint = 0;
    let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
    // SAFETY: `id` and `len` live on this stack frame for the call and `len` is their size; the
    // kernel writes at most `len` bytes into `id`. The fd is borrowed, so it is open.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_INCOMING_NAPI_ID,
            (&mut id as *mut libc::c_uint).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(id)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes written to stream socket `sock` that its peer has not acknowledged yet (SIOCOUTQ):
/// closing it with unread input would reset the connection and drop them.
pub fn unsent_bytes(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on sockets) writes one int through the pointer, which points at
    // `n` on this stack frame for the call. The fd is borrowed, so it is open.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if rc == 0 {
        Ok(u32::try_from(n).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}
