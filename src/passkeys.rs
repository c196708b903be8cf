//! Private trackers (BEP 27): per-user passkeys in the announce path.
//!
//! With a passkey file configured, clients announce to `/announce/<passkey>`
//! and scrape `/scrape/<passkey>`. The file has one passkey per line,
//! optionally followed by an expiry as Unix seconds; blank lines and `#`
//! comments are ignored. It is re-read on SIGHUP.
//!
//! Keys are kept and looked up only as SHA-256 digests: whatever the timing
//! of a lookup reveals concerns a digest, never a key, so a client cannot
//! learn a valid key byte by byte; the digest found is then compared again in
//! constant time. Keys never appear in logs or errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

type KeyDigest = [u8; 32];

/// Why a passkey was refused; `Display` is the failure reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasskeyError {
    #[error("unknown passkey")]
    Unknown,
    #[error("passkey expired")]
    Expired,
}

pub struct Passkeys {
    path: PathBuf,
    /// Digest of each key, and its expiry (Unix seconds) if it has one.
    keys: RwLock<HashMap<KeyDigest, Option<u64>, ahash::RandomState>>,
}

fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &KeyDigest, b: &KeyDigest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses the file's text; the error names the first bad line (not its key).
pub fn parse(text: &str) -> Result<HashMap<KeyDigest, Option<u64>, ahash::RandomState>, String> {
    let mut keys = HashMap::with_hasher(ahash::RandomState::new());
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let key = fields.next().unwrap_or_default();
        let valid_key = (8..=128).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_key {
            return Err(format!(
                "line {}: a passkey is 8 to 128 letters, digits, '-' or '_'",
                number + 1
            ));
        }
        let expiry = match fields.next() {
            None => None,
            Some(text) => Some(
                text.parse::<u64>()
                    .map_err(|_| format!("line {}: the expiry must be Unix seconds", number + 1))?,
            ),
        };
        if fields.next().is_some() {
            return Err(format!(
                "line {}: expected a passkey and an optional expiry",
                number + 1
            ));
        }
        keys.insert(digest(key.as_bytes()), expiry);
    }
    Ok(keys)
}

fn read(path: &Path) -> anyhow::Result<HashMap<KeyDigest, Option<u64>, ahash::RandomState>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read passkey file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("passkey file {}: {e}", path.display()))
}

impl Passkeys {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            path: path.into(),
            keys: RwLock::new(read(path)?),
        })
    }

    /// Re-reads the file; on error the current keys stay in force. Returns
    /// how many keys there are now.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let keys = read(&self.path)?;
        let count = keys.len();
        match self.keys.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        Ok(count)
    }

    pub fn len(&self) -> usize {
        self.keys.read().map_or(0, |k| k.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` may use the tracker now.
    pub fn check(&self, key: &[u8]) -> Result<(), PasskeyError> {
        let wanted = digest(key);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let keys = match self.keys.read() {
            Ok(keys) => keys,
            Err(poisoned) => poisoned.into_inner(),
        };
        match keys.get_key_value(&wanted) {
            Some((found, expiry)) if constant_time_eq(found, &wanted) => match expiry {
                Some(expiry) if *expiry <= now => Err(PasskeyError::Expired),
                _ => Ok(()),
            },
            _ => Err(PasskeyError::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Passkeys {
        Passkeys {
            path: PathBuf::new(),
            keys: RwLock::new(parse(text).unwrap()),
        }
    }

    #[test]
    fn known_unknown_and_expired() {
        let k = keys("# users\nalice-0123456789\nbob_0123456789 1\ncarol012345 99999999999\n");
        assert_eq!(k.check(b"alice-0123456789"), Ok(()));
        assert_eq!(k.check(b"alice-012345678"), Err(PasskeyError::Unknown));
        assert_eq!(k.check(b"bob_0123456789"), Err(PasskeyError::Expired));
        assert_eq!(k.check(b"carol012345"), Ok(()));
        assert_eq!(k.check(b""), Err(PasskeyError::Unknown));
    }

    #[test]
    fn bad_lines_are_named_without_the_key() {
        let error = parse("ok-key-123456\nshort\n").unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
        assert!(!error.contains("short"));
        assert!(
            parse("ok-key-123456 soon\n")
                .unwrap_err()
                .contains("Unix seconds")
        );
        assert!(parse("ok-key-123456 1 2\n").is_err());
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(&[7; 32], &[7; 32]));
        let mut other = [7; 32];
        other[31] = 8;
        assert!(!constant_time_eq(&[7; 32], &other));
    }
}
