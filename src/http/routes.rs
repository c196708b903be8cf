//! The two tracker routes: announce and scrape.

use std::net::IpAddr;

use super::{Refused, Tracker, refusal};
use crate::metrics::Failure;
use crate::protocol::{
    AnnounceRequest, AnnounceResponse, Error, PeerSet, ScrapeRequest, ScrapeResponse,
    encode_failure,
};
use crate::store::Refusal;

/// The failure reason for a torrent the access list refuses.
pub(super) const NOT_ALLOWED: &str = "torrent not allowed on this tracker";

impl Tracker {
    /// `GET /announce`: the response body, or the refusal.
    pub(super) fn announce(
        &self,
        query: &[u8],
        client: IpAddr,
        peers: &mut PeerSet,
    ) -> Result<Vec<u8>, Refused> {
        let request = AnnounceRequest::parse(query, &self.config.announce)
            .map_err(|error| refusal(&error))?;
        let peer_ip = request
            .claimed_ip(client.is_ipv6())
            .map_or(client, |ip| ip.to_canonical());
        peers.clear();
        if !self.allowed(&request.info_hash) {
            return Err(Refused(
                Failure::TorrentNotAllowed,
                encode_failure(NOT_ALLOWED),
            ));
        }
        let now = self.clock.now();
        let counts = self
            .store
            .announce(&request, peer_ip, now, peers)
            .map_err(|refused| {
                let kind = match refused {
                    Refusal::TrackerFull => Failure::TrackerFull,
                    Refusal::SwarmFull => Failure::SwarmFull,
                };
                Refused(kind, encode_failure(&refused.to_string()))
            })?;
        let mut body = Vec::new();
        AnnounceResponse {
            interval: self.jittered_interval(),
            min_interval: self.config.min_interval,
            complete: counts.complete,
            incomplete: counts.incomplete,
            downloaded: counts.downloaded,
            peers,
            compact: request.compact,
            no_peer_id: request.no_peer_id,
            external_ip: client,
            tracker_id: self.config.tracker_id.as_deref(),
            warning: None,
        }
        .encode(&mut body);
        Ok(body)
    }

    /// The configured interval plus up to 5% random jitter, so that clients
    /// started together drift apart instead of announcing in waves.
    fn jittered_interval(&self) -> u32 {
        let interval = self.config.interval;
        interval.saturating_add(fastrand::u32(0..=interval / 20))
    }

    /// `GET /scrape` (BEP 48): the response body, or why the query is
    /// refused (no `info_hash` at all is a full scrape, the caller's call).
    pub(super) fn scrape(&self, query: &[u8]) -> Result<Vec<u8>, Error> {
        let request = ScrapeRequest::parse(query, self.config.max_scrape_hashes)?;
        let mut files = Vec::with_capacity(request.info_hashes.len());
        self.store.scrape(&request.info_hashes, &mut files);
        // A torrent the access list refuses looks unknown.
        for (hash, counts) in &mut files {
            if !self.allowed(hash) {
                *counts = Default::default();
            }
        }
        let warning = request.truncated.then(|| {
            format!(
                "only the first {} info hashes were scraped",
                self.config.max_scrape_hashes
            )
        });
        let mut body = Vec::new();
        ScrapeResponse {
            files: &files,
            warning: warning.as_deref(),
        }
        .encode(&mut body);
        Ok(body)
    }
}
