//! Splitting a raw query string and decoding its values as bytes.
//!
//! `info_hash` and `peer_id` are raw binary, so values are percent-decoded to
//! bytes, never to text: `%2a` and `%2A` are the same byte, and a literal `+`
//! is the byte 0x2B, not a space (form decoding would corrupt binary hashes).
//! Unlike lenient decoders, a malformed escape (`%G1`, a trailing `%`) is an
//! error rather than a literal `%`, so a corrupted hash is refused instead of
//! silently becoming some other torrent.

use super::Error;

/// Splits `a=1&b=2` into `(key, raw value)` pairs, in order.
///
/// Empty segments (`a=1&&b=2`) are skipped; a segment without `=` is a key
/// with an empty value. Keys are compared raw: clients never escape them.
pub fn params(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = query;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let end = find_byte(rest, b'&').unwrap_or(rest.len());
            let segment = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            if segment.is_empty() {
                continue;
            }
            // Keys are short: a plain scan.
            return Some(match segment.iter().position(|&b| b == b'=') {
                Some(eq) => (&segment[..eq], &segment[eq + 1..]),
                None => (segment, &segment[segment.len()..]),
            });
        }
    })
}

/// Where the first `needle` in `bytes` is, eight bytes at a time: a query's
/// values run to 60 bytes (an escaped hash), and a byte-by-byte split was
/// most of an announce's parse.
pub fn find_byte(bytes: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(needle);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let diff = word.try_into().map_or(0, u64::from_le_bytes) ^ pattern;
        // The lowest byte of `diff` that is zero sets its high bit here
        // (bytes above it may too, from the borrow; the lowest is exact).
        let zero = diff.wrapping_sub(ONES) & !diff & HIGHS;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| b == needle).map(|i| at + i)
}

/// The value of each ASCII hex digit; `NOT_HEX` for any other byte.
static HEX: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
const NOT_HEX: u8 = 0xff;

/// Decodes `raw` into `buf`, returning the decoded length.
///
/// Fails with [`Error::BadEscape`] on a malformed escape and with `too_long`
/// when the decoded value does not fit `buf`; memory use is bounded by `buf`
/// whatever the input. One pass, no allocation: this runs for every value of
/// every announce. (Equivalent to `percent_encoding::percent_decode` on valid
/// input, which a property test checks, but strict on invalid escapes.)
pub fn decode_into(
    raw: &[u8],
    name: &'static str,
    buf: &mut [u8],
    too_long: Error,
) -> Result<usize, Error> {
    let mut len = 0;
    let mut rest = raw;
    while let [first, tail @ ..] = rest {
        let byte = if *first == b'%' {
            let [hi, lo, after @ ..] = tail else {
                return Err(Error::BadEscape(name));
            };
            let (hi, lo) = (HEX[usize::from(*hi)], HEX[usize::from(*lo)]);
            if (hi | lo) > 0x0f {
                return Err(Error::BadEscape(name));
            }
            rest = after;
            hi << 4 | lo
        } else {
            rest = tail;
            *first
        };
        let Some(slot) = buf.get_mut(len) else {
            return Err(overflow(rest, name, too_long));
        };
        *slot = byte;
        len += 1;
    }
    Ok(len)
}

