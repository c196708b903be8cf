//! The UDP front end (BEP 15, with BEP 41 URL data): one datagram in, at
//! most one datagram out.
//!
//! [`UdpTracker::answer`] parses a datagram with [`crate::protocol::udp`],
//! checks the connection id ([`connection_id`]), asks the tracker [`Core`]
//! and encodes the answer; the reactor owns the sockets and calls it for
//! each datagram it receives. Two rules keep the tracker from being a
//! weapon: connection ids are bound to the client's address, and a source
//! that has not shown a valid id never gets more bytes back than it sent
//! (a refusal that would be longer is dropped and counted).

pub mod connection_id;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::metrics::{Request as Kind, Transport, UdpProblem};
use crate::protocol::udp::{self, Malformed, ParseError, Request, UrlData};
use crate::protocol::{InfoHash, PeerSet, SwarmCounts};
use crate::reactor::{DatagramHandler, Later};
use crate::tracker::{Announced, Answer, Core, Refusal};
pub use connection_id::ConnectionIds;

/// Longest datagram answered; longer ones are dropped as `too_long`. A
/// scrape of 100 hashes is 2,016 bytes, an announce with a URL a few hundred.
pub const MAX_DATAGRAM: usize = 2048;

/// The error message for a missing, expired or forged connection id.
const BAD_CONNECTION_ID: &str = "invalid connection id";

/// The error message for a UDP scrape of a private tracker.
const PRIVATE_SCRAPE: &str = "this tracker is private: scrape over HTTP with your passkey";

/// Buffers reused by every request on a thread: sampled peers, the hashes
/// of a scrape and their counts.
type Scratch = (PeerSet, Vec<InfoHash>, Vec<(InfoHash, SwarmCounts)>);

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Default::default());
}

/// What the UDP front end needs besides the core.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// The announce path, checked against BEP 41 URL data when a client
    /// sends it (`/announce`, or `/announce/<passkey>` in private mode).
    pub announce_path: String,
}

/// Answers BEP 15 datagrams for the tracker [`Core`].
pub struct UdpTracker {
    core: Arc<Core>,
    ids: ConnectionIds,
    config: UdpConfig,
}

impl UdpTracker {
    pub fn new(core: Arc<Core>, ids: ConnectionIds, config: UdpConfig) -> Self {
        Self { core, ids, config }
    }

