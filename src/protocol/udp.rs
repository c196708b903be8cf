//! BEP 15, the UDP tracker protocol, with BEP 41's URL data: datagrams to
//! typed requests and typed answers to datagrams. No I/O, no clock, no
//! connection-id policy (that is the UDP front end's).
//!
//! Every request starts with a 64-bit connection id (the protocol id
//! `0x41727101980` for connect), a 32-bit action and a 32-bit transaction id
//! the answer echoes. All integers are big-endian.

use std::net::Ipv4Addr;
use std::num::NonZeroU16;

use super::{AnnounceOptions, AnnounceRequest, Event, InfoHash, PeerId};

/// The connection id of every connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Bytes of a connect request (and of its answer).
pub const CONNECT_LEN: usize = 16;
/// Bytes of an announce request before its BEP 41 options.
pub const ANNOUNCE_LEN: usize = 98;
/// Bytes of a scrape request before its first info hash.
pub const SCRAPE_HEADER_LEN: usize = 16;
/// Fewest info hashes one scrape must be able to carry (BEP 15: "about 74").
pub const MIN_SCRAPE_HASHES: usize = 74;
/// Largest URL data kept from BEP 41 options; longer is malformed here (a
/// path with a passkey is far shorter).
pub const MAX_URL_DATA: usize = 1024;

/// BEP 15 actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect,
    Announce,
    Scrape,
}

impl Action {
    fn code(self) -> u32 {
        match self {
            Action::Connect => 0,
            Action::Announce => 1,
            Action::Scrape => 2,
        }
    }
}

/// What a datagram asks, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Connect {
        transaction_id: u32,
    },
    Announce {
        connection_id: u64,
        transaction_id: u32,
        announce: AnnounceRequest,
        /// The client's `key`, kept for the record (peers are identified by
        /// address and id, as over HTTP).
        key: u32,
        /// BEP 41 URL data (path and query of the tracker URL), if any
        /// was sent.
        url_data: Option<UrlData<'a>>,
    },
    Scrape {
        connection_id: u64,
        transaction_id: u32,
        /// The info hashes' bytes, 20 each, in request order.
        info_hashes: &'a [u8],
    },
}

impl Request<'_> {
    /// The connection id the request carries (the protocol id for connect).
    pub fn connection_id(&self) -> u64 {
        match self {
            Request::Connect { .. } => PROTOCOL_ID,
            Request::Announce { connection_id, .. } | Request::Scrape { connection_id, .. } => {
                *connection_id
            }
        }
    }

    pub fn action(&self) -> Action {
        match self {
            Request::Connect { .. } => Action::Connect,
            Request::Announce { .. } => Action::Announce,
            Request::Scrape { .. } => Action::Scrape,
        }
    }
}

/// Why a datagram is not a valid request. The text is the BEP 15 error
/// message; [`Malformed::label`] the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("packet too short")]
    TooShort,
    #[error("packet too long")]
    TooLong,
    #[error("unknown action")]
    UnknownAction,
    #[error("connect needs the protocol id 0x41727101980")]
    BadProtocolId,
    #[error("invalid event")]
    BadEvent,
    #[error("invalid port: 0")]
    BadPort,
    #[error("malformed options (BEP 41)")]
    BadOptions,
    #[error("scrape without info hashes")]
    NoInfoHashes,
    #[error("scrape length is not 16 + 20 x info hashes")]
    RaggedScrape,
}

impl Malformed {
    pub const ALL: [Malformed; 9] = [
        Malformed::TooShort,
        Malformed::TooLong,
        Malformed::UnknownAction,
        Malformed::BadProtocolId,
        Malformed::BadEvent,
        Malformed::BadPort,
        Malformed::BadOptions,
        Malformed::NoInfoHashes,
        Malformed::RaggedScrape,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Malformed::TooShort => "too_short",
            Malformed::TooLong => "too_long",
            Malformed::UnknownAction => "unknown_action",
            Malformed::BadProtocolId => "bad_protocol_id",
            Malformed::BadEvent => "bad_event",
            Malformed::BadPort => "bad_port",
            Malformed::BadOptions => "bad_options",
            Malformed::NoInfoHashes => "no_info_hashes",
            Malformed::RaggedScrape => "ragged_scrape",
        }
    }
}

