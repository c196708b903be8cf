//! Property tests: the hand-written bencode encoders produce exactly what
//! `serde_bencode` produces for the same values (so the output decodes to
//! those values and is canonical), and the parsers never panic.

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;
use serde::Serialize;
use serde_bytes::ByteBuf;

use shoal::protocol::{
    AnnounceOptions, AnnounceRequest, AnnounceResponse, InfoHash, PeerId, PeerSet, ScrapeRequest,
    ScrapeResponse, SwarmCounts,
};

#[derive(Serialize)]
struct PeerDict {
    ip: String,
    #[serde(rename = "peer id", skip_serializing_if = "Option::is_none")]
    peer_id: Option<ByteBuf>,
    port: u16,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Peers {
    Compact(ByteBuf),
    Dicts(Vec<PeerDict>),
}

#[derive(Serialize)]
struct Announce {
    complete: u32,
    downloaded: u64,
    #[serde(rename = "external ip")]
    external_ip: ByteBuf,
    incomplete: u32,
    interval: u32,
    #[serde(rename = "min interval")]
    min_interval: u32,
    peers: Peers,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers6: Option<ByteBuf>,
    #[serde(rename = "tracker id", skip_serializing_if = "Option::is_none")]
    tracker_id: Option<ByteBuf>,
    #[serde(rename = "warning message", skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

#[derive(Serialize)]
struct File {
    complete: u32,
    downloaded: u64,
    incomplete: u32,
}

#[derive(Serialize)]
struct Scrape {
    files: BTreeMap<ByteBuf, File>,
    #[serde(rename = "warning message", skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

fn ip_of(bytes: &[u8]) -> IpAddr {
    match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap()),
        _ => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap()),
    }
}

fn reference_announce(r: &AnnounceResponse<'_>) -> Vec<u8> {
    let external_ip = ByteBuf::from(match r.external_ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    });
    let (peers, peers6) = if r.compact {
        let v6 = (!r.peers.v6.is_empty()).then(|| ByteBuf::from(r.peers.v6.as_flattened()));
        (Peers::Compact(ByteBuf::from(r.peers.v4.as_flattened())), v6)
    } else {
        let dict = |addr: &[u8], id: &PeerId| PeerDict {
            ip: ip_of(&addr[..addr.len() - 2]).to_string(),
            peer_id: (!r.no_peer_id).then(|| ByteBuf::from(id.0.to_vec())),
            port: u16::from_be_bytes([addr[addr.len() - 2], addr[addr.len() - 1]]),
        };
        let mut list: Vec<PeerDict> = Vec::new();
        for (a, id) in r.peers.v4.iter().zip(&r.peers.v4_ids) {
            list.push(dict(a, id));
        }
        for (a, id) in r.peers.v6.iter().zip(&r.peers.v6_ids) {
            list.push(dict(a, id));
        }
        (Peers::Dicts(list), None)
    };
    serde_bencode::to_bytes(&Announce {
        complete: r.complete,
        downloaded: r.downloaded,
        external_ip,
        incomplete: r.incomplete,
        interval: r.interval,
        min_interval: r.min_interval,
        peers,
        peers6,
        tracker_id: r.tracker_id.map(|t| ByteBuf::from(t.to_vec())),
        warning: r.warning.map(str::to_owned),
    })
    .unwrap()
}

prop_compose! {
    fn peer_set()(v4 in proptest::collection::vec(any::<[u8; 6]>(), 0..60),
                  v6 in proptest::collection::vec(any::<[u8; 18]>(), 0..30),
                  seed in any::<u8>()) -> PeerSet {
        let v4_ids = v4.iter().enumerate().map(|(i, _)| PeerId([seed.wrapping_add(i as u8); 20])).collect();
        let v6_ids = v6.iter().enumerate().map(|(i, _)| PeerId([seed ^ i as u8; 20])).collect();
        PeerSet { v4, v6, v4_ids, v6_ids }
    }
}

