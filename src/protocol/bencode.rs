//! A minimal canonical bencode writer.
//!
//! Responses are written straight into one output buffer, with no intermediate
//! tree. Callers write dictionary keys in sorted byte order themselves (every
//! response has a fixed key set), which is what makes the output canonical;
//! property tests check each encoder byte for byte against `serde_bencode`.

/// Opens a dictionary.
#[inline]
pub fn dict_start(out: &mut Vec<u8>) {
    out.push(b'd');
}

/// Opens a list.
#[inline]
pub fn list_start(out: &mut Vec<u8>) {
    out.push(b'l');
}

/// Closes the innermost dictionary or list.
#[inline]
pub fn end(out: &mut Vec<u8>) {
    out.push(b'e');
}

/// Writes an integer: `i<decimal>e`.
#[inline]
pub fn int(out: &mut Vec<u8>, value: u64) {
    out.push(b'i');
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    out.push(b'e');
}

/// Writes the decimal digits of `value` alone, for a caller that writes
/// the framing around them as part of a constant run (`e8:intervali`).
#[inline]
pub fn digits(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Writes a byte string: `<length>:<bytes>`.
#[inline]
pub fn bytes(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(itoa::Buffer::new().format(value.len()).as_bytes());
    out.push(b':');
    out.extend_from_slice(value);
}

/// Writes a dictionary entry whose value is an integer.
#[inline]
pub fn key_int(out: &mut Vec<u8>, key: &[u8], value: u64) {
    bytes(out, key);
    int(out, value);
}

/// Writes a dictionary entry whose value is a byte string.
#[inline]
pub fn key_bytes(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    bytes(out, key);
    bytes(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_each_bencode_kind() {
        let mut out = Vec::new();
        dict_start(&mut out);
        key_int(&mut out, b"a", 0);
        key_bytes(&mut out, b"b", b"");
        bytes(&mut out, b"c");
        list_start(&mut out);
        int(&mut out, u64::MAX);
        end(&mut out);
        end(&mut out);
        assert_eq!(out, b"d1:ai0e1:b0:1:cli18446744073709551615eee");
    }
}