/// A refused datagram: why, and the transaction id to echo when the
/// datagram was long enough to carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub why: Malformed,
    pub transaction_id: Option<u32>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    (u64::from(u32_at(b, at)) << 32) | u64::from(u32_at(b, at + 4))
}

fn bytes20(b: &[u8], at: usize) -> [u8; 20] {
    let mut out = [0u8; 20];
    out.copy_from_slice(&b[at..at + 20]);
    out
}

impl<'a> Request<'a> {
    /// Parses one datagram. `options` applies numwant's default and cap and
    /// says whether the IP address field is honoured.
    pub fn parse(datagram: &'a [u8], options: &AnnounceOptions) -> Result<Self, ParseError> {
        if datagram.len() < CONNECT_LEN {
            return Err(ParseError {
                why: Malformed::TooShort,
                transaction_id: None,
            });
        }
        let connection_id = u64_at(datagram, 0);
        let action = u32_at(datagram, 8);
        let transaction_id = u32_at(datagram, 12);
        let fail = |why| ParseError {
            why,
            transaction_id: Some(transaction_id),
        };
        match action {
            0 => {
                if connection_id != PROTOCOL_ID {
                    return Err(fail(Malformed::BadProtocolId));
                }
                if datagram.len() != CONNECT_LEN {
                    return Err(fail(Malformed::TooLong));
                }
                Ok(Request::Connect { transaction_id })
            }
            1 => {
                if datagram.len() < ANNOUNCE_LEN {
                    return Err(fail(Malformed::TooShort));
                }
                let announce = announce(datagram, options).map_err(fail)?;
                let url_data = url_data(&datagram[ANNOUNCE_LEN..]).map_err(fail)?;
                Ok(Request::Announce {
                    connection_id,
                    transaction_id,
                    announce,
                    key: u32_at(datagram, 88),
                    url_data,
                })
            }
            2 => {
                let hashes = &datagram[SCRAPE_HEADER_LEN..];
                if hashes.is_empty() {
                    return Err(fail(Malformed::NoInfoHashes));
                }
                if !hashes.len().is_multiple_of(20) {
                    return Err(fail(Malformed::RaggedScrape));
                }
                Ok(Request::Scrape {
                    connection_id,
                    transaction_id,
                    info_hashes: hashes,
                })
            }
            _ => Err(fail(Malformed::UnknownAction)),
        }
    }
}

/// The fixed 98 bytes of an announce as the shared [`AnnounceRequest`]:
/// always compact and without peer ids, as UDP answers are.
fn announce(d: &[u8], options: &AnnounceOptions) -> Result<AnnounceRequest, Malformed> {
    let event = match u32_at(d, 80) {
        0 => Event::None,
        1 => Event::Completed,
        2 => Event::Started,
        3 => Event::Stopped,
        _ => return Err(Malformed::BadEvent),
    };
    let port = NonZeroU16::new(u16_at(d, 96)).ok_or(Malformed::BadPort)?;
    // -1 (or any negative) asks for the default.
    let numwant = match i32::from_be_bytes(d[92..96].try_into().unwrap_or_default()) {
        n if n < 0 => options.default_numwant,
        n => (n as u32).min(options.max_numwant),
    }
    .min(options.max_numwant);
    let ip = Ipv4Addr::from(u32_at(d, 84));
    let ip = (options.accept_ip_param && !ip.is_unspecified()).then_some(ip.into());
    Ok(AnnounceRequest {
        info_hash: InfoHash(bytes20(d, 16)),
        peer_id: PeerId(bytes20(d, 36)),
        downloaded: u64_at(d, 56),
        left: u64_at(d, 64),
        uploaded: u64_at(d, 72),
        event,
        port,
        numwant,
        compact: true,
        no_peer_id: true,
        ip,
        ipv4: None,
        ipv6: None,
    })
}

/// BEP 41 URL data: the options after an announce, checked, from which
/// the URL's path and query are read ([`UrlData::concat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlData<'a> {
    options: &'a [u8],
}

