//! Validated names of basins and streams, and the looser forms used as list filters.
//!
//! A value of these types is valid by construction; the HTTP layer parses into them and the
//! engine never re-checks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The reason a name was rejected; the text is what clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

pub const BASIN_NAME_MIN_BYTES: usize = 8;
pub const BASIN_NAME_MAX_BYTES: usize = 48;
pub const STREAM_NAME_MAX_BYTES: usize = 512;

fn basin_charset_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A basin name: 8–48 bytes of `[a-z0-9-]`, starting and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BasinName(String);

impl BasinName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BasinName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, NameError> {
        let err = |m: &str| Err(NameError(m.to_owned()));
        if s.len() > BASIN_NAME_MAX_BYTES {
            return err("basin name must not exceed 48 bytes in length");
        }
        if s.len() < BASIN_NAME_MIN_BYTES {
            return err("basin name should be at least 8 bytes in length");
        }
        let bytes = s.as_bytes();
        if !alnum(bytes[0]) {
            return err("basin name must begin with a lowercase letter or number");
        }
        if !alnum(bytes[bytes.len() - 1]) {
            return err("basin name must end with a lowercase letter or number");
        }
        if !basin_charset_ok(&s) {
            return err("basin name must comprise lowercase letters, numbers, and hyphens");
        }
        Ok(Self(s))
    }
}

impl std::str::FromStr for BasinName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::try_from(s.to_owned())
    }
}

impl From<BasinName> for String {
    fn from(n: BasinName) -> String {
        n.0
    }
}

impl fmt::Display for BasinName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stream name: 1–512 bytes of UTF-8 without NUL, and neither `.` nor `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

impl StreamName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, NameError> {
        let err = |m: &str| Err(NameError(m.to_owned()));
        if s.is_empty() {
            return err("stream name must not be empty");
        }
        if s == "." || s == ".." {
            return err("stream name must not be \".\" or \"..\"");
        }
        if s.contains('\0') {
            return err("stream name must not contain NUL bytes");
        }
        if s.len() > STREAM_NAME_MAX_BYTES {
            return err("stream name must not exceed 512 bytes in length");
        }
        Ok(Self(s))
    }
}

impl std::str::FromStr for StreamName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::try_from(s.to_owned())
    }
}

impl From<StreamName> for String {
    fn from(n: StreamName) -> String {
        n.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which list filter a [`NameFilter`] is, for error messages ("basin prefix ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    Prefix,
    StartAfter,
}

impl FilterKind {
    pub fn label(self) -> &'static str {
        match self {
            FilterKind::Prefix => "prefix",
            FilterKind::StartAfter => "start-after",
        }
    }
}

/// A `prefix` or `start_after` list filter over basin names: 0–48 bytes, `[a-z0-9-]`,
/// not starting with a hyphen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BasinFilter(String);

impl BasinFilter {
    pub fn parse(s: &str, kind: FilterKind) -> Result<Self, NameError> {
        let what = kind.label();
        if s.len() > BASIN_NAME_MAX_BYTES {
            return Err(NameError(format!(
                "basin {what} must not exceed 48 bytes in length"
            )));
        }
        if let Some(&first) = s.as_bytes().first() {
            if !alnum(first) {
                return Err(NameError(format!(
                    "basin {what} must begin with a lowercase letter or number"
                )));
            }
        }
        if !basin_charset_ok(s) {
            return Err(NameError(format!(
                "basin {what} must comprise lowercase letters, numbers, and hyphens"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `prefix` or `start_after` list filter over stream names: 0–512 bytes without NUL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFilter(String);

impl StreamFilter {
    pub fn parse(s: &str, kind: FilterKind) -> Result<Self, NameError> {
        let what = kind.label();
        if s.contains('\0') {
            return Err(NameError(format!(
                "stream {what} must not contain NUL bytes"
            )));
        }
        if s.len() > STREAM_NAME_MAX_BYTES {
            return Err(NameError(format!(
                "stream {what} must not exceed 512 bytes in length"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basin_name_bounds() {
        assert!("abcdefg".parse::<BasinName>().is_err());
        assert!("abcdefgh".parse::<BasinName>().is_ok());
        assert!("a".repeat(48).parse::<BasinName>().is_ok());
        assert!("a".repeat(49).parse::<BasinName>().is_err());
        assert!("-abcdefgh".parse::<BasinName>().is_err());
        assert!("abcdefgh-".parse::<BasinName>().is_err());
        assert!("abcd_efgh".parse::<BasinName>().is_err());
        assert!("ABCDEFGH".parse::<BasinName>().is_err());
        assert!("abc-1234".parse::<BasinName>().is_ok());
    }

    #[test]
    fn stream_name_rules() {
        for ok in ["a", "a/b", "with space", "tab\there", "🦀", "?#%"] {
            assert!(ok.parse::<StreamName>().is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "nul\0"] {
            assert!(bad.parse::<StreamName>().is_err(), "{bad:?}");
        }
        assert!("x".repeat(512).parse::<StreamName>().is_ok());
        assert!("x".repeat(513).parse::<StreamName>().is_err());
    }

    #[test]
    fn filters() {
        assert!(BasinFilter::parse("", FilterKind::Prefix).is_ok());
        assert!(BasinFilter::parse("a-", FilterKind::Prefix).is_ok());
        assert!(BasinFilter::parse("-a", FilterKind::Prefix).is_err());
        assert!(StreamFilter::parse("..", FilterKind::StartAfter).is_ok());
        assert!(StreamFilter::parse("a\0", FilterKind::StartAfter).is_err());
    }
}
