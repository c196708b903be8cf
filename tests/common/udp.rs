//! A raw BEP 15 client for the black-box tests: builds request datagrams
//! byte by byte and reads answers, over 127.0.0.1 or ::1.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// One client socket talking to one tracker address.
pub struct UdpClient {
    pub socket: UdpSocket,
    pub tracker: SocketAddr,
}

/// What an announce datagram carries (BEP 15 layout).
#[derive(Debug, Clone)]
pub struct UdpAnnounce {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    /// 0 none, 1 completed, 2 started, 3 stopped.
    pub event: u32,
    pub ip: [u8; 4],
    pub key: u32,
    pub num_want: i32,
    pub port: u16,
    /// BEP 41 options, raw.
    pub options: Vec<u8>,
}

impl UdpAnnounce {
    /// A leecher announce for `info_hash` from peer number `peer` (its id
    /// and port derive from it).
    pub fn new(info_hash: [u8; 20], peer: u8) -> Self {
        Self {
            info_hash,
            peer_id: [peer; 20],
            downloaded: 0,
            left: 1000,
            uploaded: 0,
            event: 2,
            ip: [0; 4],
            key: u32::from(peer),
            num_want: -1,
            port: 6000 + u16::from(peer),
            options: Vec::new(),
        }
    }

    pub fn seeder(mut self) -> Self {
        self.left = 0;
        self
    }

    pub fn event(mut self, event: u32) -> Self {
        self.event = event;
        self
    }

    pub fn num_want(mut self, n: i32) -> Self {
        self.num_want = n;
        self
    }

    /// BEP 41 URL data in one URLData option.
    pub fn url(mut self, url: &str) -> Self {
        self.options = vec![2, url.len() as u8];
        self.options.extend_from_slice(url.as_bytes());
        self
    }

    pub fn bytes(&self, connection_id: u64, transaction_id: u32) -> Vec<u8> {
        let mut d = Vec::with_capacity(98 + self.options.len());
        d.extend_from_slice(&connection_id.to_be_bytes());
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&transaction_id.to_be_bytes());
        d.extend_from_slice(&self.info_hash);
        d.extend_from_slice(&self.peer_id);
        d.extend_from_slice(&self.downloaded.to_be_bytes());
        d.extend_from_slice(&self.left.to_be_bytes());
        d.extend_from_slice(&self.uploaded.to_be_bytes());
        d.extend_from_slice(&self.event.to_be_bytes());
        d.extend_from_slice(&self.ip);
        d.extend_from_slice(&self.key.to_be_bytes());
        d.extend_from_slice(&self.num_want.to_be_bytes());
        d.extend_from_slice(&self.port.to_be_bytes());
        d.extend_from_slice(&self.options);
        d
    }
}

