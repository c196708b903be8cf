//! The two tracker routes: announce and scrape, HTTP's side of them
//! (query parsing, bencoding); the rules are the core's. Each answers at
//! once with the memory store, or with a future with a shared one.

use std::net::IpAddr;

use super::{Refused, Tracker, refusal};
use crate::protocol::{
    AnnounceRequest, AnnounceResponse, Error, InfoHash, PeerSet, ScrapeRequest, ScrapeResponse,
    SwarmCounts, encode_failure,
};
use crate::tracker::{Announced, Answer, Refusal};

/// A route's body, or the refusal: now or later.
pub(super) type RouteAnswer = Answer<Result<Vec<u8>, Refused>, Result<Vec<u8>, Refused>>;

/// What an announce response needs of its request, kept while the store
/// answers.
#[derive(Clone, Copy)]
struct AnnounceShape {
    compact: bool,
    no_peer_id: bool,
    client: IpAddr,
}

impl AnnounceShape {
    fn encode(
        self,
        answer: Result<Announced, Refusal>,
        peers: &PeerSet,
        tracker_id: Option<&[u8]>,
    ) -> Result<Vec<u8>, Refused> {
        let announced = answer
            .map_err(|refused| Refused(refused.failure(), encode_failure(&refused.to_string())))?;
        let mut body = Vec::new();
        AnnounceResponse {
            interval: announced.interval,
            min_interval: announced.min_interval,
            complete: announced.counts.complete,
            incomplete: announced.counts.incomplete,
            downloaded: announced.counts.downloaded,
            peers,
            compact: self.compact,
            no_peer_id: self.no_peer_id,
            external_ip: self.client,
            tracker_id,
            warning: None,
        }
        .encode(&mut body);
        Ok(body)
    }
}

impl Tracker {
    /// `GET /announce`: the response body, or the refusal.
    pub(super) fn announce(
        &self,
        query: &[u8],
        client: IpAddr,
        peers: &mut PeerSet,
    ) -> RouteAnswer {
        let request = match AnnounceRequest::parse(query, &self.core.rules().announce) {
            Ok(request) => request,
            Err(error) => return Answer::Now(Err(refusal(&error))),
        };
        let peer_ip = request
            .claimed_ip(client.is_ipv6())
            .map_or(client, |ip| ip.to_canonical());
        let shape = AnnounceShape {
            compact: request.compact,
            no_peer_id: request.no_peer_id,
            client,
        };
        match self.core.announce(&request, peer_ip, peers) {
            Answer::Now(answer) => {
                Answer::Now(shape.encode(answer, peers, self.config.tracker_id.as_deref()))
            }
            Answer::Later(later) => {
                let tracker_id = self.config.tracker_id.clone();
                Answer::Later(Box::pin(async move {
                    let (answer, peers) = match later.await {
                        Ok((announced, peers)) => (Ok(announced), peers),
                        Err(refused) => (Err(refused), PeerSet::default()),
                    };
                    shape.encode(answer, &peers, tracker_id.as_deref())
                }))
            }
        }
    }

    /// `GET /scrape` (BEP 48): the response body, or why the query is
    /// refused (no `info_hash` at all is a full scrape, the caller's call).
    pub(super) fn scrape(&self, query: &[u8]) -> Result<RouteAnswer, Error> {
        let max = self.core.rules().max_scrape_hashes;
        let request = ScrapeRequest::parse(query, max)?;
        let mut files = Vec::with_capacity(request.info_hashes.len());
        let hashes: &[InfoHash] = &request.info_hashes;
        let warning = request
            .truncated
            .then(|| format!("only the first {max} info hashes were scraped"));
        Ok(match self.core.scrape(hashes, &mut files) {
            Answer::Now(()) => Answer::Now(Ok(encode_scrape(&files, warning.as_deref()))),
            Answer::Later(later) => Answer::Later(Box::pin(async move {
                match later.await {
                    Ok(files) => Ok(encode_scrape(&files, warning.as_deref())),
                    Err(refused) => Err(Refused(
                        refused.failure(),
                        encode_failure(&refused.to_string()),
                    )),
                }
            })),
        })
    }
}

fn encode_scrape(files: &[(InfoHash, SwarmCounts)], warning: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    ScrapeResponse { files, warning }.encode(&mut body);
    body
}
