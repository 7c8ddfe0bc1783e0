//! A socket address in the kernel's layout, for connect SQEs. Lives boxed in the in-flight entry
//! of the connect that names it (I1) and is reused afterwards.

use std::net::SocketAddr;

/// `sockaddr_in` or `sockaddr_in6`, whichever the address needs.
pub(crate) struct SockAddr {
    storage: libc::sockaddr_in6,
    len: libc::socklen_t,
}

impl Default for SockAddr {
    fn default() -> SockAddr {
        SockAddr {
            storage: libc::sockaddr_in6 {
                sin6_family: 0,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
                sin6_scope_id: 0,
            },
            len: 0,
        }
    }
}

impl SockAddr {
    pub(crate) fn set(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(v4) => {
                // sockaddr_in laid over the front of sockaddr_in6: family, port, 4 address bytes.
                self.storage = SockAddr::default().storage;
                self.storage.sin6_family = libc::AF_INET as libc::sa_family_t;
                self.storage.sin6_port = v4.port().to_be();
                let o = v4.ip().octets();
                self.storage.sin6_flowinfo = u32::from_ne_bytes(o);
                self.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(v6) => {
                self.storage = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                self.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
    }

    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_in6).cast()
    }

    pub(crate) fn len(&self) -> libc::socklen_t {
        self.len
    }
}
