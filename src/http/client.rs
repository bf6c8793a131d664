//! Who is on the other end of a request: its client address and the languages it
//! asks for, as every service sees them ([`ClientInfo`]). The address is the
//! connection's peer, unless the peer is a proxy the operator trusts
//! (`NIMBUS_TRUSTED_PROXIES`); only then does `X-Forwarded-For` count, read from
//! the right (the hop nearest to us) past every trusted hop, so a client cannot
//! choose its address by sending the header itself.

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, TrustedProxies};
use crate::services::users::service::ClientInfo;
use axum::http::header::{ACCEPT_LANGUAGE, AsHeaderName, USER_AGENT};
use axum::http::{HeaderMap, HeaderName};

/// Looked up by name already parsed: a name given as text is parsed again at
/// every lookup.
const LOCALE_HEADER: HeaderName = HeaderName::from_static("x-nimbus-locale");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Most `X-Forwarded-For` entries read: a chain of proxies is a few hops long.
const MAX_HOPS: usize = 32;

/// The client of a request that arrived from `peer` with `headers`.
pub fn client_info(config: &Config, peer: SocketAddr, headers: &HeaderMap) -> ClientInfo {
    ClientInfo {
        ip: address_text(client_ip(&config.trusted_proxies, peer.ip(), headers)),
        user_agent: header(headers, USER_AGENT).to_string(),
        locale: requested_locale(headers).to_string(),
    }
}

/// The client of a request as limits key it ([`crate::auth::rate_limit::client_key`]).
pub fn limit_key(config: &Config, peer: SocketAddr, headers: &HeaderMap) -> String {
    crate::auth::rate_limit::client_key(&address_text(client_ip(
        &config.trusted_proxies,
        peer.ip(),
        headers,
    )))
}

/// The client address: `peer`, or when `peer` is a trusted proxy, the first
/// address of `X-Forwarded-For`, from the right, that is not a trusted proxy. An
/// entry that is not an address ends the walk at the last hop known good.
pub fn client_ip(trusted: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .rev()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.rsplit(','))
        .take(MAX_HOPS);
    for hop in hops {
        match parse_hop(hop.trim()) {
            Some(ip) => {
                client = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// The languages the client asks for: `X-Nimbus-Locale`, else `Accept-Language`,
/// as sent (empty when neither is).
pub fn requested_locale(headers: &HeaderMap) -> &str {
    match header(headers, LOCALE_HEADER) {
        "" => header(headers, ACCEPT_LANGUAGE),
        locale => locale,
    }
}

/// `ip` as text. An IPv4 address (nearly every client's) is written digit by
/// digit: its `Display` goes through the formatting machinery once per octet,
/// a cost every request paid.
fn address_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

fn header(headers: &HeaderMap, name: impl AsHeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// An IPv4 client reached over IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// Whom the leases of a request from `ip` count for: its address as rate limits
/// key it, or none for a client on this host (a reverse proxy that forwards no
/// trusted address, a local tool): everyone behind such a proxy would otherwise
/// share one client's three quarters.
pub fn lease_client(ip: &str) -> Option<std::sync::Arc<str>> {
    if ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
    {
        return None;
    }
    Some(crate::auth::rate_limit::client_key(ip).into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_on_this_host_counts_for_no_share_of_the_connections() {
        use super::lease_client;
        assert_eq!(lease_client("127.0.0.1"), None);
        assert_eq!(lease_client("::1"), None);
        assert_eq!(lease_client("192.0.2.7").as_deref(), Some("192.0.2.7"));
        assert_eq!(
            lease_client("2001:db8:1:2:3:4:5:6").as_deref(),
            Some("2001:db8:1:2::/64")
        );
    }

    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn nets(list: &[&str]) -> TrustedProxies {
        list.join(",").parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ignores_forwarded_for_from_an_untrusted_peer() {
        let got = client_ip(&nets(&[]), ip("203.0.113.7"), &headers(&["8.8.8.8"]));
        assert_eq!(got, ip("203.0.113.7"));
        let got = client_ip(
            &nets(&["10.0.0.0/8"]),
            ip("203.0.113.7"),
            &headers(&["8.8.8.8"]),
        );
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn takes_the_nearest_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client forged the first entry; the proxies appended the rest.
        let sent = headers(&["6.6.6.6, 8.8.8.8, 10.1.2.3"]);
        assert_eq!(client_ip(&trusted, ip("127.0.0.1"), &sent), ip("8.8.8.8"));
        // The same chain split over several header lines.
        let sent = headers(&["6.6.6.6", "8.8.8.8, 10.1.2.3"]);
        assert_eq!(client_ip(&trusted, ip("127.0.0.1"), &sent), ip("8.8.8.8"));
    }

    #[test]
    fn stops_at_an_entry_that_is_not_an_address() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let sent = headers(&["8.8.8.8, unknown, 10.0.0.9"]);
        assert_eq!(client_ip(&trusted, ip("127.0.0.1"), &sent), ip("10.0.0.9"));
        assert_eq!(
            client_ip(&trusted, ip("127.0.0.1"), &headers(&[])),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn reads_ports_and_mapped_addresses() {
        let trusted = nets(&["127.0.0.1/32"]);
        let sent = headers(&["[2a00:1450::1]:443"]);
        assert_eq!(
            client_ip(&trusted, ip("::ffff:127.0.0.1"), &sent),
            ip("2a00:1450::1")
        );
        let sent = headers(&["8.8.8.8:1234"]);
        assert_eq!(client_ip(&trusted, ip("127.0.0.1"), &sent), ip("8.8.8.8"));
    }

    #[test]
    fn writes_addresses_as_display_does() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "1.20.3.40",
            "127.0.0.1",
            "203.0.113.7",
            "2001:db8::1",
            "::1",
        ] {
            let ip = ip(text);
            assert_eq!(address_text(ip), ip.to_string());
        }
        for octet in 0..=255u8 {
            let ip = IpAddr::from([octet, 255 - octet, octet / 3, 9]);
            assert_eq!(address_text(ip), ip.to_string());
        }
    }

    #[test]
    fn an_explicit_locale_wins_over_accept_language() {
        let mut sent = HeaderMap::new();
        sent.insert("accept-language", "de".parse().unwrap());
        assert_eq!(requested_locale(&sent), "de");
        sent.insert("x-nimbus-locale", "fr".parse().unwrap());
        assert_eq!(requested_locale(&sent), "fr");
    }
}