impl<'a> UrlData<'a> {
    /// The URLData parts in order.
    fn parts(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut options = self.options;
        std::iter::from_fn(move || {
            loop {
                let (&kind, rest) = options.split_first()?;
                match kind {
                    1 => options = rest,
                    2 => {
                        let (&len, rest) = rest.split_first()?;
                        // Checked by `url_data`; never trusted to be.
                        let (part, rest) = rest.split_at_checked(usize::from(len))?;
                        options = rest;
                        return Some(part);
                    }
                    _ => return None,
                }
            }
        })
    }

    /// The URL data: several URLData options are one string, concatenated.
    pub fn concat(&self) -> std::borrow::Cow<'a, [u8]> {
        let mut parts = self.parts();
        let first = parts.next().unwrap_or_default();
        match parts.next() {
            None => std::borrow::Cow::Borrowed(first),
            Some(second) => {
                let mut all = [first, second].concat();
                parts.for_each(|part| all.extend_from_slice(part));
                std::borrow::Cow::Owned(all)
            }
        }
    }
}

/// BEP 41: checks the options after an announce. EndOfOptions (0) ends
/// them, NOP (1) is skipped, URLData (2, length, bytes) carries part of the
/// URL; any other option, or a length past the end, is malformed. `None`
/// when no URLData option is present.
fn url_data(options: &[u8]) -> Result<Option<UrlData<'_>>, Malformed> {
    let mut rest = options;
    let mut total = 0;
    let mut any = false;
    while let Some((&kind, after)) = rest.split_first() {
        match kind {
            0 => break,
            1 => rest = after,
            2 => {
                let (&len, after) = after.split_first().ok_or(Malformed::BadOptions)?;
                let len = usize::from(len);
                if after.len() < len {
                    return Err(Malformed::BadOptions);
                }
                total += len;
                if total > MAX_URL_DATA {
                    return Err(Malformed::BadOptions);
                }
                any = true;
                rest = &after[len..];
            }
            _ => return Err(Malformed::BadOptions),
        }
    }
    let used = options.len() - rest.len();
    Ok(any.then_some(UrlData {
        options: &options[..used],
    }))
}

/// Appends a connect answer.
pub fn encode_connect(out: &mut Vec<u8>, transaction_id: u32, connection_id: u64) {
    out.extend_from_slice(&Action::Connect.code().to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&connection_id.to_be_bytes());
}

