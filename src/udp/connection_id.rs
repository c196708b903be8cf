//! BEP 15 connection ids, stateless: a keyed hash of the client's address
//! and a time bucket, so a connect costs no memory and an id cannot be
//! guessed or used from another address.
//!
//! An id is 16 bits of the bucket it was issued in and 48 bits of
//! SipHash-1-3 (keyed with 128 random bits made at start) over the bucket
//! and the client's address and port. Buckets are a minute long and an id is
//! accepted in its own bucket and the two after it: at least two minutes
//! after issue (BEP 15 asks for that), at most three.

use std::net::{IpAddr, SocketAddr};

use siphasher::sip::SipHasher13;

/// Seconds per time bucket.
pub const BUCKET_SECS: u32 = 60;
/// Buckets after its own in which an id is still accepted.
const BUCKETS_ACCEPTED_AFTER: u32 = 2;
const MAC_BITS: u32 = 48;
const MAC_MASK: u64 = (1 << MAC_BITS) - 1;

/// Issues and checks connection ids with one secret key.
#[derive(Clone)]
pub struct ConnectionIds {
    hasher: SipHasher13,
}

impl std::fmt::Debug for ConnectionIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("ConnectionIds")
    }
}

impl ConnectionIds {
    /// Ids under a key made from the operating system's random source.
    pub fn new() -> std::io::Result<Self> {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(std::io::Error::other)?;
        Ok(Self::with_key(key))
    }

    /// Ids under `key` (tests).
    pub fn with_key(key: [u8; 16]) -> Self {
        Self {
            hasher: SipHasher13::new_with_key(&key),
        }
    }

    fn mac(&self, bucket: u16, client: SocketAddr) -> u64 {
        let mut input = [0u8; 2 + 16 + 2];
        input[..2].copy_from_slice(&bucket.to_be_bytes());
        let ip = match client.ip().to_canonical() {
            IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            IpAddr::V6(ip) => ip.octets(),
        };
        input[2..18].copy_from_slice(&ip);
        input[18..].copy_from_slice(&client.port().to_be_bytes());
        self.hasher.hash(&input) & MAC_MASK
    }

    /// The id for `client` at `now` (seconds on the tracker's clock).
    pub fn issue(&self, client: SocketAddr, now: u32) -> u64 {
        let bucket = (now / BUCKET_SECS) as u16;
        (u64::from(bucket) << MAC_BITS) | self.mac(bucket, client)
    }

    /// Whether `id` was issued to `client` no more than two whole buckets
    /// before `now`'s.
    pub fn check(&self, id: u64, client: SocketAddr, now: u32) -> bool {
        let bucket = (id >> MAC_BITS) as u16;
        let current = (now / BUCKET_SECS) as u16;
        let age = current.wrapping_sub(bucket);
        u32::from(age) <= BUCKETS_ACCEPTED_AFTER && self.mac(bucket, client) == id & MAC_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_id_lives_at_least_two_minutes_and_at_most_three() {
        let ids = ConnectionIds::with_key([7; 16]);
        let client = addr("192.0.2.1:6881");
        for issued in [0, 1, 59, 60, 119, 1_000_000] {
            let id = ids.issue(client, issued);
            for later in [0, 1, 60, 119, 120] {
                assert!(ids.check(id, client, issued + later), "{issued}+{later}");
            }
            // Past its bucket and the two after it: refused.
            let end = (issued / 60 + 3) * 60;
            assert!(ids.check(id, client, end - 1));
            assert!(!ids.check(id, client, end), "{issued}");
            assert!(!ids.check(id, client, end + 3600));
        }
        // An id from the future (a clock far ahead of it) is refused too.
        let id = ids.issue(client, 600);
        assert!(!ids.check(id, client, 540));
    }

    #[test]
    fn an_id_is_bound_to_the_address_and_the_key() {
        let ids = ConnectionIds::with_key([7; 16]);
        let client = addr("192.0.2.1:6881");
        let id = ids.issue(client, 100);
        assert!(ids.check(id, client, 100));
        assert!(!ids.check(id, addr("192.0.2.2:6881"), 100));
        assert!(!ids.check(id, addr("192.0.2.1:6882"), 100));
        assert!(!ids.check(id, addr("[2001:db8::1]:6881"), 100));
        // IPv4-mapped IPv6 is the same client as IPv4.
        assert!(ids.check(id, addr("[::ffff:192.0.2.1]:6881"), 100));
        let other = ConnectionIds::with_key([8; 16]);
        assert!(!other.check(id, client, 100));
    }

    #[test]
    fn guessed_ids_are_refused() {
        let ids = ConnectionIds::with_key([9; 16]);
        let client = addr("[2001:db8::5]:1000");
        let id = ids.issue(client, 100);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut accepted = 0;
        for _ in 0..100_000 {
            // Right bucket, random MAC: what a guesser who knows the format
            // can do best.
            let guess = (id & !MAC_MASK) | (rng.u64(..) & MAC_MASK);
            accepted += usize::from(ids.check(guess, client, 100));
        }
        assert_eq!(accepted, 0);
        // Flipping any one bit of a real id breaks it.
        for bit in 0..64 {
            assert!(!ids.check(id ^ (1 << bit), client, 100), "bit {bit}");
        }
    }
}
