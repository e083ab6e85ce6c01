//! Who is on the other end of a request: the connection's peer, or, when
//! the peer is a proxy the operator trusts (`--trusted-proxies`), the client
//! that proxy forwards for, from the one header it is configured to set
//! (`--trusted-proxy-header`: `X-Forwarded-For`, or `Forwarded: for=`).
//! Only that header is read: a proxy passes the other one through as the
//! client wrote it.
//!
//! The header is read from the right: each proxy appends the address it got
//! the request from, so the rightmost entry that is not itself a trusted
//! proxy is the first address nobody trusted could have made up. Entries
//! left of it are the client's own words and are ignored. A request through
//! a trusted proxy whose entry cannot be read (`unknown`, an obfuscated
//! name, junk, no header) counts as the proxy's own address: it shares one
//! place in the per-address limit rather than escaping it. From a peer that
//! is not trusted the headers are ignored altogether.

use std::net::{IpAddr, SocketAddr};

pub use crate::hub::address_group as counted_as;

use axum::http::{HeaderMap, HeaderName, header};
use ipnet::IpNet;

/// Which header the trusted proxies set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: client, proxy1, ...` (nginx, HAProxy, most load
    /// balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl std::str::FromStr for ForwardingHeader {
    type Err = String;

    fn from_str(text: &str) -> Result<ForwardingHeader, String> {
        match text.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardingHeader::XForwardedFor),
            "forwarded" => Ok(ForwardingHeader::Forwarded),
            _ => Err(format!("{text:?} is not x-forwarded-for or forwarded")),
        }
    }
}

/// The proxies whose forwarding header is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ForwardingHeader,
}

/// A request's client, as far as the hub can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its address.
    pub ip: IpAddr,
    /// Whether it came through a trusted proxy (its connections were not
    /// counted per address, so its streams are).
    pub forwarded: bool,
}

impl TrustedProxies {
    /// These networks (a bare address is a network of one), which set
    /// `header`.
    pub fn new(networks: Vec<IpNet>, header: ForwardingHeader) -> TrustedProxies {
        TrustedProxies { networks, header }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        if !self.contains(peer) {
            return Client {
                ip: peer,
                forwarded: false,
            };
        }
        let through = |ip| Client {
            ip,
            forwarded: true,
        };
        let mut first_proxy = None;
        for hop in self.hops(headers).iter().rev() {
            let Some(ip) = hop else { return through(peer) };
            if !self.contains(*ip) {
                return through(*ip);
            }
            first_proxy = Some(*ip);
        }
        // Only trusted hops, or none: the request began at a proxy.
        through(first_proxy.unwrap_or(peer))
    }

    /// The addresses of the configured header, left to right over every
    /// line of it; `None` for a hop that is not an address.
    fn hops(&self, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
        let name = match self.header {
            ForwardingHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ForwardingHeader::Forwarded => header::FORWARDED,
        };
        let lines: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let mut hops: Vec<Option<IpAddr>> = match self.header {
            ForwardingHeader::XForwardedFor => lines
                .iter()
                .flat_map(|line| line.split(','))
                .map(|hop| address(hop.trim()))
                .collect(),
            // A line whose quotes do not pair up cannot be split safely (a
            // client's open quote would swallow the proxy's entry): it is
            // one hop that is not an address.
            ForwardingHeader::Forwarded
                if lines.iter().any(|l| l.matches('"').count() % 2 == 1) =>
            {
                vec![None]
            }
            ForwardingHeader::Forwarded => lines
                .iter()
                .flat_map(|line| split_outside_quotes(line, ','))
                .map(|element| {
                    // An element without `for` names no client: not an address.
                    split_outside_quotes(element, ';')
                        .into_iter()
                        .find_map(|pair| {
                            let (name, value) = pair.trim().split_once('=')?;
                            name.trim().eq_ignore_ascii_case("for").then(|| {
                                let value = value.trim();
                                let value = value
                                    .strip_prefix('"')
                                    .and_then(|v| v.strip_suffix('"'))
                                    .unwrap_or(value);
                                address(value)
                            })
                        })
                        .flatten()
                })
                .collect(),
        };
        if hops.len() > MAX_HOPS {
            hops.drain(..hops.len() - MAX_HOPS);
        }
        hops
    }
}

/// `text` cut at each `separator` that is not inside double quotes.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Parses one `--trusted-proxies` entry: an address or a network.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or network like 10.0.0.0/8"))
}