/// Appends an announce answer's header; the caller appends the compact
/// peers (6 bytes each over IPv4, 18 over IPv6) after it.
pub fn encode_announce(
    out: &mut Vec<u8>,
    transaction_id: u32,
    interval: u32,
    leechers: u32,
    seeders: u32,
) {
    out.extend_from_slice(&Action::Announce.code().to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(&leechers.to_be_bytes());
    out.extend_from_slice(&seeders.to_be_bytes());
}

/// Appends a scrape answer's header; the caller appends
/// [`encode_scrape_entry`] per info hash, in request order.
pub fn encode_scrape(out: &mut Vec<u8>, transaction_id: u32) {
    out.extend_from_slice(&Action::Scrape.code().to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
}

/// One info hash's counts in a scrape answer.
pub fn encode_scrape_entry(out: &mut Vec<u8>, seeders: u32, completed: u32, leechers: u32) {
    out.extend_from_slice(&seeders.to_be_bytes());
    out.extend_from_slice(&completed.to_be_bytes());
    out.extend_from_slice(&leechers.to_be_bytes());
}

/// Appends an error answer: action 3, the transaction id, the message.
pub fn encode_error(out: &mut Vec<u8>, transaction_id: u32, message: &str) {
    out.extend_from_slice(&3u32.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
}

/// Bytes of an error answer with `message`.
pub fn error_len(message: &str) -> usize {
    8 + message.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An announce datagram with the given event, numwant, port and options.
    fn announce_bytes(event: u32, numwant: i32, port: u16, options: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        d.extend_from_slice(&[0xaa; 20]);
        d.extend_from_slice(&[0xbb; 20]);
        d.extend_from_slice(&10u64.to_be_bytes()); // downloaded
        d.extend_from_slice(&20u64.to_be_bytes()); // left
        d.extend_from_slice(&30u64.to_be_bytes()); // uploaded
        d.extend_from_slice(&event.to_be_bytes());
        d.extend_from_slice(&[10, 0, 0, 9]); // IP address
        d.extend_from_slice(&77u32.to_be_bytes()); // key
        d.extend_from_slice(&numwant.to_be_bytes());
        d.extend_from_slice(&port.to_be_bytes());
        assert_eq!(d.len(), ANNOUNCE_LEN);
        d.extend_from_slice(options);
        d
    }

    fn options() -> AnnounceOptions {
        AnnounceOptions::default()
    }

    fn why(datagram: &[u8]) -> Malformed {
        Request::parse(datagram, &options()).unwrap_err().why
    }

    #[test]
    fn connect_needs_the_protocol_id_and_sixteen_bytes() {
        let mut d = PROTOCOL_ID.to_be_bytes().to_vec();
        d.extend_from_slice(&0u32.to_be_bytes());
        d.extend_from_slice(&42u32.to_be_bytes());
        assert_eq!(
            Request::parse(&d, &options()),
            Ok(Request::Connect { transaction_id: 42 })
        );
        let mut out = Vec::new();
        encode_connect(&mut out, 42, 0x0102_0304_0506_0708);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 42, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut wrong = d.clone();
        wrong[7] ^= 1;
        let error = Request::parse(&wrong, &options()).unwrap_err();
        assert_eq!(error.why, Malformed::BadProtocolId);
        assert_eq!(error.transaction_id, Some(42));
        d.push(0);
        assert_eq!(why(&d), Malformed::TooLong);
        assert_eq!(why(&d[..15]), Malformed::TooShort);
        assert_eq!(
            Request::parse(&d[..15], &options())
                .unwrap_err()
                .transaction_id,
            None
        );
    }

    #[test]
    fn announce_fields_map_to_the_shared_request() {
        let d = announce_bytes(2, -1, 6881, &[]);
        let Ok(Request::Announce {
            connection_id,
            transaction_id,
            announce,
            key,
            url_data,
        }) = Request::parse(&d, &options())
        else {
            panic!("not an announce");
        };
        assert_eq!(
            (connection_id, transaction_id, key),
            (0x1122_3344_5566_7788, 0xdead_beef, 77)
        );
        assert_eq!(announce.info_hash, InfoHash([0xaa; 20]));
        assert_eq!(announce.peer_id, PeerId([0xbb; 20]));
        assert_eq!(
            (announce.downloaded, announce.left, announce.uploaded),
            (10, 20, 30)
        );
        assert_eq!(announce.event, Event::Started);
        assert_eq!(announce.port.get(), 6881);
        // -1: the default; compact, no ids; the IP field ignored by default.
        assert_eq!(announce.numwant, 50);
        assert!(announce.compact && announce.no_peer_id);
        assert_eq!(announce.ip, None);
        assert_eq!(url_data, None);
    }

    #[test]
    fn events_numwant_port_and_ip_follow_the_rules() {
        let event = |code| match Request::parse(&announce_bytes(code, 5, 1, &[]), &options()) {
            Ok(Request::Announce { announce, .. }) => announce.event,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            [event(0), event(1), event(2), event(3)],
            [
                Event::None,
                Event::Completed,
                Event::Started,
                Event::Stopped
            ]
        );
        assert_eq!(why(&announce_bytes(4, 5, 1, &[])), Malformed::BadEvent);
        assert_eq!(why(&announce_bytes(0, 5, 0, &[])), Malformed::BadPort);
        let numwant = |n| match Request::parse(&announce_bytes(0, n, 1, &[]), &options()) {
            Ok(Request::Announce { announce, .. }) => announce.numwant,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (numwant(0), numwant(7), numwant(100_000), numwant(-5)),
            (0, 7, 200, 50)
        );
        let honour = AnnounceOptions {
            accept_ip_param: true,
            ..options()
        };
        match Request::parse(&announce_bytes(0, 5, 1, &[]), &honour) {
            Ok(Request::Announce { announce, .. }) => {
                assert_eq!(announce.ip, Some("10.0.0.9".parse().unwrap()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            why(&announce_bytes(0, 5, 1, &[])[..97]),
            Malformed::TooShort
        );
    }

    fn url_of(options_bytes: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
        match Request::parse(&announce_bytes(0, 5, 1, options_bytes), &options()) {
            Ok(Request::Announce { url_data, .. }) => Ok(url_data.map(|u| u.concat().to_vec())),
            Ok(other) => panic!("{other:?}"),
            Err(error) => Err(error.why),
        }
    }

    #[test]
    fn bep41_options_are_parsed_and_checked() {
        assert_eq!(url_of(&[2, 9]).unwrap_err(), Malformed::BadOptions);
        assert_eq!(
            url_of(b"\x02\x09/announce"),
            Ok(Some(b"/announce".to_vec()))
        );
        // NOPs, several URLData parts (concatenated), EndOfOptions, then
        // anything (padding).
        assert_eq!(
            url_of(b"\x01\x02\x04/ann\x01\x02\x05ounce\x00\xff\xff"),
            Ok(Some(b"/announce".to_vec()))
        );
        assert_eq!(url_of(&[0]), Ok(None));
        assert_eq!(url_of(&[1, 1, 1]), Ok(None));
        assert_eq!(url_of(&[3, 0]), Err(Malformed::BadOptions));
        assert_eq!(url_of(&[2]), Err(Malformed::BadOptions));
        let mut long = Vec::new();
        for _ in 0..5 {
            long.extend_from_slice(&[2, 255]);
            long.extend_from_slice(&[b'a'; 255]);
        }
        assert_eq!(url_of(&long), Err(Malformed::BadOptions));
    }

    #[test]
    fn scrape_takes_whole_info_hashes_in_order() {
        let mut d = 5u64.to_be_bytes().to_vec();
        d.extend_from_slice(&2u32.to_be_bytes());
        d.extend_from_slice(&9u32.to_be_bytes());
        assert_eq!(why(&d), Malformed::NoInfoHashes);
        d.extend_from_slice(&[1; 20]);
        d.extend_from_slice(&[2; 20]);
        match Request::parse(&d, &options()) {
            Ok(Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            }) => {
                assert_eq!((connection_id, transaction_id), (5, 9));
                assert_eq!(info_hashes.len(), 40);
                assert_eq!(info_hashes[20], 2);
            }
            other => panic!("{other:?}"),
        }
        d.push(0);
        assert_eq!(why(&d), Malformed::RaggedScrape);
        let mut unknown = d.clone();
        unknown[11] = 7;
        assert_eq!(why(&unknown), Malformed::UnknownAction);
    }

    #[test]
    fn answers_are_laid_out_as_bep15_says() {
        let mut out = Vec::new();
        encode_announce(&mut out, 7, 1800, 3, 4);
        assert_eq!(
            out,
            [0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 7, 8, 0, 0, 0, 3, 0, 0, 0, 4]
        );
        out.clear();
        encode_scrape(&mut out, 7);
        encode_scrape_entry(&mut out, 1, 2, 3);
        assert_eq!(
            out,
            [0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        out.clear();
        encode_error(&mut out, 7, "no");
        assert_eq!(out, [0, 0, 0, 3, 0, 0, 0, 7, b'n', b'o']);
        assert_eq!(error_len("no"), out.len());
    }

    proptest::proptest! {
        /// Hostile datagrams: never a panic, and what parses is consistent
        /// with its bytes.
        #[test]
        fn arbitrary_datagrams_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            action in 0u8..5,
        ) {
            let mut d = bytes;
            if d.len() >= 12 {
                d[8..12].copy_from_slice(&[0, 0, 0, action]);
            }
            if let Ok(request) = Request::parse(&d, &AnnounceOptions::default()) {
                proptest::prop_assert_eq!(u32::from(action), request.action().code());
                if let Request::Announce { url_data: Some(url), .. } = request {
                    proptest::prop_assert!(url.concat().len() <= MAX_URL_DATA);
                }
            }
        }
    }
}
