//! Batched datagram I/O on Linux: `recvmmsg` takes up to [`BATCH`]
//! datagrams in one system call and `sendmmsg` sends the answers in one
//! more, instead of two calls per datagram. Under load the socket queue
//! holds several datagrams per wake-up, and the calls are most of the cost
//! of a small request.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub(super) const BATCH: usize = 32;
/// Bytes kept of each datagram: more than any request the tracker answers
/// (2,048), so a longer one is still seen as too long, never as a shorter
/// valid one.
const SLOT: usize = 4096;

/// Receive buffers for one batch, and where each datagram came from.
pub(super) struct RecvBatch {
    bufs: Box<[[u8; SLOT]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    lens: [usize; BATCH],
}

impl RecvBatch {
    pub fn new() -> Self {
        Self {
            bufs: vec![[0u8; SLOT]; BATCH].into_boxed_slice(),
            // SAFETY: sockaddr_storage is plain data; all zeros is valid.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            lens: [0; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams without waiting; how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // The headers point into `self`'s boxed buffers, which do not move;
        // they are built per call so nothing here is self-referential.
        let mut iovecs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: SLOT,
        });
        // SAFETY: mmsghdr is plain data; all zeros is valid (null pointers,
        // zero lengths), and every field read by the kernel is set below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, msg) in msgs.iter_mut().enumerate() {
            msg.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_hdr.msg_iov = &raw mut iovecs[i];
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH valid headers whose name and iovec
        // pointers refer to live buffers of the stated sizes for the whole
        // call; the kernel writes at most that much into each.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (len, msg) in self.lens.iter_mut().zip(&msgs[..n]) {
            *len = (msg.msg_len as usize).min(SLOT);
        }
        Ok(n)
    }

    /// Datagram `i` of the last batch and its source, if the source is an
    /// IP address.
    pub fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let from = to_socket_addr(&self.addrs[i])?;
        Some((&self.bufs[i][..self.lens[i]], from))
    }
}

/// Answers gathered for one `sendmmsg`: their bytes back to back, where
/// each ends, and where each goes.
pub(super) struct SendBatch {
    pub bytes: Vec<u8>,
    ends: Vec<usize>,
    to: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    /// Answers already sent from the front.
    sent: usize,
}

impl SendBatch {
    pub fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(BATCH * 512),
            ends: Vec::with_capacity(BATCH),
            to: Vec::with_capacity(BATCH),
            sent: 0,
        }
    }

    /// Marks what was appended to `bytes` since the last answer as one
    /// answer to `to` (nothing appended: no answer).
    pub fn push(&mut self, to: SocketAddr) {
        let start = self.ends.last().copied().unwrap_or(0);
        if self.bytes.len() > start {
            self.ends.push(self.bytes.len());
            self.to.push(from_socket_addr(to));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sent == self.ends.len()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.to.clear();
        self.sent = 0;
    }

    /// Sends what is left without waiting; `WouldBlock` when the socket
    /// buffer is full (what was sent is remembered).
    pub fn send(&mut self, fd: RawFd) -> io::Result<()> {
        while !self.is_empty() {
            let first = self.sent;
            let count = self.ends.len() - first;
            let mut iovecs: Vec<libc::iovec> = (first..self.ends.len())
                .map(|i| {
                    let start = if i == 0 { 0 } else { self.ends[i - 1] };
                    libc::iovec {
                        iov_base: self.bytes[start..].as_ptr().cast_mut().cast(),
                        iov_len: self.ends[i] - start,
                    }
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = (0..count)
                .map(|k| {
                    // SAFETY: plain data; all zeros is valid.
                    let mut msg: libc::mmsghdr = unsafe { zeroed() };
                    let (addr, len) = &mut self.to[first + k];
                    msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                    msg.msg_hdr.msg_namelen = *len;
                    msg.msg_hdr.msg_iov = &raw mut iovecs[k];
                    msg.msg_hdr.msg_iovlen = 1;
                    msg
                })
                .collect();
            // SAFETY: `count` headers, each naming a live address of the
            // stated length and one iovec over live bytes of `self.bytes`;
            // the kernel only reads them (and writes msg_len).
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            match usize::try_from(n) {
                Ok(n) => self.sent += n.max(1).min(count),
                Err(_) => {
                    let error = io::Error::last_os_error();
                    if error.kind() == io::ErrorKind::WouldBlock {
                        return Err(error);
                    }
                    // The first answer failed (an unreachable address, say):
                    // drop it and go on with the rest.
                    tracing::debug!(%error, "UDP send failed");
                    self.sent += 1;
                }
            }
        }
        Ok(())
    }
}

fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // it is large and aligned enough for.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn from_socket_addr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: plain data; all zeros is valid.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a
            // sockaddr_in; the write covers only that prefix.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn addresses_survive_the_round_trip_through_sockaddr() {
        for text in [
            "127.0.0.1:6969",
            "[::1]:1",
            "[2001:db8::7]:65535",
            "0.0.0.0:0",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let (storage, _) = from_socket_addr(addr);
            assert_eq!(to_socket_addr(&storage), Some(addr));
        }
    }

    #[test]
    fn a_batch_of_datagrams_is_received_and_answered_in_two_calls() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        for i in 0..5u8 {
            client
                .send_to(&[i; 3], server.local_addr().unwrap())
                .unwrap();
        }
        // A long datagram is kept to the slot's length, never wrapped.
        client
            .send_to(&[9u8; 5000], server.local_addr().unwrap())
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 6);
        let mut answers = SendBatch::new();
        for i in 0..6 {
            let (datagram, from) = batch.datagram(i).unwrap();
            assert_eq!(from, client.local_addr().unwrap());
            if i < 5 {
                assert_eq!(datagram, [i as u8; 3]);
                answers.bytes.extend_from_slice(&[i as u8 + 100; 2]);
            } else {
                assert_eq!(datagram.len(), SLOT);
            }
            answers.push(from);
        }
        answers.send(server.as_raw_fd()).unwrap();
        assert!(answers.is_empty());
        let mut buf = [0u8; 16];
        for i in 0..5u8 {
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], [i + 100; 2]);
        }
        // Nothing queued: WouldBlock, not a wait.
        let error = batch.recv(server.as_raw_fd()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }
}
