//! The UDP front end on arbitrary datagrams: parsing (BEP 15 and BEP 41),
//! connection ids, the store and the encoders, on one long-lived tracker
//! so that state builds up across inputs. The first byte picks the source
//! address and whether the datagram carries a valid connection id for it
//! (so announces and scrapes are reached, not only refusals).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "shared/core.rs"]
mod shared;
use shoal::udp::{ConnectionIds, UdpConfig, UdpTracker};

const KEY: [u8; 16] = [7; 16];

fn tracker() -> &'static UdpTracker {
    static TRACKER: OnceLock<UdpTracker> = OnceLock::new();
    TRACKER.get_or_init(|| {
        let core = shared::core();
        UdpTracker::new(
            core,
            ConnectionIds::with_key(KEY),
            UdpConfig {
                announce_path: "/announce".into(),
            },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let ip = shared::client(selector);
    let from = SocketAddr::new(ip, 6881);
    let mut datagram = rest.to_vec();
    // Half the inputs carry the id this source would have been issued (the
    // tracker's clock starts at 0 and stays in the first bucket here).
    let verified = selector & 4 != 0 && datagram.len() >= 8;
    if verified {
        let id = ConnectionIds::with_key(KEY).issue(from, 0);
        datagram[..8].copy_from_slice(&id.to_be_bytes());
    }
    let mut out = Vec::new();
    tracker().answer(&datagram, from, &mut out);
    if out.is_empty() {
        return;
    }
    // Every answer is a BEP 15 answer echoing the transaction id.
    assert!(out.len() >= 8, "answer of {} bytes", out.len());
    let action = u32::from_be_bytes(out[..4].try_into().unwrap());
    assert!(action <= 3, "action {action}");
    assert_eq!(out[4..8], datagram[12..16]);
    // No amplification towards a source that showed no valid id.
    let connect = action == 0;
    if !verified && !connect {
        assert!(
            out.len() <= datagram.len(),
            "{} > {}",
            out.len(),
            datagram.len()
        );
    }
    if connect {
        assert_eq!(out.len(), 16);
    }
});
