//! Which address a request comes from: the socket's, or, behind a reverse
//! proxy the operator trusts, the one the proxy reports in a header.
//!
//! The header is believed only on connections from a configured trusted
//! network; then the **rightmost untrusted** address is taken, since
//! everything left of the last trusted hop was written by the client and can
//! be forged. A trusted proxy that sends no usable header is a failure
//! reason, never a guess.

use std::net::IpAddr;
use std::str::FromStr;

use super::driver::{Headers, header_text};

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a network (write 10.0.0.0/8 or ::1/128)");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                same_prefix(u32::from(net).into(), u32::from(a).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                same_prefix(u128::from(net), u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// Whether the top `prefix` bits of two `width`-bit numbers agree.
fn same_prefix(a: u128, b: u128, prefix: u8, width: u32) -> bool {
    let shift = width - u32::from(prefix);
    shift >= width || (a >> shift) == (b >> shift)
}

/// The header a trusted proxy reports the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`
    XForwardedFor,
    /// `X-Real-IP: client`
    XRealIp,
    /// RFC 7239 `Forwarded: for=client;proto=http, for="[2001:db8::1]:4711"`
    Forwarded,
}

impl FromStr for ProxyHeader {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ProxyHeader::XForwardedFor),
            "x-real-ip" => Ok(ProxyHeader::XRealIp),
            "forwarded" => Ok(ProxyHeader::Forwarded),
            _ => Err(format!(
                "client address header must be X-Forwarded-For, X-Real-IP or Forwarded, not {text:?}"
            )),
        }
    }
}

impl ProxyHeader {
    fn name(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "x-forwarded-for",
            ProxyHeader::XRealIp => "x-real-ip",
            ProxyHeader::Forwarded => "forwarded",
        }
    }
}

/// Trusted proxies and the header they use.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub trusted: Vec<Cidr>,
    pub header: ProxyHeader,
}

/// One address from a header element: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`,
/// `"[::1]"`, `::1`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, _port) = text.rsplit_once(':')?;
    host.parse().ok()
}

impl ProxyConfig {
    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(addr))
    }

    /// The client address of a request that arrived from `socket`, or the
    /// failure reason when a trusted proxy sent no usable header.
    pub fn client(&self, socket: IpAddr, headers: Headers<'_>) -> Result<IpAddr, String> {
        if !self.is_trusted(socket) {
            return Ok(socket);
        }
        let missing = || {
            format!(
                "the proxy sent no usable {} header: cannot tell the client's address",
                self.header.name()
            )
        };
        // All values of the header, in order, as one list of hops.
        let mut hops: Vec<IpAddr> = Vec::new();
        for value in headers.get_all(self.header.name()) {
            let value = header_text(value).ok_or_else(missing)?;
            for element in value.split(',') {
                let hop = match self.header {
                    ProxyHeader::XForwardedFor | ProxyHeader::XRealIp => parse_hop(element),
                    ProxyHeader::Forwarded => element
                        .split(';')
                        .filter_map(|pair| pair.trim().split_once('='))
                        .find(|(key, _)| key.eq_ignore_ascii_case("for"))
                        .and_then(|(_, value)| parse_hop(value)),
                };
                hops.push(hop.ok_or_else(missing)?);
            }
        }
        // Rightmost untrusted; if every hop is trusted, the first one.
        let client = hops
            .iter()
            .rev()
            .find(|hop| !self.is_trusted(**hop))
            .or(hops.first())
            .ok_or_else(missing)?;
        Ok(client.to_canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::HeaderMap;
    use hyper::header::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_contains() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.200.1.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
    }

    fn config(header: ProxyHeader) -> ProxyConfig {
        ProxyConfig {
            trusted: vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            header,
        }
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let c = config(ProxyHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["6.6.6.6, 192.0.2.7, 10.0.0.2"]);
        assert_eq!(
            c.client(ip("127.0.0.1"), Headers::from_map(&h)),
            Ok(ip("192.0.2.7"))
        );
        // Several header lines form one list.
        let h = headers("x-forwarded-for", &["6.6.6.6", "192.0.2.9"]);
        assert_eq!(
            c.client(ip("127.0.0.1"), Headers::from_map(&h)),
            Ok(ip("192.0.2.9"))
        );
        // All trusted: the first.
        let h = headers("x-forwarded-for", &["10.0.0.9, 10.0.0.2"]);
        assert_eq!(
            c.client(ip("127.0.0.1"), Headers::from_map(&h)),
            Ok(ip("10.0.0.9"))
        );
    }

    #[test]
    fn untrusted_connections_keep_their_address() {
        let c = config(ProxyHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["192.0.2.7"]);
        assert_eq!(
            c.client(ip("203.0.113.1"), Headers::from_map(&h)),
            Ok(ip("203.0.113.1"))
        );
    }

    #[test]
    fn missing_or_malformed_headers_are_failures() {
        let c = config(ProxyHeader::XForwardedFor);
        assert!(
            c.client(ip("127.0.0.1"), Headers::from_map(&HeaderMap::new()))
                .is_err()
        );
        let h = headers("x-forwarded-for", &["not-an-ip"]);
        assert!(
            c.client(ip("127.0.0.1"), Headers::from_map(&h))
                .unwrap_err()
                .contains("x-forwarded-for")
        );
    }

    #[test]
    fn x_real_ip_and_forwarded() {
        let c = config(ProxyHeader::XRealIp);
        let h = headers("x-real-ip", &["2001:db8::5"]);
        assert_eq!(
            c.client(ip("127.0.0.1"), Headers::from_map(&h)),
            Ok(ip("2001:db8::5"))
        );
        let c = config(ProxyHeader::Forwarded);
        let h = headers(
            "forwarded",
            &["for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\""],
        );
        assert_eq!(
            c.client(ip("10.1.1.1"), Headers::from_map(&h)),
            Ok(ip("2001:db8:cafe::17"))
        );
        let h = headers("forwarded", &["proto=http"]);
        assert!(c.client(ip("10.1.1.1"), Headers::from_map(&h)).is_err());
    }
}
