//! The whole request path below HTTP framing: routing, parsing, the store
//! and the encoders, on one long-lived tracker so that state builds up
//! across inputs. The first byte picks the method, the client address and
//! whether the path is announce, scrape or something else.
#![no_main]

use std::sync::OnceLock;

use hyper::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;

#[path = "shared/core.rs"]
mod shared;
use shoal::http::driver::{Headers, RequestHead};
use shoal::http::{HttpConfig, Surface, Tracker};

fn tracker() -> &'static Tracker {
    static TRACKER: OnceLock<Tracker> = OnceLock::new();
    TRACKER.get_or_init(|| {
        let core = shared::core();
        Tracker::new(
            core,
            HttpConfig {
                tracker_id: Some(b"fuzz".to_vec()),
                proxy: None,
                announce_path: "/announce".into(),
                scrape_path: "/scrape".into(),
                root_redirect: Some("https://tracker.example/".into()),
                max_request_bytes: 16 * 1024,
            },
        )
        .with_full_scrape(shoal::http::full_scrape::RateLimit::new(0))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let method = if selector & 1 == 0 {
        Method::GET
    } else {
        Method::POST
    };
    let client = shared::client(selector >> 1);
    let path = match (selector >> 3) & 3 {
        0 | 1 => "/announce",
        2 => "/scrape",
        _ => "/elsewhere",
    };
    let headers = HeaderMap::new();
    let head = RequestHead {
        method: &method,
        path,
        query: rest,
        headers: Headers::from_map(&headers),
    };
    let response = tracker().handle(&head, client, Surface::All);
    let status = response.status().as_u16();
    assert!(matches!(status, 200 | 404 | 405), "status {status}");
});