proptest! {
    #[test]
    fn announce_encoding_matches_serde_bencode(
        peers in peer_set(),
        counts in any::<(u32, u32, u64, u32, u32)>(),
        compact in any::<bool>(),
        no_peer_id in any::<bool>(),
        v6_client in any::<bool>(),
        ip in any::<[u8; 16]>(),
        tracker_id in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..100)),
        warning in proptest::option::of(".{0,40}"),
    ) {
        let external_ip = if v6_client { ip_of(&ip) } else { ip_of(&ip[..4]) };
        let response = AnnounceResponse {
            interval: counts.3,
            min_interval: counts.4,
            complete: counts.0,
            incomplete: counts.1,
            downloaded: counts.2,
            peers: &peers,
            compact,
            no_peer_id,
            external_ip,
            tracker_id: tracker_id.as_deref(),
            warning: warning.as_deref(),
        };
        let mut ours = Vec::new();
        response.encode(&mut ours);
        prop_assert_eq!(ours, reference_announce(&response));
    }

    #[test]
    fn scrape_encoding_matches_serde_bencode(
        entries in proptest::collection::btree_map(any::<[u8; 20]>(), any::<(u32, u32, u64)>(), 0..50),
        warning in proptest::option::of(".{0,40}"),
    ) {
        let files: Vec<(InfoHash, SwarmCounts)> = entries
            .iter()
            .map(|(h, c)| (InfoHash(*h), SwarmCounts { complete: c.0, incomplete: c.1, downloaded: c.2 }))
            .collect();
        let mut ours = Vec::new();
        ScrapeResponse { files: &files, warning: warning.as_deref() }.encode(&mut ours);
        let reference = Scrape {
            files: entries
                .iter()
                .map(|(h, c)| (ByteBuf::from(h.to_vec()), File { complete: c.0, downloaded: c.2, incomplete: c.1 }))
                .collect(),
            warning,
        };
        prop_assert_eq!(ours, serde_bencode::to_bytes(&reference).unwrap());
    }

    /// Any bytes at all: the parsers answer Ok or Err, never panic.
    #[test]
    fn parsers_never_panic(query in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = AnnounceRequest::parse(&query, &AnnounceOptions { accept_ip_param: true, ..AnnounceOptions::default() });
        let _ = ScrapeRequest::parse(&query, 100);
    }

    /// Queries built from real parameter names and hostile values.
    #[test]
    fn parsers_never_panic_on_near_valid_queries(
        params in proptest::collection::vec(
            (prop_oneof![
                Just("info_hash"), Just("peer_id"), Just("port"), Just("left"), Just("uploaded"),
                Just("downloaded"), Just("event"), Just("numwant"), Just("compact"), Just("ip"),
                Just("ipv6"), Just("key"), Just("no_peer_id")
            ], "[%0-9a-fA-FG+&=]{0,64}"),
            0..20)
    ) {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let query = query.join("&");
        let _ = AnnounceRequest::parse(query.as_bytes(), &AnnounceOptions { accept_ip_param: true, ..AnnounceOptions::default() });
        let _ = ScrapeRequest::parse(query.as_bytes(), 3);
    }

    /// Any valid announce, percent-encoded every way a client might, parses
    /// back to exactly the values that were encoded.
    #[test]
    fn valid_announces_round_trip(
        hash in any::<[u8; 20]>(),
        peer in any::<[u8; 20]>(),
        port in 1u16..,
        amounts in any::<(u64, u64, u64)>(),
        lower in any::<bool>(),
        numwant in 0u32..300,
    ) {
        let escape = |bytes: &[u8]| -> String {
            bytes.iter().map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._~!*'()+".contains(&b) {
                    (b as char).to_string()
                } else if lower {
                    format!("%{b:02x}")
                } else {
                    format!("%{b:02X}")
                }
            }).collect()
        };
        let query = format!(
            "info_hash={}&peer_id={}&port={port}&uploaded={}&downloaded={}&left={}&numwant={numwant}&compact=1",
            escape(&hash), escape(&peer), amounts.0, amounts.1, amounts.2
        );
        let req = AnnounceRequest::parse(query.as_bytes(), &AnnounceOptions::default()).unwrap();
        prop_assert_eq!(req.info_hash, InfoHash(hash));
        prop_assert_eq!(req.peer_id, PeerId(peer));
        prop_assert_eq!(req.port.get(), port);
        prop_assert_eq!((req.uploaded, req.downloaded, req.left), amounts);
        prop_assert_eq!(req.numwant, numwant.min(200));
    }
}
