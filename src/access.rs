//! Access control by info hash: an allow list or a deny list, read from a
//! file of hex hashes and reloaded on SIGHUP without a restart.
//!
//! File format: one 40-digit hex info hash per line; blank lines and lines
//! starting with `#` are ignored; anything else is an error that names the
//! line. A reload that fails keeps the list in force.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::RwLock;

use crate::protocol::InfoHash;

/// Whether the list names the torrents served or the torrents refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only listed torrents are served.
    Allow,
    /// Listed torrents are refused.
    Deny,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Mode::Allow),
            "deny" => Ok(Mode::Deny),
            other => Err(format!("access mode must be allow or deny, not {other:?}")),
        }
    }
}

/// The list in force.
pub struct AccessList {
    path: PathBuf,
    mode: Mode,
    hashes: RwLock<HashSet<InfoHash, ahash::RandomState>>,
}

/// Parses the file's text; the error names the first bad line.
pub fn parse(text: &str) -> Result<HashSet<InfoHash, ahash::RandomState>, String> {
    let mut hashes = HashSet::with_hasher(ahash::RandomState::new());
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut hash = [0u8; 20];
        let bytes = line.as_bytes();
        let valid = bytes.len() == 40
            && bytes.chunks(2).zip(hash.iter_mut()).all(|(pair, out)| {
                match (hex(pair[0]), hex(pair[1])) {
                    (Some(hi), Some(lo)) => {
                        *out = hi << 4 | lo;
                        true
                    }
                    _ => false,
                }
            });
        if !valid {
            return Err(format!(
                "line {}: expected a 40-digit hex info hash, found {line:?}",
                number + 1
            ));
        }
        hashes.insert(InfoHash(hash));
    }
    Ok(hashes)
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

impl AccessList {
    /// Reads the list; the error says which file and which line.
    pub fn load(path: &Path, mode: Mode) -> anyhow::Result<Self> {
        let hashes = read(path)?;
        Ok(Self {
            path: path.into(),
            mode,
            hashes: RwLock::new(hashes),
        })
    }

    /// Whether `hash` may be announced and scraped.
    pub fn allows(&self, hash: &InfoHash) -> bool {
        let listed = match self.hashes.read() {
            Ok(hashes) => hashes.contains(hash),
            Err(poisoned) => poisoned.into_inner().contains(hash),
        };
        listed == (self.mode == Mode::Allow)
    }

    /// Reads the file again; on error the current list stays in force.
    /// Returns how many hashes the new list has.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let hashes = read(&self.path)?;
        let count = hashes.len();
        match self.hashes.write() {
            Ok(mut current) => *current = hashes,
            Err(poisoned) => *poisoned.into_inner() = hashes,
        }
        Ok(count)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn len(&self) -> usize {
        self.hashes.read().map_or(0, |h| h.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn read(path: &Path) -> anyhow::Result<HashSet<InfoHash, ahash::RandomState>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read access list {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("access list {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hashes_comments_and_blank_lines() {
        let text = "# torrents\n\nBBCB21AED12D56B5E850733B109146D1338355B4\n  0000000000000000000000000000000000000001  \n";
        let hashes = parse(text).unwrap();
        assert_eq!(hashes.len(), 2);
        let mut one = [0u8; 20];
        one[19] = 1;
        assert!(hashes.contains(&InfoHash(one)));
    }

    #[test]
    fn a_bad_line_is_named() {
        let error = parse("# ok\nnot-a-hash\n").unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
        assert!(parse(&"a".repeat(39)).is_err());
        assert!(parse(&"g".repeat(40)).is_err());
    }
}
