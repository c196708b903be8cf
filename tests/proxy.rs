//! Behind a reverse proxy: the client address comes from the configured
//! header only on connections from trusted networks. Runs on every reactor.

#[macro_use]
mod common;

use std::net::SocketAddr;

use common::{Announce, Dict, Tracker, exchange, id};

fn announce_with(addr: SocketAddr, announce: &Announce, headers: &str) -> Dict {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n",
        announce.target()
    );
    let response = exchange(addr, request.as_bytes());
    assert_eq!(response.status, 200);
    response.dict()
}

fn trusted_proxies_report_the_rightmost_untrusted_address() {
    let tracker = Tracker::start(&["--trusted-proxy", "127.0.0.0/8"]);
    let dict = announce_with(
        tracker.v4,
        &Announce::new(id(1), 1),
        "X-Forwarded-For: 6.6.6.6, 192.0.2.7, 127.0.0.9\r\n",
    );
    assert_eq!(dict.failure(), None);
    assert_eq!(dict.bytes("external ip"), [192, 0, 2, 7]);
    // The peer is recorded under the reported address.
    let view = tracker.announce_v6(&Announce::new(id(1), 2));
    assert_eq!(view.peers4(), vec![([192, 0, 2, 7], 10_001)]);
}

fn untrusted_connections_cannot_claim_an_address() {
    let tracker = Tracker::start(&["--trusted-proxy", "127.0.0.0/8"]);
    let dict = announce_with(
        tracker.v6,
        &Announce::new(id(2), 1),
        "X-Forwarded-For: 192.0.2.7\r\n",
    );
    let mut localhost6 = [0u8; 16];
    localhost6[15] = 1;
    assert_eq!(dict.bytes("external ip"), localhost6);
    // Without --trusted-proxy the header means nothing at all.
    drop(tracker);
    let tracker = Tracker::start(&[]);
    let dict = announce_with(
        tracker.v4,
        &Announce::new(id(2), 1),
        "X-Forwarded-For: 192.0.2.7\r\n",
    );
    assert_eq!(dict.bytes("external ip"), [127, 0, 0, 1]);
}

fn a_trusted_proxy_without_the_header_gets_a_failure_reason() {
    let tracker = Tracker::start(&["--trusted-proxy", "127.0.0.1/32"]);
    let dict = announce_with(tracker.v4, &Announce::new(id(3), 1), "");
    assert_eq!(
        dict.failure().as_deref(),
        Some("the proxy sent no usable x-forwarded-for header: cannot tell the client's address")
    );
    let dict = announce_with(
        tracker.v4,
        &Announce::new(id(3), 1),
        "X-Forwarded-For: garbage\r\n",
    );
    assert!(dict.failure().is_some());
}

fn forwarded_and_x_real_ip_headers() {
    let tracker = Tracker::start(&[
        "--trusted-proxy",
        "127.0.0.0/8",
        "--client-ip-header",
        "Forwarded",
    ]);
    let dict = announce_with(
        tracker.v4,
        &Announce::new(id(4), 1),
        "Forwarded: for=\"[2001:db8::17]:4711\";proto=http\r\n",
    );
    let mut expected = [0u8; 16];
    expected[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    expected[15] = 0x17;
    assert_eq!(dict.bytes("external ip"), expected);
    drop(tracker);
    let tracker = Tracker::start(&[
        "--trusted-proxy",
        "127.0.0.0/8",
        "--client-ip-header",
        "X-Real-IP",
    ]);
    let dict = announce_with(
        tracker.v4,
        &Announce::new(id(4), 1),
        "X-Real-IP: 198.51.100.4\r\n",
    );
    assert_eq!(dict.bytes("external ip"), [198, 51, 100, 4]);
}

reactor_tests!(
    trusted_proxies_report_the_rightmost_untrusted_address,
    untrusted_connections_cannot_claim_an_address,
    a_trusted_proxy_without_the_header_gets_a_failure_reason,
    forwarded_and_x_real_ip_headers,
);
