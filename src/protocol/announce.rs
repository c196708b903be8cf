//! BEP 3 announce: the request parser and the response encoder.
//!
//! The encoder writes BEP 23 compact `peers` (6 bytes each), BEP 7 `peers6`
//! (18 bytes each), or the original BEP 3 list of dictionaries when the client
//! asks for `compact=0`, plus BEP 24 `external ip`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU16;

use super::bencode::{self, bytes, dict_start, digits, end, key_bytes, key_int};
use super::query::{decode_20, decode_into, decode_u64, find_byte, params};
use super::{Error, InfoHash, PeerId};

/// At most this many `key=value` pairs in one announce. Real clients send
/// about fifteen; the cap bounds the work a hostile query can cause.
pub const MAX_ANNOUNCE_PARAMS: usize = 64;
/// Longest accepted `key` and `trackerid` value, in bytes.
pub const MAX_KEY_LEN: usize = 100;

/// What the announcing client says just happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A regular re-announce (`event` absent or `empty`).
    None,
    Started,
    Completed,
    Stopped,
}

/// Operator policy the parser applies while it reads the query.
#[derive(Debug, Clone)]
pub struct AnnounceOptions {
    /// Peers sent when the client gives no usable `numwant`.
    pub default_numwant: u32,
    /// Upper bound on peers sent, whatever `numwant` asks.
    pub max_numwant: u32,
    /// Honour `ip`, `ipv4` and `ipv6` (off by default: BEP 7 warns they let
    /// anyone point a swarm at a victim).
    pub accept_ip_param: bool,
}

impl Default for AnnounceOptions {
    fn default() -> Self {
        Self {
            default_numwant: 50,
            max_numwant: 200,
            accept_ip_param: false,
        }
    }
}

/// A valid announce; every field has been checked by [`AnnounceRequest::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: NonZeroU16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    /// Peers to send, already defaulted and capped.
    pub numwant: u32,
    pub compact: bool,
    pub no_peer_id: bool,
    /// Addresses the client claims (`ip`, `ipv4`, `ipv6`); always `None`
    /// unless [`AnnounceOptions::accept_ip_param`] is set.
    pub ip: Option<IpAddr>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// Stores `value` in `slot`, refusing a second occurrence of the parameter.
fn once<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), Error> {
    if slot.is_some() {
        return Err(Error::Duplicate(name));
    }
    *slot = Some(value);
    Ok(())
}

/// Checks a value that is only validated, never kept (`key`, `trackerid`):
/// well-formed escapes, at most [`MAX_KEY_LEN`] bytes decoded. Most keys are
/// a few plain characters and need no decoding.
fn check_opaque(raw: &[u8], name: &'static str) -> Result<(), Error> {
    if raw.len() <= MAX_KEY_LEN && find_byte(raw, b'%').is_none() {
        return Ok(());
    }
    let mut scratch = [0u8; MAX_KEY_LEN];
    decode_into(raw, name, &mut scratch, Error::TooLong(name, MAX_KEY_LEN)).map(|_| ())
}

fn decode_ip(raw: &[u8], name: &'static str) -> Result<IpAddr, Error> {
    // The longest textual IPv6 address is 45 bytes.
    let mut buf = [0u8; 48];
    let len = decode_into(raw, name, &mut buf, Error::BadIp(name))?;
    std::str::from_utf8(&buf[..len])
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(Error::BadIp(name))
}

