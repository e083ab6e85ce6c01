//! How each kind of setting is read from text. Flags, environment
//! variables, the file and the defaults all go through these, so a value
//! means the same wherever it is written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::{BareMatch, Kind, LogFormat, StoreKind};

/// Reads one kind of value, and says how its flag takes it.
pub struct Parser<T> {
    /// Text to value, or what is wrong with the text.
    pub parse: fn(&str) -> Result<T, String>,
    /// How the flag takes its value.
    pub kind: Kind,
    /// What the value is called in `--help`.
    pub value_name: &'static str,
}

const fn value<T>(value_name: &'static str, parse: fn(&str) -> Result<T, String>) -> Parser<T> {
    Parser {
        parse,
        kind: Kind::Value,
        value_name,
    }
}

/// `text` as a `T`, or that it is not `what`.
fn parsed<T: FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not {what}"))
}

/// `value`, unless it is zero.
fn positive<T: PartialEq + Default>(value: T) -> Result<T, String> {
    if value == T::default() {
        return Err("must be greater than 0".to_owned());
    }
    Ok(value)
}

/// `127.0.0.1:8080`, `[::]:80`.
pub const fn address() -> Parser<SocketAddr> {
    value("ADDR", |text| {
        parsed(text, "an address like 127.0.0.1:8080")
    })
}

/// An address, or nothing when empty.
pub const fn optional_address() -> Parser<Option<SocketAddr>> {
    value("ADDR", |text| match text {
        "" => Ok(None),
        text => parsed(text, "an address like 127.0.0.1:9090").map(Some),
    })
}

/// A path, or nothing when empty.
pub const fn optional_path() -> Parser<Option<PathBuf>> {
    value("PATH", |text| {
        Ok((!text.is_empty()).then(|| PathBuf::from(text)))
    })
}

/// `text` or `json`.
pub const fn log_format() -> Parser<LogFormat> {
    value("FORMAT", |text| {
        <LogFormat as clap::ValueEnum>::from_str(text.trim(), false)
            .map_err(|_| format!("{text:?} is not a log format: use text or json"))
    })
}

/// `durable` or `memory`.
pub const fn store() -> Parser<StoreKind> {
    value("STORE", |text| {
        <StoreKind as clap::ValueEnum>::from_str(text.trim(), false)
            .map_err(|_| format!("{text:?} is not a store: use durable or memory"))
    })
}

/// `exact` or `template`.
pub const fn bare_match() -> Parser<BareMatch> {
    value("MEANING", |text| {
        <BareMatch as clap::ValueEnum>::from_str(text.trim(), false)
            .map_err(|_| format!("{text:?} is no meaning of match=: use exact or template"))
    })
}

/// A path.
pub const fn path() -> Parser<PathBuf> {
    value("PATH", |text| match text {
        "" => Err("the path is empty".to_owned()),
        path => Ok(PathBuf::from(path)),
    })
}

/// Any text.
pub const fn text() -> Parser<String> {
    value("TEXT", |text| Ok(text.to_owned()))
}

/// The path Durable Streams are served under: `/` and segments, no `/` at
/// the end, none of the hub's own paths.
pub const fn streams_prefix() -> Parser<String> {
    value("PATH", |text| {
        let prefix = text.trim();
        let reserved = [
            "/.well-known",
            "/admin",
            "/metrics",
            "/healthz",
            "/readyz",
            "/demo",
        ];
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            return Err(format!(
                "{text:?} is not a path such as /v1/stream (a leading /, no trailing /)"
            ));
        }
        if prefix.contains(['?', '#', '{', '}', '*', ' ']) || prefix.contains("//") {
            return Err(format!("{text:?} holds characters a path prefix cannot"));
        }
        if let Some(taken) = reserved
            .iter()
            .find(|r| prefix == **r || prefix.starts_with(&format!("{r}/")))
        {
            return Err(format!("{text:?} is under the hub's own {taken}"));
        }
        Ok(prefix.to_owned())
    })
}

/// Text, or nothing when empty.
pub const fn optional_text() -> Parser<Option<String>> {
    value("TEXT", |text| {
        Ok((!text.is_empty()).then(|| text.to_owned()))
    })
}

/// An absolute http(s) URL, or nothing when empty.
pub const fn optional_url() -> Parser<Option<url::Url>> {
    value("URL", |text| {
        if text.is_empty() {
            return Ok(None);
        }
        let url = url::Url::parse(text.trim())
            .map_err(|e| format!("{text:?} is not an absolute URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{text:?} is not an http or https URL"));
        }
        Ok(Some(url))
    })
}

/// A secret of at least 16 characters, or none (the admin token, the
/// event id key).
pub const fn admin_token() -> Parser<Option<String>> {
    value("TOKEN", |text| match text.len() {
        0 => Ok(None),
        1..16 => Err("must be at least 16 characters".to_owned()),
        _ => Ok(Some(text.to_owned())),
    })
}

/// Comma-separated text; each occurrence of a repeated flag adds to it.
pub const fn list() -> Parser<Vec<String>> {
    Parser {
        parse: |text| {
            Ok(text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect())
        },
        kind: Kind::List,
        value_name: "VALUE",
    }
}

/// `true`/`false`, also `yes`/`no`, `on`/`off`, `1`/`0`.
pub const fn switch() -> Parser<bool> {
    Parser {
        parse: |text| match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(format!("{text:?} is not true or false")),
        },
        kind: Kind::Switch,
        value_name: "BOOL",
    }
}

