//! Durable snatch counts: the state file.
//!
//! The per-torrent `downloaded` counts are what a tracker publishes and must
//! never lose. They are written periodically and on graceful shutdown to one
//! file, atomically: the new state goes to `PATH.tmp`, is fsynced, renamed
//! over `PATH`, and the directory is fsynced, so a crash or power loss at any
//! moment leaves the old file or the new one, never a mixture.
//!
//! Format (version 1), little-endian:
//!
//! ```text
//! magic  b"SHOALST\0"        8 bytes
//! version u32 = 1            4 bytes
//! count   u64                8 bytes
//! count x (info hash 20 bytes, downloaded u64)
//! crc32 of everything above  4 bytes
//! ```
//!
//! A file that is short, long, of another version or with a bad checksum is
//! refused with a [`StateError`] that says what is wrong; the tracker does not
//! start empty unless the operator says so.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::protocol::InfoHash;

const MAGIC: &[u8; 8] = b"SHOALST\0";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8;
const ENTRY: usize = 20 + 8;

/// What can be wrong with a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("state file {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
}

/// Encodes `counts` in the version 1 format.
pub fn encode(counts: &[(InfoHash, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + counts.len() * ENTRY + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(counts.len() as u64).to_le_bytes());
    for (hash, downloaded) in counts {
        out.extend_from_slice(&hash.0);
        out.extend_from_slice(&downloaded.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a version 1 file; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Vec<(InfoHash, u64)>, String> {
    if bytes.len() < HEADER + 4 {
        return Err(format!(
            "{} bytes, shorter than any state file",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a shoal state file (bad magic)".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    if version != VERSION {
        return Err(format!(
            "version {version}, this shoal reads version {VERSION}"
        ));
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&body[12..20]);
    let count = u64::from_le_bytes(count);
    let expected = (count as u128) * ENTRY as u128 + HEADER as u128;
    if body.len() as u128 != expected {
        return Err(format!(
            "truncated or padded: {} bytes for {count} entries, expected {}",
            bytes.len(),
            expected + 4
        ));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(body[HEADER..]
        .chunks_exact(ENTRY)
        .map(|entry| {
            let mut hash = [0u8; 20];
            hash.copy_from_slice(&entry[..20]);
            let mut downloaded = [0u8; 8];
            downloaded.copy_from_slice(&entry[20..]);
            (InfoHash(hash), u64::from_le_bytes(downloaded))
        })
        .collect())
}

/// Loads the state file; `Ok(None)` when there is none yet (a first start).
pub fn load(path: &Path) -> Result<Option<Vec<(InfoHash, u64)>>, StateError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            });
        }
    };
    decode(&bytes).map(Some).map_err(|why| StateError::Corrupt {
        path: path.into(),
        why,
    })
}

/// Writes `counts` to `path` atomically (temporary file, fsync, rename,
/// fsync of the directory).
pub fn save(path: &Path, counts: &[(InfoHash, u64)]) -> Result<(), StateError> {
    let write_error = |source| StateError::Write {
        path: path.into(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = File::create(&temporary).map_err(write_error)?;
    file.write_all(&encode(counts)).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    drop(file);
    fs::rename(&temporary, path).map_err(write_error)?;
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(write_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(InfoHash, u64)> {
        vec![(InfoHash([1; 20]), 5), (InfoHash([2; 20]), u64::MAX)]
    }

    #[test]
    fn round_trips() {
        assert_eq!(decode(&encode(&sample())).unwrap(), sample());
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncated to {len} accepted"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {i} accepted");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).is_err());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(decode(b"short").unwrap_err().contains("shorter"));
        let mut other = encode(&sample());
        other[..8].copy_from_slice(b"NOTSHOAL");
        assert!(decode(&other).unwrap_err().contains("bad magic"));
        let mut v2 = encode(&sample());
        v2[8] = 2;
        assert!(decode(&v2).unwrap_err().contains("version 2"));
    }

    #[test]
    fn save_replaces_atomically_and_load_reads_back() {
        let dir = std::env::temp_dir().join(format!("shoal-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.bin");
        assert!(load(&path).unwrap().is_none());
        save(&path, &sample()).unwrap();
        save(&path, &sample()[..1]).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), sample()[..1].to_vec());
        assert!(!dir.join("state.bin.tmp").exists());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(load(&path), Err(StateError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