impl AnnounceRequest {
    /// Parses the raw query string of `GET /announce` (without the `?`).
    pub fn parse(query: &[u8], options: &AnnounceOptions) -> Result<Self, Error> {
        let mut info_hash = None;
        let mut peer_id = None;
        let mut port = None;
        let mut uploaded = None;
        let mut downloaded = None;
        let mut left = None;
        let mut event = None;
        let mut numwant = None;
        let mut compact = None;
        let mut no_peer_id = None;
        let mut key = None;
        let mut tracker_id = None;
        let mut ip = None;
        let mut ipv4 = None;
        let mut ipv6 = None;

        for (count, (name, raw)) in params(query).enumerate() {
            if count == MAX_ANNOUNCE_PARAMS {
                return Err(Error::TooManyParameters(MAX_ANNOUNCE_PARAMS));
            }
            match name {
                b"info_hash" => once(
                    &mut info_hash,
                    "info_hash",
                    InfoHash(decode_20(raw, "info_hash")?),
                )?,
                b"peer_id" => once(&mut peer_id, "peer_id", PeerId(decode_20(raw, "peer_id")?))?,
                b"port" => {
                    let value = decode_u64(raw, "port")?;
                    let value = u16::try_from(value)
                        .ok()
                        .and_then(NonZeroU16::new)
                        .ok_or(Error::BadPort)?;
                    once(&mut port, "port", value)?
                }
                b"uploaded" => once(&mut uploaded, "uploaded", decode_u64(raw, "uploaded")?)?,
                b"downloaded" => once(
                    &mut downloaded,
                    "downloaded",
                    decode_u64(raw, "downloaded")?,
                )?,
                b"left" => once(&mut left, "left", decode_u64(raw, "left")?)?,
                b"event" => {
                    let value = match raw {
                        b"started" => Event::Started,
                        b"completed" => Event::Completed,
                        b"stopped" => Event::Stopped,
                        b"empty" | b"" => Event::None,
                        _ => return Err(Error::BadEvent),
                    };
                    once(&mut event, "event", value)?
                }
                b"numwant" => {
                    // BEP 3 leaves bad values undefined; a negative or
                    // malformed numwant falls back to the default.
                    let value = decode_u64(raw, "numwant").ok();
                    once(&mut numwant, "numwant", value)?
                }
                b"compact" => {
                    let value = match raw {
                        b"1" => true,
                        b"0" => false,
                        _ => return Err(Error::BadCompact),
                    };
                    once(&mut compact, "compact", value)?
                }
                b"no_peer_id" => once(&mut no_peer_id, "no_peer_id", raw != b"0")?,
                b"key" => {
                    check_opaque(raw, "key")?;
                    once(&mut key, "key", ())?
                }
                b"trackerid" => {
                    check_opaque(raw, "trackerid")?;
                    once(&mut tracker_id, "trackerid", ())?
                }
                b"ip" if options.accept_ip_param => once(&mut ip, "ip", decode_ip(raw, "ip")?)?,
                b"ipv4" if options.accept_ip_param => match decode_ip(raw, "ipv4")? {
                    IpAddr::V4(v4) => once(&mut ipv4, "ipv4", v4)?,
                    IpAddr::V6(_) => return Err(Error::BadIp("ipv4")),
                },
                b"ipv6" if options.accept_ip_param => match decode_ip(raw, "ipv6")? {
                    IpAddr::V6(v6) => once(&mut ipv6, "ipv6", v6)?,
                    IpAddr::V4(_) => return Err(Error::BadIp("ipv6")),
                },
                _ => {} // Unknown parameters (supportcrypto, corrupt, ...) are ignored.
            }
        }

        let numwant = match numwant.flatten() {
            Some(n) => n.min(u64::from(options.max_numwant)) as u32,
            None => options.default_numwant.min(options.max_numwant),
        };
        Ok(Self {
            info_hash: info_hash.ok_or(Error::Missing("info_hash"))?,
            peer_id: peer_id.ok_or(Error::Missing("peer_id"))?,
            port: port.ok_or(Error::Missing("port"))?,
            uploaded: uploaded.ok_or(Error::Missing("uploaded"))?,
            downloaded: downloaded.ok_or(Error::Missing("downloaded"))?,
            left: left.ok_or(Error::Missing("left"))?,
            event: event.unwrap_or(Event::None),
            numwant,
            compact: compact.unwrap_or(true),
            no_peer_id: no_peer_id.unwrap_or(false),
            ip,
            ipv4,
            ipv6,
        })
    }

    /// A peer with nothing left to download is a seeder.
    pub fn is_seeder(&self) -> bool {
        self.left == 0
    }

    /// The address the client claims for itself, preferring `ip`, then the
    /// claim of the same family as the connection, then the other family.
    pub fn claimed_ip(&self, connection_is_v6: bool) -> Option<IpAddr> {
        let v4 = self.ipv4.map(IpAddr::V4);
        let v6 = self.ipv6.map(IpAddr::V6);
        let (same, other) = if connection_is_v6 { (v6, v4) } else { (v4, v6) };
        self.ip.or(same).or(other)
    }
}

/// Peers chosen for one response, already in compact form: IPv4 address and
/// port (6 bytes) or IPv6 address and port (18 bytes), network byte order.
/// `*_ids` are filled only when the response lists peer ids.
#[derive(Debug, Default, Clone)]
pub struct PeerSet {
    pub v4: Vec<[u8; 6]>,
    pub v6: Vec<[u8; 18]>,
    pub v4_ids: Vec<PeerId>,
    pub v6_ids: Vec<PeerId>,
}