/// `true`/`false` as [`switch`], or nothing (the default decides).
pub const fn optional_switch() -> Parser<Option<bool>> {
    Parser {
        parse: |text| match text {
            "" => Ok(None),
            text => (switch().parse)(text).map(Some),
        },
        kind: Kind::Switch,
        value_name: "BOOL",
    }
}

/// A whole number, 0 included.
pub const fn count<T: FromStr>() -> Parser<T> {
    value("N", |text| parsed(text, "a whole number"))
}

/// A whole number greater than 0.
pub const fn positive_count() -> Parser<usize> {
    value("N", |text| positive(parsed(text, "a whole number")?))
}

/// A size greater than 0: `65536`, `64KiB`, `1MiB`, `1MB`.
pub const fn size() -> Parser<usize> {
    value("SIZE", |text| positive(parse_size(text)?))
}

/// A duration, 0 included: `500ms`, `15s`, `30m`, `1h`, `0`.
pub const fn duration() -> Parser<Duration> {
    value("DURATION", parse_duration)
}

/// The one JWT algorithm accepted, by its JOSE name.
pub const fn jwt_algorithm() -> Parser<String> {
    value("ALG", |text| {
        jsonwebtoken::Algorithm::from_str(text)
            .map(|_| text.to_owned())
            .map_err(|_| {
                format!(
                    "{text:?} is not a JWT algorithm: use HS256, HS384, HS512, RS256, RS384, \
                     RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                )
            })
    })
}

/// The forwarding header of trusted proxies.
pub const fn forwarding_header() -> Parser<crate::http::peers::ForwardingHeader> {
    value("HEADER", |text| text.parse())
}

/// Trusted proxies: addresses or networks, as a list.
pub const fn proxies() -> Parser<Vec<ipnet::IpNet>> {
    Parser {
        parse: |text| {
            (list().parse)(text)?
                .iter()
                .map(|item| crate::http::peers::parse_network(item))
                .collect()
        },
        kind: Kind::List,
        value_name: "ADDRESS",
    }
}

/// CORS origins: `*`, or origins such as `https://app.example.com:8443`
/// (scheme, host and port; no path), separated by commas.
pub const fn origins() -> Parser<Vec<String>> {
    Parser {
        parse: |text| {
            let origins = (list().parse)(text)?;
            for origin in &origins {
                let host = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"));
                let valid = origin == "*"
                    || host
                        .is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', ' ', '*']));
                if !valid {
                    return Err(format!(
                        "{origin:?} is not an origin like https://app.example.com, or *"
                    ));
                }
            }
            Ok(origins)
        },
        ..list()
    }
}

/// A duration greater than 0.
pub const fn positive_duration() -> Parser<Duration> {
    value("DURATION", |text| positive(parse_duration(text)?))
}

/// A duration, or `0` for never.
pub const fn lifetime() -> Parser<Option<Duration>> {
    value("DURATION", |text| {
        Ok(Some(parse_duration(text)?).filter(|d| !d.is_zero()))
    })
}

/// The longest duration a setting takes. Longer ones are not meant (use 0
/// where a setting offers "never"), and would overflow the clock's
/// arithmetic (an instant that far ahead cannot be represented).
const LONGEST: Duration = Duration::from_secs(100 * 31_557_600); // 100 years of 365.25 days

/// `500ms`, `15s`, `30m`, `1h`, `0`; at most 100 years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 15s, 30m or 1h ({e})"))?;
    if duration > LONGEST {
        return Err(format!("{text:?} is longer than 100 years"));
    }
    Ok(duration)
}

/// `65536`, `64KiB`, `1MiB`, `1MB` (binary units are powers of 1024, decimal
/// ones of 1000).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("{text:?} is not a size like 65536, 64KiB or 1MiB")),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is not a size like 65536, 64KiB or 1MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("1 furlong").is_err());
        assert_eq!((lifetime().parse)("0"), Ok(None));
        assert_eq!((lifetime().parse)("2s"), Ok(Some(Duration::from_secs(2))));
        assert!((positive_duration().parse)("0").is_err());
        assert!(parse_duration("300000000000years").is_err());
        assert!(parse_duration("10000000000000000000s").is_err());
        assert!(parse_duration("100years").is_ok());
        assert!((size().parse)("0").is_err());
    }

    #[test]
    fn switches_texts_and_lists() {
        for (text, value) in [("true", true), ("on", true), ("1", true), ("off", false)] {
            assert_eq!((switch().parse)(text), Ok(value), "{text}");
        }
        assert!((switch().parse)("maybe").is_err());
        assert_eq!((optional_text().parse)(""), Ok(None));
        assert_eq!(
            (list().parse)("a, b,,c"),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!((list().parse)(""), Ok(Vec::<String>::new()));
        assert!((admin_token().parse)("short").is_err());
        assert!((jwt_algorithm().parse)("none").is_err());
        assert_eq!((jwt_algorithm().parse)("ES256"), Ok("ES256".to_owned()));
        assert_eq!(
            (origins().parse)("https://a.example, http://b.example:8080,*"),
            Ok(vec![
                "https://a.example".into(),
                "http://b.example:8080".into(),
                "*".into()
            ])
        );
        for bad in [
            "1",
            "true",
            "https://",
            "https://a.example/path",
            "ftp://a",
            "https://*.example",
        ] {
            assert!((origins().parse)(bad).is_err(), "{bad}");
        }
        assert_eq!((admin_token().parse)(""), Ok(None));
    }
}
