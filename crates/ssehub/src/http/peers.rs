//! Who is on the other end of a request: the connection's peer, or, when
//! the peer is a proxy the operator trusts (`--trusted-proxies`), the client
//! that proxy forwards for (`Forwarded: for=`, else `X-Forwarded-For`).
//!
//! Forwarding headers are read from the right: each proxy appends the
//! address it got the request from, so the rightmost entry that is not
//! itself a trusted proxy is the first address nobody trusted could have
//! made up. Entries left of it are the client's own words and are ignored.
//! From a peer that is not trusted the headers are ignored altogether.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName, header};
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// A request's client, as far as the hub can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its address.
    pub ip: IpAddr,
    /// Whether the address came from a trusted proxy's forwarding header.
    pub forwarded: bool,
}

impl TrustedProxies {
    /// These networks (a bare address is a network of one).
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let direct = Client {
            ip: peer,
            forwarded: false,
        };
        if !self.contains(peer) {
            return direct;
        }
        let chain = forwarded_for(headers);
        let mut leftmost = None;
        for hop in chain.iter().rev() {
            // A hop a proxy could not name (`unknown`, an obfuscated name):
            // what lies left of it cannot be trusted either.
            let Some(ip) = hop else { return direct };
            if !self.contains(*ip) {
                return Client {
                    ip: *ip,
                    forwarded: true,
                };
            }
            leftmost = Some(*ip);
        }
        // Every hop was a trusted proxy: the request began at the first.
        leftmost.map_or(direct, |ip| Client {
            ip,
            forwarded: true,
        })
    }
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

/// The `for` addresses of `Forwarded` (RFC 7239) if present, else of
/// `X-Forwarded-For`, left to right over every header line; `None` for a
/// hop that is not an address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let lines = |name: HeaderName| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let forwarded = lines(header::FORWARDED);
    let mut hops: Vec<Option<IpAddr>> = if forwarded.is_empty() {
        lines(HeaderName::from_static("x-forwarded-for"))
            .iter()
            .flat_map(|line| line.split(','))
            .map(|hop| address(hop.trim()))
            .collect()
    } else {
        forwarded
            .iter()
            .flat_map(|line| line.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| address(value.trim().trim_matches('"')))
                })
            })
            .collect()
    };
    if hops.len() > MAX_HOPS {
        hops.drain(..hops.len() - MAX_HOPS);
    }
    hops
}

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

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|t| parse_network(t).unwrap()).collect())
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

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = proxies(&["10.0.0.0/8"]);
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
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        // The client claims 6.6.6.6; the outer proxy saw 198.51.100.7.
        let chain = "6.6.6.6, 198.51.100.7, 192.168.1.1";
        let got = client(&trusted, "10.1.2.3", &[("x-forwarded-for", chain)]);
        assert_eq!(
            got,
            Client {
                ip: ip("198.51.100.7"),
                forwarded: true
            }
        );
        // Several header lines are one list.
        let got = client(
            &trusted,
            "10.1.2.3",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "198.51.100.8"),
            ],
        );
        assert_eq!(got.ip, ip("198.51.100.8"));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_takes_every_address_form() {
        let trusted = proxies(&["127.0.0.1", "::1"]);
        for (value, expected) in [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("for=\"192.0.2.61:4711\"", "192.0.2.61"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=6.6.6.6, for=198.51.100.9", "198.51.100.9"),
        ] {
            let got = client(
                &trusted,
                "::1",
                &[("forwarded", value), ("x-forwarded-for", "203.0.113.1")],
            );
            assert_eq!(got.ip, ip(expected), "{value}");
        }
    }

    #[test]
    fn an_unnamed_hop_or_no_header_leaves_the_proxy_as_the_client() {
        let trusted = proxies(&["127.0.0.0/8"]);
        for pairs in [
            &[("forwarded", "for=unknown")][..],
            &[("forwarded", "for=6.6.6.6, for=_hidden")],
            &[("x-forwarded-for", "not-an-address")],
            &[],
        ] {
            let got = client(&trusted, "127.0.0.1", pairs);
            assert_eq!(
                got,
                Client {
                    ip: ip("127.0.0.1"),
                    forwarded: false
                },
                "{pairs:?}"
            );
        }
        // Only trusted hops: the request began at the first of them.
        let got = client(&trusted, "127.0.0.1", &[("x-forwarded-for", "127.0.0.5")]);
        assert_eq!(got.ip, ip("127.0.0.5"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let trusted = proxies(&["10.0.0.1"]);
        assert!(trusted.contains(ip("::ffff:10.0.0.1")));
        let got = client(
            &trusted,
            "10.0.0.1",
            &[("x-forwarded-for", "::ffff:198.51.100.1")],
        );
        assert_eq!(got.ip, ip("198.51.100.1"));
    }

    #[test]
    fn entries_are_addresses_or_networks() {
        assert!(parse_network("10.0.0.0/8").is_ok());
        assert!(parse_network("::1").is_ok());
        assert!(parse_network("fd00::/8").is_ok());
        let err = parse_network("proxy.internal").unwrap_err();
        assert!(err.contains("proxy.internal"), "{err}");
    }
}