impl PeerSet {
    /// Empties the set, keeping its buffers for reuse.
    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
        self.v4_ids.clear();
        self.v6_ids.clear();
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything an announce response says.
#[derive(Debug, Clone)]
pub struct AnnounceResponse<'a> {
    pub interval: u32,
    pub min_interval: u32,
    /// Seeders, the announcing peer included.
    pub complete: u32,
    /// Leechers, the announcing peer included.
    pub incomplete: u32,
    /// Completed downloads of this torrent (the snatch count).
    pub downloaded: u64,
    pub peers: &'a PeerSet,
    pub compact: bool,
    pub no_peer_id: bool,
    /// The requester's address as the tracker sees it (BEP 24).
    pub external_ip: IpAddr,
    pub tracker_id: Option<&'a [u8]>,
    pub warning: Option<&'a str>,
}

fn split_port<const N: usize>(compact: &[u8; N]) -> (&[u8], u16) {
    let (ip, port) = compact.split_at(N - 2);
    (ip, u16::from_be_bytes([port[0], port[1]]))
}

/// One BEP 3 `{ip, peer id, port}` dictionary, keys in sorted order.
fn write_peer_dict(out: &mut Vec<u8>, ip: IpAddr, port: u16, id: Option<&PeerId>) {
    dict_start(out);
    key_bytes(out, b"ip", ip.to_string().as_bytes());
    if let Some(id) = id {
        key_bytes(out, b"peer id", &id.0);
    }
    key_int(out, b"port", u64::from(port));
    end(out);
}

