//! The two tracker routes: announce and scrape, HTTP's side of them
//! (query parsing, bencoding); the rules are the core's.

use std::net::IpAddr;

use super::{Refused, Tracker, refusal};
use crate::protocol::{
    AnnounceRequest, AnnounceResponse, Error, InfoHash, PeerSet, ScrapeRequest, ScrapeResponse,
    encode_failure,
};

impl Tracker {
    /// `GET /announce`: the response body, or the refusal.
    pub(super) fn announce(
        &self,
        query: &[u8],
        client: IpAddr,
        peers: &mut PeerSet,
    ) -> Result<Vec<u8>, Refused> {
        let request = AnnounceRequest::parse(query, &self.core.rules().announce)
            .map_err(|error| refusal(&error))?;
        let peer_ip = request
            .claimed_ip(client.is_ipv6())
            .map_or(client, |ip| ip.to_canonical());
        let announced = self
            .core
            .announce(&request, peer_ip, peers)
            .map_err(|refused| Refused(refused.failure(), encode_failure(&refused.to_string())))?;
        let mut body = Vec::new();
        AnnounceResponse {
            interval: announced.interval,
            min_interval: announced.min_interval,
            complete: announced.counts.complete,
            incomplete: announced.counts.incomplete,
            downloaded: announced.counts.downloaded,
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

    /// `GET /scrape` (BEP 48): the response body, or why the query is
    /// refused (no `info_hash` at all is a full scrape, the caller's call).
    pub(super) fn scrape(&self, query: &[u8]) -> Result<Vec<u8>, Error> {
        let max = self.core.rules().max_scrape_hashes;
        let request = ScrapeRequest::parse(query, max)?;
        let mut files = Vec::with_capacity(request.info_hashes.len());
        let hashes: &[InfoHash] = &request.info_hashes;
        self.core.scrape(hashes, &mut files);
        let warning = request
            .truncated
            .then(|| format!("only the first {max} info hashes were scraped"));
        let mut body = Vec::new();
        ScrapeResponse {
            files: &files,
            warning: warning.as_deref(),
        }
        .encode(&mut body);
        Ok(body)
    }
}
