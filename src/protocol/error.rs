//! Why a request was refused; each variant's text is the `failure reason`.

use thiserror::Error as ThisError;

/// A request the tracker refuses. `Display` is the exact `failure reason` sent
/// to the client, so every message names the parameter at fault and says what
/// a valid value looks like.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum Error {
    #[error("missing parameter: {0}")]
    Missing(&'static str),
    #[error("{0} is given more than once")]
    Duplicate(&'static str),
    #[error("{0} has an invalid percent-escape (expected % followed by two hex digits)")]
    BadEscape(&'static str),
    #[error("{0} must be exactly 20 bytes")]
    WrongLength(&'static str),
    #[error("{0} must be an unsigned decimal number")]
    NotANumber(&'static str),
    #[error("port must be between 1 and 65535")]
    BadPort,
    #[error("event must be started, completed, stopped, empty or absent")]
    BadEvent,
    #[error("compact must be 0 or 1")]
    BadCompact,
    #[error("{0} is longer than {1} bytes")]
    TooLong(&'static str, usize),
    #[error("{0} is not an IP address")]
    BadIp(&'static str),
    #[error("too many query parameters (at most {0})")]
    TooManyParameters(usize),
    #[error("full scrape is disabled: give one or more info_hash")]
    FullScrapeDisabled,
}

#[cfg(test)]
mod tests {
    use super::Error;

    /// The failure reasons are part of the protocol: clients show them to
    /// users and operators grep for them, so each text is pinned here.
    #[test]
    fn failure_reasons_are_exact() {
        let cases = [
            (Error::Missing("info_hash"), "missing parameter: info_hash"),
            (
                Error::Duplicate("info_hash"),
                "info_hash is given more than once",
            ),
            (
                Error::BadEscape("peer_id"),
                "peer_id has an invalid percent-escape (expected % followed by two hex digits)",
            ),
            (
                Error::WrongLength("info_hash"),
                "info_hash must be exactly 20 bytes",
            ),
            (
                Error::NotANumber("left"),
                "left must be an unsigned decimal number",
            ),
            (Error::BadPort, "port must be between 1 and 65535"),
            (
                Error::BadEvent,
                "event must be started, completed, stopped, empty or absent",
            ),
            (Error::BadCompact, "compact must be 0 or 1"),
            (Error::TooLong("key", 100), "key is longer than 100 bytes"),
            (Error::BadIp("ip"), "ip is not an IP address"),
            (
                Error::TooManyParameters(64),
                "too many query parameters (at most 64)",
            ),
            (
                Error::FullScrapeDisabled,
                "full scrape is disabled: give one or more info_hash",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