impl AnnounceResponse<'_> {
    /// Appends the canonical bencoding of this response to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let peers = self.peers;
        out.reserve(160 + peers.v4.len() * 6 + peers.v6.len() * 18);
        // Keys in byte order: complete < downloaded < external ip <
        // incomplete < interval < min interval < peers < peers6 <
        // tracker id < warning message.
        // The fixed keys, with the framing between the values, are written
        // as constant runs: every announce answer has them, and encoding
        // each key's length was a third of the encoder's work.
        out.extend_from_slice(b"d8:completei");
        digits(out, u64::from(self.complete));
        out.extend_from_slice(b"e10:downloadedi");
        digits(out, self.downloaded);
        match self.external_ip {
            IpAddr::V4(ip) => {
                out.extend_from_slice(b"e11:external ip4:");
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.extend_from_slice(b"e11:external ip16:");
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(b"10:incompletei");
        digits(out, u64::from(self.incomplete));
        out.extend_from_slice(b"e8:intervali");
        digits(out, u64::from(self.interval));
        out.extend_from_slice(b"e12:min intervali");
        digits(out, u64::from(self.min_interval));
        out.extend_from_slice(b"e5:peers");
        if self.compact {
            bytes(out, peers.v4.as_flattened());
            if !peers.v6.is_empty() {
                key_bytes(out, b"peers6", peers.v6.as_flattened());
            }
        } else {
            let with_ids = !self.no_peer_id;
            bencode::list_start(out);
            for (i, peer) in peers.v4.iter().enumerate() {
                let (ip, port) = split_port(peer);
                let ip = IpAddr::from(<[u8; 4]>::try_from(ip).unwrap_or([0; 4]));
                write_peer_dict(out, ip, port, peers.v4_ids.get(i).filter(|_| with_ids));
            }
            for (i, peer) in peers.v6.iter().enumerate() {
                let (ip, port) = split_port(peer);
                let ip = IpAddr::from(<[u8; 16]>::try_from(ip).unwrap_or([0; 16]));
                write_peer_dict(out, ip, port, peers.v6_ids.get(i).filter(|_| with_ids));
            }
            end(out);
        }
        if let Some(id) = self.tracker_id {
            key_bytes(out, b"tracker id", id);
        }
        if let Some(warning) = self.warning {
            key_bytes(out, b"warning message", warning.as_bytes());
        }
        end(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "%BB%CB%21%AE%D1-V%B5%E8Ps%3B%10%91F%D13%83U%B4";
    const HASH_BYTES: [u8; 20] = [
        0xbb, 0xcb, 0x21, 0xae, 0xd1, 0x2d, 0x56, 0xb5, 0xe8, 0x50, 0x73, 0x3b, 0x10, 0x91, 0x46,
        0xd1, 0x33, 0x83, 0x55, 0xb4,
    ];

    fn query(extra: &str) -> String {
        format!(
            "info_hash={HASH}&peer_id=-LT2080-ZOpaGmWdn5cz&port=6881&uploaded=1&downloaded=2&left=3{extra}"
        )
    }

    fn parse(q: &str) -> Result<AnnounceRequest, Error> {
        AnnounceRequest::parse(q.as_bytes(), &AnnounceOptions::default())
    }

    #[test]
    fn parses_a_minimal_announce_with_defaults() {
        let req = parse(&query("")).unwrap();
        assert_eq!(req.info_hash, InfoHash(HASH_BYTES));
        assert_eq!(&req.peer_id.0, b"-LT2080-ZOpaGmWdn5cz");
        assert_eq!(req.port.get(), 6881);
        assert_eq!((req.uploaded, req.downloaded, req.left), (1, 2, 3));
        assert_eq!(req.event, Event::None);
        assert_eq!(req.numwant, 50);
        assert!(req.compact);
        assert!(!req.no_peer_id);
        assert!(!req.is_seeder());
        assert_eq!(req.ip, None);
    }

    #[test]
    fn every_required_parameter_is_named_when_missing() {
        for name in [
            "info_hash",
            "peer_id",
            "port",
            "uploaded",
            "downloaded",
            "left",
        ] {
            let full = query("");
            let prefix = format!("{name}=");
            let q: Vec<&str> = full
                .split('&')
                .filter(|p| !p.starts_with(&prefix))
                .collect();
            assert_eq!(parse(&q.join("&")), Err(Error::Missing(name)));
        }
    }

    #[test]
    fn events_parse_and_unknown_events_fail() {
        for (raw, event) in [
            ("started", Event::Started),
            ("completed", Event::Completed),
            ("stopped", Event::Stopped),
            ("empty", Event::None),
            ("", Event::None),
        ] {
            assert_eq!(
                parse(&query(&format!("&event={raw}"))).unwrap().event,
                event
            );
        }
        assert_eq!(parse(&query("&event=paused")), Err(Error::BadEvent));
        assert_eq!(parse(&query("&event=Started")), Err(Error::BadEvent));
    }

    #[test]
    fn port_must_be_in_range() {
        let base = query("").replace("port=6881&", "") + "&port=";
        for bad in ["0", "65536", "-1", "x"] {
            let err = parse(&format!("{base}{bad}")).unwrap_err();
            assert!(
                err == Error::BadPort || err == Error::NotANumber("port"),
                "{bad}: {err}"
            );
        }
        assert_eq!(parse(&format!("{base}0")), Err(Error::BadPort));
        assert_eq!(parse(&format!("{base}65536")), Err(Error::BadPort));
        assert_eq!(parse(&format!("{base}65535")).unwrap().port.get(), 65535);
    }

    #[test]
    fn numwant_is_defaulted_and_capped() {
        let with = |raw: &str| parse(&query(&format!("&numwant={raw}"))).unwrap().numwant;
        assert_eq!(with("10"), 10);
        assert_eq!(with("0"), 0);
        assert_eq!(with("1000"), 200);
        assert_eq!(with("99999999999999999999999"), 50);
        assert_eq!(with("-5"), 50);
        assert_eq!(with("many"), 50);
    }

    #[test]
    fn compact_and_no_peer_id() {
        assert!(!parse(&query("&compact=0")).unwrap().compact);
        assert!(parse(&query("&compact=1")).unwrap().compact);
        assert_eq!(parse(&query("&compact=2")), Err(Error::BadCompact));
        assert!(parse(&query("&no_peer_id=1")).unwrap().no_peer_id);
    }

    #[test]
    fn duplicates_are_refused() {
        let q = format!("{}&info_hash={HASH}", query(""));
        assert_eq!(parse(&q), Err(Error::Duplicate("info_hash")));
        assert_eq!(parse(&query("&left=4")), Err(Error::Duplicate("left")));
    }

    #[test]
    fn key_and_trackerid_are_bounded() {
        let ok = "k".repeat(MAX_KEY_LEN);
        assert!(parse(&query(&format!("&key={ok}&trackerid={ok}"))).is_ok());
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert_eq!(
            parse(&query(&format!("&key={long}"))),
            Err(Error::TooLong("key", MAX_KEY_LEN))
        );
        assert_eq!(
            parse(&query(&format!("&trackerid={long}"))),
            Err(Error::TooLong("trackerid", MAX_KEY_LEN))
        );
        // Escapes count as the bytes they stand for, and must be well formed.
        let escaped = "%6B".repeat(MAX_KEY_LEN);
        assert!(parse(&query(&format!("&key={escaped}"))).is_ok());
        assert_eq!(
            parse(&query(&format!("&key={escaped}%6B"))),
            Err(Error::TooLong("key", MAX_KEY_LEN))
        );
        assert_eq!(parse(&query("&key=ab%G1")), Err(Error::BadEscape("key")));
        assert_eq!(
            parse(&query("&trackerid=ab%4")),
            Err(Error::BadEscape("trackerid"))
        );
    }

    #[test]
    fn ip_parameters_are_ignored_unless_enabled() {
        let q = query("&ip=10.0.0.1&ipv6=not-an-ip");
        assert_eq!(parse(&q).unwrap().ip, None);
        let on = AnnounceOptions {
            accept_ip_param: true,
            ..AnnounceOptions::default()
        };
        assert_eq!(
            AnnounceRequest::parse(q.as_bytes(), &on),
            Err(Error::BadIp("ipv6"))
        );
        let q = query("&ip=10.0.0.1&ipv6=%3A%3A1&ipv4=192.0.2.7");
        let req = AnnounceRequest::parse(q.as_bytes(), &on).unwrap();
        assert_eq!(req.claimed_ip(false), Some("10.0.0.1".parse().unwrap()));
        let q = query("&ipv6=%3A%3A1&ipv4=192.0.2.7");
        let req = AnnounceRequest::parse(q.as_bytes(), &on).unwrap();
        assert_eq!(req.claimed_ip(true), Some("::1".parse().unwrap()));
        assert_eq!(req.claimed_ip(false), Some("192.0.2.7".parse().unwrap()));
        let q = query("&ipv4=%3A%3A1");
        assert_eq!(
            AnnounceRequest::parse(q.as_bytes(), &on),
            Err(Error::BadIp("ipv4"))
        );
    }

    #[test]
    fn too_many_parameters_are_refused() {
        let q = query(&"&x=1".repeat(MAX_ANNOUNCE_PARAMS));
        assert_eq!(
            parse(&q),
            Err(Error::TooManyParameters(MAX_ANNOUNCE_PARAMS))
        );
    }

    fn response<'a>(peers: &'a PeerSet, compact: bool, no_peer_id: bool) -> AnnounceResponse<'a> {
        AnnounceResponse {
            interval: 1800,
            min_interval: 900,
            complete: 2,
            incomplete: 1,
            downloaded: 7,
            peers,
            compact,
            no_peer_id,
            external_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            tracker_id: None,
            warning: None,
        }
    }

    #[test]
    fn encodes_compact_peers_and_peers6() {
        let mut peers = PeerSet::default();
        peers.v4.push([10, 0, 0, 1, 0x1A, 0xE1]);
        let mut v6 = [0u8; 18];
        v6[15] = 1;
        v6[16..].copy_from_slice(&6881u16.to_be_bytes());
        peers.v6.push(v6);
        let mut out = Vec::new();
        response(&peers, true, false).encode(&mut out);
        let mut expected = b"d8:completei2e10:downloadedi7e11:external ip4:\x7f\x00\x00\x01\
10:incompletei1e8:intervali1800e12:min intervali900e5:peers6:\x0a\x00\x00\x01\x1a\xe1\
6:peers618:"
            .to_vec();
        expected.extend_from_slice(&v6);
        expected.push(b'e');
        assert_eq!(out, expected);
    }

    #[test]
    fn encodes_empty_peers_without_peers6() {
        let mut out = Vec::new();
        response(&PeerSet::default(), true, false).encode(&mut out);
        assert!(
            out.ends_with(b"5:peers0:e"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn encodes_dictionary_peers_with_and_without_ids() {
        let mut peers = PeerSet::default();
        peers.v4.push([10, 0, 0, 1, 0x1A, 0xE1]);
        peers.v4_ids.push(PeerId(*b"-AB1234-abcdefghijkl"));
        let mut out = Vec::new();
        response(&peers, false, false).encode(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(
            text.contains("5:peersld2:ip8:10.0.0.17:peer id20:-AB1234-abcdefghijkl4:porti6881eee"),
            "{text}"
        );
        out.clear();
        response(&peers, false, true).encode(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(
            text.contains("5:peersld2:ip8:10.0.0.14:porti6881eee"),
            "{text}"
        );
    }
}
