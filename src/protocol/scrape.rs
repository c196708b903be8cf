//! BEP 48 scrape: the request parser and the response encoder.

use super::bencode::{bytes, dict_start, end, key_bytes, key_int};
use super::query::{decode_20, params};
use super::{Error, InfoHash};

/// A valid scrape: distinct info hashes in ascending byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeRequest {
    pub info_hashes: Vec<InfoHash>,
    /// The query named more distinct hashes than the cap; only the first
    /// ones (in query order) are answered.
    pub truncated: bool,
}

impl ScrapeRequest {
    /// Parses the raw query string of `GET /scrape`, keeping at most
    /// `max_hashes` distinct `info_hash` values. Other parameters are ignored.
    pub fn parse(query: &[u8], max_hashes: usize) -> Result<Self, Error> {
        let mut info_hashes: Vec<InfoHash> = Vec::new();
        let mut truncated = false;
        for (name, raw) in params(query) {
            if name != b"info_hash" {
                continue;
            }
            // Every value is validated, even past the cap: a malformed hash is
            // an error wherever it stands.
            let hash = InfoHash(decode_20(raw, "info_hash")?);
            if info_hashes.contains(&hash) {
                continue;
            }
            if info_hashes.len() == max_hashes {
                truncated = true;
            } else {
                info_hashes.push(hash);
            }
        }
        if info_hashes.is_empty() {
            return Err(Error::FullScrapeDisabled);
        }
        info_hashes.sort_unstable();
        Ok(Self {
            info_hashes,
            truncated,
        })
    }
}

/// The public figures of one swarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwarmCounts {
    /// Seeders.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
    /// Completed downloads (the snatch count).
    pub downloaded: u64,
}

/// A scrape answer: one entry per requested hash, in ascending hash order.
#[derive(Debug, Clone)]
pub struct ScrapeResponse<'a> {
    pub files: &'a [(InfoHash, SwarmCounts)],
    pub warning: Option<&'a str>,
}

impl ScrapeResponse<'_> {
    /// Appends the canonical bencoding of this response to `out`.
    /// `files` must already be sorted by hash with no duplicates.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.files.windows(2).all(|w| w[0].0 < w[1].0));
        out.reserve(24 + self.files.len() * 80);
        out.extend_from_slice(FILES_OPEN);
        for (hash, counts) in self.files {
            encode_file(out, hash, counts);
        }
        end(out);
        if let Some(warning) = self.warning {
            key_bytes(out, b"warning message", warning.as_bytes());
        }
        end(out);
    }
}

/// A scrape response up to its first file: a full scrape, streamed, is
/// `FILES_OPEN`, then [`encode_file`] for each torrent in hash order, then
/// [`FILES_CLOSE`], byte for byte what [`ScrapeResponse::encode`] writes for
/// the same files.
pub const FILES_OPEN: &[u8] = b"d5:filesd";
/// The end of the `files` dictionary and of the response.
pub const FILES_CLOSE: &[u8] = b"ee";

/// One `files` entry: the hash, then its counts.
pub fn encode_file(out: &mut Vec<u8>, hash: &InfoHash, counts: &SwarmCounts) {
    bytes(out, &hash.0);
    dict_start(out);
    key_int(out, b"complete", u64::from(counts.complete));
    key_int(out, b"downloaded", counts.downloaded);
    key_int(out, b"incomplete", u64::from(counts.incomplete));
    end(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_param(byte: u8) -> String {
        format!("info_hash={}", format!("%{byte:02X}").repeat(20))
    }

    #[test]
    fn collects_sorted_distinct_hashes() {
        let q = format!("{}&{}&x=1&{}", hash_param(9), hash_param(3), hash_param(9));
        let req = ScrapeRequest::parse(q.as_bytes(), 100).unwrap();
        assert_eq!(req.info_hashes, vec![InfoHash([3; 20]), InfoHash([9; 20])]);
        assert!(!req.truncated);
    }

    #[test]
    fn keeps_the_first_hashes_up_to_the_cap() {
        let q: Vec<String> = [5u8, 1, 4, 2].iter().map(|&b| hash_param(b)).collect();
        let req = ScrapeRequest::parse(q.join("&").as_bytes(), 2).unwrap();
        assert_eq!(req.info_hashes, vec![InfoHash([1; 20]), InfoHash([5; 20])]);
        assert!(req.truncated);
    }

    #[test]
    fn refuses_no_hash_and_bad_hashes() {
        assert_eq!(
            ScrapeRequest::parse(b"", 100),
            Err(Error::FullScrapeDisabled)
        );
        assert_eq!(
            ScrapeRequest::parse(b"info_hash=short", 100),
            Err(Error::WrongLength("info_hash"))
        );
        let q = format!("{}&info_hash=%ZZ", hash_param(1));
        assert_eq!(
            ScrapeRequest::parse(q.as_bytes(), 100),
            Err(Error::BadEscape("info_hash"))
        );
    }

    #[test]
    fn encodes_files_and_warning() {
        let files = [(
            InfoHash([b'a'; 20]),
            SwarmCounts {
                complete: 1,
                incomplete: 2,
                downloaded: 3,
            },
        )];
        let mut out = Vec::new();
        ScrapeResponse {
            files: &files,
            warning: Some("w"),
        }
        .encode(&mut out);
        let expected = format!(
            "d5:filesd20:{}d8:completei1e10:downloadedi3e10:incompletei2eee15:warning message1:we",
            "a".repeat(20)
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