/// The error for a value too long for its buffer, `rest` being what is
/// left of it: a bad escape further on is reported before the length, as
/// the value is malformed either way and the escape is the root cause.
fn overflow(rest: &[u8], name: &'static str, too_long: Error) -> Error {
    let bad_escape = rest.split(|&b| b == b'%').skip(1).any(
        |after| !matches!(after, [hi, lo, ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit()),
    );
    if bad_escape {
        Error::BadEscape(name)
    } else {
        too_long
    }
}

/// Decodes a value that must be exactly 20 bytes (`info_hash`, `peer_id`).
pub fn decode_20(raw: &[u8], name: &'static str) -> Result<[u8; 20], Error> {
    // Many peer ids (and a hash of plain bytes) need no decoding at all.
    if let Ok(plain) = <[u8; 20]>::try_from(raw)
        && find_byte(raw, b'%').is_none()
    {
        return Ok(plain);
    }
    let mut buf = [0u8; 20];
    let len = decode_into(raw, name, &mut buf, Error::WrongLength(name))?;
    if len != 20 {
        return Err(Error::WrongLength(name));
    }
    Ok(buf)
}

/// Decodes an unsigned decimal that fits in a `u64`: digits only, no sign,
/// no spaces, at least one digit.
pub fn decode_u64(raw: &[u8], name: &'static str) -> Result<u64, Error> {
    // u64::MAX has 20 digits; allow a few leading zeros beyond that.
    const MAX_DIGITS: usize = 24;
    // Clients send plain digits: parsed at once, without first looking for
    // an escape. Escaped digits take the general path.
    if raw.len() <= MAX_DIGITS
        && let Some(value) = parse_u64(raw)
    {
        return Ok(value);
    }
    if !raw.contains(&b'%') {
        return Err(Error::NotANumber(name));
    }
    let mut buf = [0u8; MAX_DIGITS];
    let len = decode_into(raw, name, &mut buf, Error::NotANumber(name))?;
    parse_u64(&buf[..len]).ok_or(Error::NotANumber(name))
}

/// Parses ASCII decimal digits into a `u64`, refusing overflow.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    // Up to 19 digits cannot overflow (u64::MAX is 20 digits long): the
    // common case, with no overflow check per digit.
    const SAFE_DIGITS: usize = 19;
    if digits.is_empty() {
        return None;
    }
    if digits.len() <= SAFE_DIGITS {
        let mut value = 0u64;
        for &d in digits {
            let digit = d.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value * 10 + u64::from(digit);
        }
        return Some(value);
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pairs_and_skips_empty_segments() {
        let pairs: Vec<_> = params(b"a=1&&b=&c&=d&e=f=g").collect();
        assert_eq!(
            pairs,
            vec![
                (&b"a"[..], &b"1"[..]),
                (b"b", b""),
                (b"c", b""),
                (b"", b"d"),
                (b"e", b"f=g"),
            ]
        );
    }

    #[test]
    fn escapes_are_case_insensitive_and_plus_is_literal() {
        let mut buf = [0u8; 8];
        let n = decode_into(b"%2a%2A+%20", "x", &mut buf, Error::TooLong("x", 8)).unwrap();
        assert_eq!(&buf[..n], b"**+ ");
    }

    proptest::proptest! {
        /// On valid input the strict decoder agrees with the lenient
        /// `percent_encoding::percent_decode`.
        #[test]
        fn agrees_with_percent_encoding(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let encoded = percent_encoding::percent_encode(&bytes, percent_encoding::NON_ALPHANUMERIC).to_string();
            let mut buf = [0u8; 64];
            let n = decode_into(encoded.as_bytes(), "x", &mut buf, Error::TooLong("x", 64)).unwrap();
            let reference: Vec<u8> = percent_encoding::percent_decode(encoded.as_bytes()).collect();
            proptest::prop_assert_eq!(&buf[..n], &reference[..]);
            proptest::prop_assert_eq!(&buf[..n], &bytes[..]);
        }
    }

    proptest::proptest! {
        /// The word-at-a-time search finds what a byte-by-byte one finds,
        /// and the split is the plain split on `&` and the first `=`.
        #[test]
        fn word_search_and_split_agree_with_plain_ones(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'&', b'=', b'%', b'a', 0x80, 0xff, 0x26 ^ 0x80]), 0..80),
        ) {
            for needle in [b'&', b'=', b'%', 0x80] {
                proptest::prop_assert_eq!(find_byte(&bytes, needle), bytes.iter().position(|&b| b == needle));
            }
            let plain: Vec<(&[u8], &[u8])> = bytes
                .split(|&b| b == b'&')
                .filter(|segment| !segment.is_empty())
                .map(|segment| match segment.iter().position(|&b| b == b'=') {
                    Some(eq) => (&segment[..eq], &segment[eq + 1..]),
                    None => (segment, &segment[segment.len()..]),
                })
                .collect();
            proptest::prop_assert_eq!(params(&bytes).collect::<Vec<_>>(), plain);
        }
    }

    proptest::proptest! {
        /// Numbers of any length (the fast path up to 19 digits, the checked
        /// one beyond) read as the standard parser reads plain digits.
        #[test]
        fn numbers_agree_with_the_standard_parser(
            digits in "[0-9]{1,25}",
            odd in proptest::sample::select(vec![None, Some(b'/'), Some(b':'), Some(b'a'), Some(b' ')]),
            at in proptest::num::usize::ANY,
        ) {
            let mut bytes = digits.into_bytes();
            if let Some(odd) = odd {
                let at = at % bytes.len();
                bytes[at] = odd;
            }
            let expected = std::str::from_utf8(&bytes)
                .ok()
                .filter(|text| text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok());
            proptest::prop_assert_eq!(parse_u64(&bytes), expected);
        }
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for raw in [&b"%G1"[..], b"%", b"abc%", b"%4", b"%4g", b"%%41"] {
            let mut buf = [0u8; 8];
            assert_eq!(
                decode_into(raw, "info_hash", &mut buf, Error::TooLong("x", 8)),
                Err(Error::BadEscape("info_hash")),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn twenty_byte_values_must_be_exactly_twenty() {
        let ok = [b'a'; 20];
        assert_eq!(decode_20(&ok, "info_hash"), Ok(ok));
        assert_eq!(
            decode_20(&[b'a'; 19], "info_hash"),
            Err(Error::WrongLength("info_hash"))
        );
        assert_eq!(
            decode_20(&[b'a'; 21], "info_hash"),
            Err(Error::WrongLength("info_hash"))
        );
        // 20 bytes written as escapes count as 20 bytes.
        let escaped = "%FF".repeat(20);
        assert_eq!(decode_20(escaped.as_bytes(), "peer_id"), Ok([0xFF; 20]));
        // Twenty characters holding an escape are decoded, not taken as
        // they are: here they are 18 bytes, or malformed.
        let short = format!("%41{}", "a".repeat(17));
        assert_eq!(
            decode_20(short.as_bytes(), "peer_id"),
            Err(Error::WrongLength("peer_id"))
        );
        let bad = format!("{}%4", "a".repeat(17));
        assert_eq!(
            decode_20(bad.as_bytes(), "peer_id"),
            Err(Error::BadEscape("peer_id"))
        );
    }

    #[test]
    fn numbers_are_unsigned_decimal_u64() {
        assert_eq!(decode_u64(b"0", "left"), Ok(0));
        assert_eq!(decode_u64(b"18446744073709551615", "left"), Ok(u64::MAX));
        assert_eq!(decode_u64(b"%31%32", "left"), Ok(12));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1.5",
            b" 1",
            b"18446744073709551616",
            b"0x10",
        ] {
            assert_eq!(
                decode_u64(bad, "left"),
                Err(Error::NotANumber("left")),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = "0".repeat(100);
        assert_eq!(
            decode_u64(long.as_bytes(), "left"),
            Err(Error::NotANumber("left"))
        );
    }
}