/// A decoded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Connect {
        transaction_id: u32,
        connection_id: u64,
    },
    Announce {
        transaction_id: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        /// Compact peers: 6 bytes each over IPv4, 18 over IPv6.
        peers: Vec<Vec<u8>>,
    },
    Scrape {
        transaction_id: u32,
        /// (seeders, completed, leechers) per hash, in request order.
        files: Vec<(u32, u32, u32)>,
    },
    Error {
        transaction_id: u32,
        message: String,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

impl Answer {
    /// Decodes an answer; `v6` says how long a peer is (18 or 6 bytes).
    pub fn decode(bytes: &[u8], v6: bool) -> Self {
        assert!(bytes.len() >= 8, "answer too short: {bytes:?}");
        let transaction_id = u32_at(bytes, 4);
        match u32_at(bytes, 0) {
            0 => {
                assert_eq!(bytes.len(), 16, "connect answer");
                Answer::Connect {
                    transaction_id,
                    connection_id: u64::from_be_bytes(bytes[8..16].try_into().unwrap()),
                }
            }
            1 => {
                let size = if v6 { 18 } else { 6 };
                assert_eq!(
                    (bytes.len() - 20) % size,
                    0,
                    "peer list of {size}-byte peers"
                );
                Answer::Announce {
                    transaction_id,
                    interval: u32_at(bytes, 8),
                    leechers: u32_at(bytes, 12),
                    seeders: u32_at(bytes, 16),
                    peers: bytes[20..].chunks(size).map(<[u8]>::to_vec).collect(),
                }
            }
            2 => {
                assert_eq!((bytes.len() - 8) % 12, 0, "scrape entries");
                Answer::Scrape {
                    transaction_id,
                    files: bytes[8..]
                        .chunks(12)
                        .map(|c| (u32_at(c, 0), u32_at(c, 4), u32_at(c, 8)))
                        .collect(),
                }
            }
            3 => Answer::Error {
                transaction_id,
                message: String::from_utf8(bytes[8..].to_vec()).expect("utf-8 message"),
            },
            action => panic!("unknown action {action} in {bytes:?}"),
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Answer::Error { message, .. } => Some(message),
            _ => None,
        }
    }
}

impl UdpClient {
    /// A client socket on the loopback address of `tracker`'s family.
    pub fn new(tracker: SocketAddr) -> Self {
        let local = if tracker.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let socket = UdpSocket::bind(local).expect("bind a client socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        Self { socket, tracker }
    }

    fn v6(&self) -> bool {
        self.tracker.is_ipv6()
    }

    /// Sends `datagram` and waits (bounded) for one answer; `None` if none
    /// came.
    pub fn exchange(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        self.socket.send_to(datagram, self.tracker).expect("send");
        let mut buf = vec![0u8; 65_536];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from, self.tracker, "answer from the tracker's address");
                    return Some(buf[..n].to_vec());
                }
                // A signal to the test process (a child exiting) is not the
                // end of the wait.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    /// Sends `datagram` and decodes the answer, which must come.
    pub fn ask(&self, datagram: &[u8]) -> Answer {
        let bytes = self
            .exchange(datagram)
            .unwrap_or_else(|| panic!("no answer to {datagram:?}"));
        Answer::decode(&bytes, self.v6())
    }

    /// A connect; the connection id the tracker issued.
    pub fn connect(&self) -> u64 {
        let mut d = PROTOCOL_ID.to_be_bytes().to_vec();
        d.extend_from_slice(&0u32.to_be_bytes());
        d.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        match self.ask(&d) {
            Answer::Connect {
                transaction_id,
                connection_id,
            } => {
                assert_eq!(transaction_id, 0x0102_0304);
                connection_id
            }
            other => panic!("connect answered {other:?}"),
        }
    }

    /// Connects, then announces.
    pub fn announce(&self, announce: &UdpAnnounce) -> Answer {
        let id = self.connect();
        let answer = self.ask(&announce.bytes(id, 77));
        match &answer {
            Answer::Announce { transaction_id, .. } | Answer::Error { transaction_id, .. } => {
                assert_eq!(*transaction_id, 77);
            }
            other => panic!("announce answered {other:?}"),
        }
        answer
    }

    /// A scrape datagram under `connection_id`.
    pub fn scrape_bytes(connection_id: u64, hashes: &[[u8; 20]]) -> Vec<u8> {
        let mut d = connection_id.to_be_bytes().to_vec();
        d.extend_from_slice(&2u32.to_be_bytes());
        d.extend_from_slice(&99u32.to_be_bytes());
        for hash in hashes {
            d.extend_from_slice(hash);
        }
        d
    }

    /// Connects, then scrapes: (seeders, completed, leechers) per hash.
    pub fn scrape(&self, hashes: &[[u8; 20]]) -> Vec<(u32, u32, u32)> {
        let id = self.connect();
        match self.ask(&Self::scrape_bytes(id, hashes)) {
            Answer::Scrape {
                transaction_id,
                files,
            } => {
                assert_eq!(transaction_id, 99);
                files
            }
            other => panic!("scrape answered {other:?}"),
        }
    }
}
