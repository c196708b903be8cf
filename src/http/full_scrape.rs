//! Full scrape (a scrape without `info_hash`): the counts of every torrent,
//! for aggregators and the operator. Off unless `full_scrape` is set.
//!
//! The answer is the same bencoded dictionary as any scrape, produced in
//! slices as the connection drains it ([`FullScrapeBody`]): each slice is
//! the torrents whose info hashes start with a range of 16-bit prefixes,
//! sorted, so the output is in canonical key order while only one slice is
//! held at a time. It is gzip-compressed when the client accepts gzip, and
//! each client address (an IPv6 client by its /64) gets one full scrape per
//! `full_scrape_interval` ([`RateLimit`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::driver::{Headers, header_text};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use hyper::body::{Body, Frame, SizeHint};

use crate::protocol::scrape::{FILES_CLOSE, FILES_OPEN, encode_file};
use crate::store::Store;

/// Client addresses remembered at most; beyond it, old entries are dropped
/// and, if none is old enough, the newcomer is refused.
const MAX_CLIENTS: usize = 65_536;

/// Torrents per slice, about: bounds the memory one full scrape holds.
const SLICE_TORRENTS: usize = 32_768;

/// Number of 16-bit info hash prefixes.
const PREFIXES: u32 = 1 << 16;

/// One full scrape per client address per interval.
pub struct RateLimit {
    interval: u32,
    last: Mutex<HashMap<u128, u32>>,
}

impl RateLimit {
    /// `interval` in seconds; 0 lets every request through.
    pub fn new(interval: u32) -> Self {
        Self {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    pub fn interval(&self) -> u32 {
        self.interval
    }

    /// `Ok` if `client` may full-scrape at coarse time `now` (and records
    /// it), otherwise the seconds to wait.
    pub fn admit(&self, client: IpAddr, now: u32) -> Result<(), u32> {
        if self.interval == 0 {
            return Ok(());
        }
        let key = match client.to_canonical() {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            // One host usually holds a whole /64.
            IpAddr::V6(v6) => ((u128::from(v6) >> 64) << 64) | (1 << 32),
        };
        let Ok(mut last) = self.last.lock() else {
            return Err(self.interval);
        };
        if let Some(&at) = last.get(&key) {
            let waited = now.saturating_sub(at);
            if waited < self.interval {
                return Err(self.interval - waited);
            }
        }
        if last.len() >= MAX_CLIENTS {
            let interval = self.interval;
            last.retain(|_, at| now.saturating_sub(*at) < interval);
            if last.len() >= MAX_CLIENTS {
                return Err(self.interval);
            }
        }
        last.insert(key, now);
        Ok(())
    }
}

/// Whether `Accept-Encoding` accepts gzip: an explicit `gzip` (or `x-gzip`)
/// entry decides, else `*`; `q=0` refuses.
pub fn accepts_gzip(headers: Headers<'_>) -> bool {
    let mut wildcard = None;
    for value in headers.get_all("accept-encoding") {
        let Some(value) = header_text(value) else {
            continue;
        };
        for entry in value.split(',') {
            let mut parts = entry.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|param| {
                let param = param.trim();
                param
                    .strip_prefix("q=")
                    .or_else(|| param.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                return !refused;
            }
            if coding == "*" {
                wildcard = Some(!refused);
            }
        }
    }
    wildcard.unwrap_or(false)
}

/// The streamed body of a full scrape.
pub struct FullScrapeBody {
    store: Arc<Store>,
    /// The first prefix of the next slice; `PREFIXES` once all are done.
    next: u32,
    step: u32,
    started: bool,
    finished: bool,
    gzip: Option<GzEncoder<Vec<u8>>>,
    files: Vec<(crate::protocol::InfoHash, crate::protocol::SwarmCounts)>,
}

impl FullScrapeBody {
    pub fn new(store: Arc<Store>, gzip: bool) -> Self {
        let slices = store
            .memory()
            .map_or(0, |m| m.torrents())
            .div_ceil(SLICE_TORRENTS)
            .clamp(1, 256) as u32;
        Self {
            store,
            next: 0,
            step: PREFIXES.div_ceil(slices),
            started: false,
            finished: false,
            gzip: gzip.then(|| GzEncoder::new(Vec::new(), Compression::fast())),
            files: Vec::new(),
        }
    }

    /// The next piece of output, `None` at the end. A slice with no
    /// torrents (or whose compressed bytes are still buffered) yields an
    /// empty piece, which the caller skips.
    fn next_piece(&mut self) -> Option<Vec<u8>> {
        if self.finished {
            return None;
        }
        let mut plain = Vec::new();
        if !self.started {
            self.started = true;
            plain.extend_from_slice(FILES_OPEN);
        }
        if self.next < PREFIXES {
            let end = self.next.saturating_add(self.step).min(PREFIXES);
            self.files.clear();
            if let Some(memory) = self.store.memory() {
                memory.scrape_prefixes(self.next..end, &mut self.files);
            }
            plain.reserve(self.files.len() * 72);
            for (hash, counts) in &self.files {
                encode_file(&mut plain, hash, counts);
            }
            self.next = end;
        }
        let last = self.next >= PREFIXES;
        if last {
            plain.extend_from_slice(FILES_CLOSE);
            self.finished = true;
            self.files = Vec::new();
        }
        let Some(encoder) = &mut self.gzip else {
            return Some(plain);
        };
        // Writing to a Vec cannot fail.
        let _ = encoder.write_all(&plain);
        if last {
            let encoder = self.gzip.take()?;
            return Some(encoder.finish().unwrap_or_default());
        }
        Some(std::mem::take(encoder.get_mut()))
    }
}

impl Body for FullScrapeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        while let Some(piece) = this.next_piece() {
            if !piece.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(piece)))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AnnounceOptions, AnnounceRequest, PeerSet, ScrapeResponse};
    use crate::store::{MemoryStore, StoreConfig};
    use hyper::HeaderMap;
    use hyper::header::{self, HeaderValue};

