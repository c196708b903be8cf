//! The tracker protocol as pure functions over bytes.
//!
//! This module owns the BitTorrent HTTP tracker wire format: it turns a raw
//! query string into a typed [`AnnounceRequest`] or [`ScrapeRequest`] (or an
//! [`Error`] whose text becomes the `failure reason`), and turns typed
//! responses into canonical bencode. It does no I/O, keeps no state and reads
//! no clock, so every rule here is unit- and property-tested in isolation.
//!
//! - [`query`]: splitting the query and strict percent-decoding.
//! - [`announce`]: BEP 3 announce parsing and the response encoder (BEP 23/7/24).
//! - [`scrape`]: BEP 48 scrape parsing and the response encoder.
//! - [`bencode`]: the small canonical bencode writer both encoders use.
//! - [`udp`]: BEP 15 datagrams (connect, announce, scrape, error) and BEP 41
//!   URL data, for the UDP front end.

pub mod announce;
pub mod bencode;
pub mod error;
pub mod query;
pub mod scrape;
pub mod udp;

pub use announce::{AnnounceOptions, AnnounceRequest, AnnounceResponse, Event, PeerSet};
pub use error::Error;
pub use scrape::{ScrapeRequest, ScrapeResponse, SwarmCounts};

use std::fmt;

/// A torrent's identity: the SHA-1 of its bencoded `info` dictionary.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// Hashed as three words rather than as a slice (a length prefix and a
/// loop): the swarm map hashes one on every announce and scrape.
impl std::hash::Hash for InfoHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c] = [&self.0[..8], &self.0[8..16], &self.0[16..]];
        state.write_u64(a.try_into().map_or(0, u64::from_le_bytes));
        state.write_u64(b.try_into().map_or(0, u64::from_le_bytes));
        state.write_u32(c.try_into().map_or(0, u32::from_le_bytes));
    }
}

/// The 20 bytes a client picks to name itself in a swarm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 20]);

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// A fully encoded response body: one `failure reason` dictionary.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(reason.len() + 24);
    bencode::dict_start(&mut out);
    bencode::key_bytes(&mut out, b"failure reason", reason.as_bytes());
    bencode::end(&mut out);
    out
}