/// IPv4 clients of a dual-stack socket appear as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// At most this many hops are read; a longer chain is cut on the left.
const MAX_HOPS: usize = 32;

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .ok_or(())
                .and_then(|t| t.parse::<IpAddr>().map_err(|_| ()))
        })
        .ok()
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str], header: ForwardingHeader) -> TrustedProxies {
        let networks = list.iter().map(|t| parse_network(t).unwrap()).collect();
        TrustedProxies::new(networks, header)
    }

    fn xff(list: &[&str]) -> TrustedProxies {
        proxies(list, ForwardingHeader::XForwardedFor)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn client(trusted: &TrustedProxies, peer: &str, pairs: &[(&'static str, &str)]) -> Client {
        trusted.client(peer.parse().unwrap(), &headers(pairs))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn through(text: &str) -> Client {
        Client {
            ip: ip(text),
            forwarded: true,
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = xff(&["10.0.0.0/8"]);
        let got = client(&trusted, "203.0.113.9", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            got,
            Client {
                ip: ip("203.0.113.9"),
                forwarded: false
            }
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = xff(&["10.0.0.0/8", "192.168.1.1"]);
        // The client claims 6.6.6.6; the outer proxy saw 198.51.100.7.
        let chain = "6.6.6.6, 198.51.100.7, 192.168.1.1";
        let got = client(&trusted, "10.1.2.3", &[("x-forwarded-for", chain)]);
        assert_eq!(got, through("198.51.100.7"));
        // Several header lines are one list.
        let got = client(
            &trusted,
            "10.1.2.3",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "198.51.100.8"),
            ],
        );
        assert_eq!(got, through("198.51.100.8"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // A proxy that sets X-Forwarded-For passes a client's own
        // Forwarded header through: it must not count.
        let pairs = [
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "198.51.100.3"),
        ];
        assert_eq!(
            client(&xff(&["127.0.0.1"]), "127.0.0.1", &pairs),
            through("198.51.100.3")
        );
        let forwarded = proxies(&["127.0.0.1"], ForwardingHeader::Forwarded);
        let pairs = [
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=198.51.100.4"),
        ];
        assert_eq!(
            client(&forwarded, "127.0.0.1", &pairs),
            through("198.51.100.4")
        );
    }

    #[test]
    fn forwarded_takes_every_address_form_and_respects_quotes() {
        let trusted = proxies(&["127.0.0.1", "::1"], ForwardingHeader::Forwarded);
        for (value, expected) in [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("for=\"192.0.2.61:4711\"", "192.0.2.61"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=6.6.6.6, for=198.51.100.9", "198.51.100.9"),
            // A quoted comma is one (unreadable) value, not two hops.
            ("for=\"198.51.100.10, 1.2.3.4\"", "::1"),
            ("proto=https", "::1"),
            // A client's open quote must not swallow the proxy's entry.
            ("for=9.9.9.1;x=\", for=198.51.100.11", "::1"),
        ] {
            let got = client(&trusted, "::1", &[("forwarded", value)]);
            assert_eq!(got, through(expected), "{value}");
        }
    }

    #[test]
    fn an_unreadable_hop_or_no_header_counts_as_the_proxy_itself() {
        let trusted = xff(&["127.0.0.0/8"]);
        for pairs in [
            &[("x-forwarded-for", "unknown")][..],
            &[("x-forwarded-for", "6.6.6.6, _hidden")],
            &[("x-forwarded-for", "1.2.3.4, zzz")],
            &[],
        ] {
            let got = client(&trusted, "127.0.0.1", pairs);
            assert_eq!(got, through("127.0.0.1"), "{pairs:?}");
        }
        // Only trusted hops: the request began at the first of them.
        let got = client(&trusted, "127.0.0.1", &[("x-forwarded-for", "127.0.0.5")]);
        assert_eq!(got, through("127.0.0.5"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4_and_ipv6_counts_per_64() {
        let trusted = xff(&["10.0.0.1"]);
        assert!(trusted.contains(ip("::ffff:10.0.0.1")));
        let got = client(
            &trusted,
            "10.0.0.1",
            &[("x-forwarded-for", "::ffff:198.51.100.1")],
        );
        assert_eq!(got.ip, ip("198.51.100.1"));
        assert_eq!(
            counted_as(ip("2001:db8:1:2:aaaa::1")),
            counted_as(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            counted_as(ip("2001:db8:1:2::1")),
            counted_as(ip("2001:db8:1:3::1"))
        );
        assert_eq!(counted_as(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn entries_are_addresses_or_networks() {
        assert!(parse_network("10.0.0.0/8").is_ok());
        assert!(parse_network("::1").is_ok());
        assert!(parse_network("fd00::/8").is_ok());
        let err = parse_network("proxy.internal").unwrap_err();
        assert!(err.contains("proxy.internal"), "{err}");
        assert!("FORWARDED".parse::<ForwardingHeader>().is_ok());
        assert!("x-real-ip".parse::<ForwardingHeader>().is_err());
    }
}