    fn store_with(torrents: u32) -> Arc<Store> {
        let store = Arc::new(Store::Memory(MemoryStore::new(StoreConfig::unlimited(60))));
        let mut out = PeerSet::default();
        for n in 0..torrents {
            let mut hash = [0u8; 20];
            // Spread over prefixes, like SHA-1 hashes.
            hash[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
            let query = format!(
                "info_hash={}&peer_id={}&port=1000&uploaded=0&downloaded=0&left={}",
                hash.iter().map(|b| format!("%{b:02X}")).collect::<String>(),
                "p".repeat(20),
                n % 2
            );
            let request =
                AnnounceRequest::parse(query.as_bytes(), &AnnounceOptions::default()).unwrap();
            store
                .memory()
                .unwrap()
                .announce(&request, "10.0.0.1".parse().unwrap(), 0, &mut out)
                .unwrap();
        }
        store
    }

    fn drain(mut body: FullScrapeBody) -> (Vec<u8>, usize) {
        let (mut all, mut pieces) = (Vec::new(), 0);
        while let Some(piece) = body.next_piece() {
            pieces += usize::from(!piece.is_empty());
            all.extend(piece);
        }
        (all, pieces)
    }

    /// What an ordinary scrape of every torrent would answer.
    fn expected(store: &Store) -> Vec<u8> {
        let mut files = Vec::new();
        store
            .memory()
            .unwrap()
            .scrape_prefixes(0..PREFIXES, &mut files);
        let mut out = Vec::new();
        ScrapeResponse {
            files: &files,
            warning: None,
        }
        .encode(&mut out);
        out
    }

    #[test]
    fn streamed_output_equals_one_scrape_of_everything() {
        for torrents in [0, 1, 70_000] {
            let store = store_with(torrents);
            let (plain, pieces) = drain(FullScrapeBody::new(store.clone(), false));
            assert_eq!(plain, expected(&store), "{torrents} torrents");
            if torrents == 70_000 {
                assert!(pieces >= 3, "sent in slices, not at once: {pieces}");
            }
        }
    }

    #[test]
    fn gzip_output_decompresses_to_the_same_bytes() {
        let store = store_with(5_000);
        let (compressed, _) = drain(FullScrapeBody::new(store.clone(), true));
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut plain,
        )
        .unwrap();
        assert_eq!(plain, expected(&store));
        assert!(compressed.len() < plain.len());
    }

    #[test]
    fn one_full_scrape_per_address_per_interval() {
        let limit = RateLimit::new(60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(limit.admit(a, 100), Ok(()));
        assert_eq!(limit.admit(a, 130), Err(30));
        assert_eq!(limit.admit(b, 130), Ok(()));
        assert_eq!(limit.admit(a, 160), Ok(()));
        // One IPv6 host is its /64.
        let c: IpAddr = "2001:db8::1".parse().unwrap();
        let d: IpAddr = "2001:db8::2".parse().unwrap();
        let e: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert_eq!(limit.admit(c, 0), Ok(()));
        assert_eq!(limit.admit(d, 1), Err(59));
        assert_eq!(limit.admit(e, 1), Ok(()));
        assert_eq!(RateLimit::new(0).admit(a, 0), Ok(()));
    }

    #[test]
    fn the_client_table_is_bounded() {
        let limit = RateLimit::new(60);
        for n in 0..MAX_CLIENTS as u32 {
            assert_eq!(limit.admit(IpAddr::from(n.to_be_bytes()), 0), Ok(()));
        }
        let newcomer = IpAddr::from([255, 255, 255, 255]);
        assert_eq!(limit.admit(newcomer, 10), Err(60));
        // Once the old entries have aged out they make room.
        assert_eq!(limit.admit(newcomer, 60), Ok(()));
        assert_eq!(limit.last.lock().unwrap().len(), 1);
    }

    #[test]
    fn accept_encoding_is_read_with_q_values() {
        let cases = [
            ("gzip", true),
            ("deflate, gzip;q=0.5", true),
            ("GZIP", true),
            ("x-gzip", true),
            ("gzip;q=0", false),
            ("gzip; q=0.0, *", false),
            ("*", true),
            ("*;q=0", false),
            ("br, deflate", false),
            ("identity", false),
        ];
        for (value, accepted) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            assert_eq!(
                accepts_gzip(Headers::from_map(&headers)),
                accepted,
                "{value}"
            );
        }
        assert!(!accepts_gzip(Headers::from_map(&HeaderMap::new())));
    }
}