    /// Appends to `out` the answer to `datagram` from `from`, or nothing
    /// when it must be dropped; or returns the answer to come when a shared
    /// store has it.
    pub fn answer(&self, datagram: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> Option<Later> {
        let metrics = self.core.metrics();
        if datagram.len() > MAX_DATAGRAM {
            metrics.udp_problem(UdpProblem::TooLong, false);
            return None;
        }
        let request = match Request::parse(datagram, &self.core.rules().announce) {
            Ok(request) => request,
            Err(ParseError {
                why,
                transaction_id,
            }) => {
                let answered = transaction_id.is_some_and(|id| {
                    self.refuse_unverified(datagram.len(), id, &why.to_string(), out)
                });
                metrics.udp_problem(problem(why), answered);
                return None;
            }
        };
        let client = from.ip().to_canonical();
        let now = self.core.clock().now();
        match request {
            Request::Connect { transaction_id } => {
                udp::encode_connect(out, transaction_id, self.ids.issue(from, now));
                self.core.count(Transport::Udp, Kind::Connect, client, None);
            }
            _ if !self.ids.check(request.connection_id(), from, now) => {
                let id = match request {
                    Request::Announce { transaction_id, .. }
                    | Request::Scrape { transaction_id, .. }
                    | Request::Connect { transaction_id } => transaction_id,
                };
                let answered = self.refuse_unverified(datagram.len(), id, BAD_CONNECTION_ID, out);
                metrics.udp_problem(UdpProblem::BadConnectionId, answered);
            }
            Request::Announce {
                transaction_id,
                announce,
                url_data,
                ..
            } => {
                let passkey = match self.passkey_of(url_data) {
                    Ok(passkey) => passkey,
                    Err(()) => {
                        let message = format!(
                            "unknown path: this tracker announces at {}",
                            self.config.announce_path
                        );
                        udp::encode_error(out, transaction_id, &message);
                        metrics.udp_problem(UdpProblem::WrongPath, true);
                        return None;
                    }
                };
                if let Err(refused) = self.core.check_passkey(passkey.as_deref()) {
                    udp::encode_error(out, transaction_id, &refused.to_string());
                    let failure = Some(refused.failure());
                    self.core
                        .count(Transport::Udp, Kind::Announce, client, failure);
                    return None;
                }
                let peer_ip = announce.ip.map_or(client, |ip| ip.to_canonical());
                let answer = SCRATCH.with_borrow_mut(|(peers, _, _)| {
                    match self.core.announce(&announce, peer_ip, peers) {
                        Answer::Now(answer) => {
                            announced(&self.core, out, transaction_id, client, answer, peers);
                            None
                        }
                        Answer::Later(later) => Some(later),
                    }
                });
                let later = answer?;
                let core = self.core.clone();
                return Some(Box::pin(async move {
                    let mut out = Vec::new();
                    let (answer, peers) = match later.await {
                        Ok((answer, peers)) => (Ok(answer), peers),
                        Err(refused) => (Err(refused), PeerSet::default()),
                    };
                    announced(&core, &mut out, transaction_id, client, answer, &peers);
                    out
                }));
            }
            Request::Scrape { transaction_id, .. } if self.core.is_private() => {
                // A UDP scrape has no URL data, so it cannot carry a passkey.
                udp::encode_error(out, transaction_id, PRIVATE_SCRAPE);
                let failure = Some(crate::tracker::Refusal::NoPasskey.failure());
                self.core
                    .count(Transport::Udp, Kind::Scrape, client, failure);
            }
            Request::Scrape {
                transaction_id,
                info_hashes,
                ..
            } => {
                // As many as the operator allows, and never fewer than BEP 15
                // promises fit in a packet.
                let most = self
                    .core
                    .rules()
                    .max_scrape_hashes
                    .max(udp::MIN_SCRAPE_HASHES);
                let later = SCRATCH.with_borrow_mut(|(_, hashes, files)| {
                    hashes.clear();
                    files.clear();
                    hashes.extend(
                        info_hashes
                            .chunks_exact(20)
                            .take(most)
                            .filter_map(|chunk| chunk.try_into().ok().map(InfoHash)),
                    );
                    match self.core.scrape(hashes, files) {
                        Answer::Now(()) => {
                            scraped(&self.core, out, transaction_id, client, Ok(files));
                            None
                        }
                        Answer::Later(later) => Some(later),
                    }
                })?;
                let core = self.core.clone();
                return Some(Box::pin(async move {
                    let mut out = Vec::new();
                    let files = later.await;
                    scraped(&core, &mut out, transaction_id, client, files.as_deref());
                    out
                }));
            }
        }
        None
    }

    /// Writes an error to a source not (yet) verified, only if it is no
    /// longer than what the source sent. Whether it was written.
    fn refuse_unverified(
        &self,
        sent: usize,
        transaction_id: u32,
        message: &str,
        out: &mut Vec<u8>,
    ) -> bool {
        if udp::error_len(message) > sent {
            return false;
        }
        udp::encode_error(out, transaction_id, message);
        true
    }

    /// The passkey in the URL data's path, if any: `Ok(None)` without URL
    /// data or in public mode at the bare announce path; `Err` for a path
    /// that is not the announce path.
    fn passkey_of(&self, url_data: Option<UrlData<'_>>) -> Result<Option<Vec<u8>>, ()> {
        let Some(url) = url_data else {
            return Ok(None);
        };
        let url = url.concat();
        let path = url.split(|b| *b == b'?').next().unwrap_or_default();
        let rest = path
            .strip_prefix(self.config.announce_path.as_bytes())
            .ok_or(())?;
        match rest {
            [] => Ok(None),
            [b'/', key @ ..] if !key.is_empty() && self.core.is_private() => Ok(Some(key.to_vec())),
            _ => Err(()),
        }
    }
}

impl DatagramHandler for UdpTracker {
    fn handle(&self, datagram: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> Option<Later> {
        self.answer(datagram, from, out)
    }
}

/// Encodes an announce's answer (or its refusal) and counts it. Peers of
/// the client's own family only: 6 bytes over IPv4, 18 over IPv6 (BEP 15).
fn announced(
    core: &Core,
    out: &mut Vec<u8>,
    transaction_id: u32,
    client: IpAddr,
    answer: Result<Announced, Refusal>,
    peers: &PeerSet,
) {
    match &answer {
        Ok(announced) => {
            let counts = announced.counts;
            udp::encode_announce(
                out,
                transaction_id,
                announced.interval,
                counts.incomplete,
                counts.complete,
            );
            match client {
                IpAddr::V4(_) => peers.v4.iter().for_each(|p| out.extend(p)),
                IpAddr::V6(_) => peers.v6.iter().for_each(|p| out.extend(p)),
            }
        }
        Err(refused) => udp::encode_error(out, transaction_id, &refused.to_string()),
    }
    let failure = answer.err().map(|refused| refused.failure());
    core.count(Transport::Udp, Kind::Announce, client, failure);
}

/// Encodes a scrape's answer (or its refusal) and counts it.
fn scraped(
    core: &Core,
    out: &mut Vec<u8>,
    transaction_id: u32,
    client: IpAddr,
    files: Result<&[(InfoHash, SwarmCounts)], &Refusal>,
) {
    match files {
        Ok(files) => {
            udp::encode_scrape(out, transaction_id);
            for (_, counts) in files {
                let completed = u32::try_from(counts.downloaded).unwrap_or(u32::MAX);
                udp::encode_scrape_entry(out, counts.complete, completed, counts.incomplete);
            }
        }
        Err(refused) => udp::encode_error(out, transaction_id, &refused.to_string()),
    }
    let failure = files.err().map(|refused| refused.failure());
    core.count(Transport::Udp, Kind::Scrape, client, failure);
}

/// The metric label of a malformed datagram.
fn problem(why: Malformed) -> UdpProblem {
    match why {
        Malformed::TooShort => UdpProblem::TooShort,
        Malformed::TooLong => UdpProblem::TooLong,
        Malformed::UnknownAction => UdpProblem::UnknownAction,
        Malformed::BadProtocolId => UdpProblem::BadProtocolId,
        Malformed::BadEvent => UdpProblem::BadEvent,
        Malformed::BadPort => UdpProblem::BadPort,
        Malformed::BadOptions => UdpProblem::BadOptions,
        Malformed::NoInfoHashes => UdpProblem::NoInfoHashes,
        Malformed::RaggedScrape => UdpProblem::RaggedScrape,
    }
}
