//! Content codings (WIRE §2, §5.1): what a request body or an S2S payload is compressed
//! with, and which coding a client accepts for what the server sends. One negotiator
//! serves unary responses and S2S frames alike.

use http::{header, HeaderMap};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Coding {
    #[default]
    Identity,
    Zstd,
    Gzip,
}

impl Coding {
    /// A `Content-Encoding` value: `identity` (or empty), `gzip` (or `x-gzip`) or `zstd`,
    /// in any case; `None` for any other coding.
    pub fn named(name: &str) -> Option<Coding> {
        let name = name.trim();
        [
            ("", Coding::Identity),
            ("identity", Coding::Identity),
            ("gzip", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("zstd", Coding::Zstd),
        ]
        .into_iter()
        .find_map(|(known, coding)| name.eq_ignore_ascii_case(known).then_some(coding))
    }

    /// The coding to send with, from the request's `Accept-Encoding` values: `zstd`
    /// anywhere wins, else `gzip` (or `x-gzip`), else identity. An entry weighted `q=0`
    /// (in any spelling, such as `Q = 0.000`) refuses its coding and is skipped.
    pub fn accepted(headers: &HeaderMap) -> Coding {
        let mut gzip = false;
        let values = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok());
        for entry in values.flat_map(|value| value.split(',')) {
            let mut params = entry.split(';');
            let name = params.next().unwrap_or("");
            if params.any(is_zero_weight) {
                continue;
            }
            match Coding::named(name) {
                Some(Coding::Zstd) => return Coding::Zstd,
                Some(Coding::Gzip) => gzip = true,
                Some(Coding::Identity) | None => {}
            }
        }
        if gzip {
            Coding::Gzip
        } else {
            Coding::Identity
        }
    }

    /// Its `Content-Encoding` name.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }
}

/// Whether an `Accept-Encoding` parameter is a zero weight.
fn is_zero_weight(param: &str) -> bool {
    param.split_once('=').is_some_and(|(name, value)| {
        name.trim().eq_ignore_ascii_case("q") && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(values: &[&str]) -> Coding {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::ACCEPT_ENCODING, value.parse().unwrap());
        }
        Coding::accepted(&headers)
    }

    #[test]
    fn negotiation() {
        assert_eq!(accepted(&[]), Coding::Identity);
        assert_eq!(accepted(&["identity"]), Coding::Identity);
        assert_eq!(accepted(&["gzip"]), Coding::Gzip);
        assert_eq!(accepted(&["x-gzip"]), Coding::Gzip);
        assert_eq!(accepted(&["zstd"]), Coding::Zstd);
        assert_eq!(accepted(&["gzip, deflate, br, zstd"]), Coding::Zstd);
        assert_eq!(accepted(&["gzip", "ZSTD;q=0.5"]), Coding::Zstd);
        assert_eq!(accepted(&["gzip, zstd;q=0"]), Coding::Gzip);
        assert_eq!(accepted(&["zstd; Q = 0.000, gzip;q=1"]), Coding::Gzip);
        assert_eq!(accepted(&["zstd;Q=0, x-gzip"]), Coding::Gzip);
        assert_eq!(accepted(&["zstd;q=0, gzip;q=0"]), Coding::Identity);
        assert_eq!(accepted(&[" GZip ;q=0.1"]), Coding::Gzip);
        assert_eq!(accepted(&["br"]), Coding::Identity);
        assert_eq!(accepted(&["*"]), Coding::Identity);
    }

    #[test]
    fn content_encoding_names() {
        assert_eq!(Coding::named(" GZIP "), Some(Coding::Gzip));
        assert_eq!(Coding::named("x-gzip"), Some(Coding::Gzip));
        assert_eq!(Coding::named(""), Some(Coding::Identity));
        assert_eq!(Coding::named("Zstd"), Some(Coding::Zstd));
        assert_eq!(Coding::named("br"), None);
        for coding in [Coding::Identity, Coding::Zstd, Coding::Gzip] {
            assert_eq!(Coding::named(coding.name()), Some(coding));
        }
    }
}
