//! Outgoing HTTP to URLs that users name (the avatar image proxy, webhooks, the
//! OAuth2 providers a project configures), without letting a URL reach the
//! server's own network: the host is resolved
//! here, every address it resolves to is checked, and the connection goes only to
//! an address so checked, so a name that resolves again to something else (DNS
//! rebinding) is not asked. Redirects are never followed by the client: a caller
//! that follows one checks its target like a first URL.
//!
//! Two shapes: a client per request pinned to the addresses checked
//! ([`pinned_client`]), or one long-lived client whose own resolver does the check
//! ([`GuardedClient`]), so that its connections are pooled and reused and still go
//! only to addresses checked when each was opened.
//!
//! This module decides what is reachable; callers decide what a refusal means to
//! their users (which error code) and what to do with the answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Why a URL may not be fetched. The texts are safe to show to the URL's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("must be at most {0} bytes")]
    TooLong(usize),
    #[error("must be an absolute http(s) URL")]
    NotAUrl,
    #[error("must be an http or https URL")]
    Scheme,
    #[error("must not carry credentials")]
    Credentials,
    #[error("must name a host")]
    NoHost,
    #[error("has no port")]
    NoPort,
    #[error("names a host that does not resolve")]
    Unresolved,
    #[error("points to a private, loopback or reserved address")]
    Private,
}

/// A URL that may be tried: absolute `http` or `https`, at most `max_bytes`, no
/// credentials in it, a host.
pub fn check_url(text: &str, max_bytes: usize) -> Result<url::Url, Refused> {
    if text.len() > max_bytes {
        return Err(Refused::TooLong(max_bytes));
    }
    let url = url::Url::parse(text).map_err(|_| Refused::NotAUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Credentials);
    }
    if url.host().is_none() {
        return Err(Refused::NoHost);
    }
    Ok(url)
}

/// The addresses of `url`'s host, all of them `allowed`, or why not.
pub async fn allowed_addresses(
    url: &url::Url,
    allowed: fn(IpAddr) -> bool,
) -> Result<Vec<SocketAddr>, Refused> {
    let port = url.port_or_known_default().ok_or(Refused::NoPort)?;
    let addresses: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|_| Refused::Unresolved)?
            .collect(),
        None => return Err(Refused::NoHost),
    };
    if addresses.is_empty() {
        return Err(Refused::Unresolved);
    }
    // Every address, not just the first: the connection may go to any of them.
    if addresses.iter().any(|a| !allowed(a.ip())) {
        return Err(Refused::Private);
    }
    Ok(addresses)
}

/// Any address: for operators who let webhooks reach their own network.
pub fn any_address(_: IpAddr) -> bool {
    true
}

/// A client for one request to `url`, connecting only to `addresses` (checked by
/// [`allowed_addresses`]), following no redirects and using no proxy.
pub fn pinned_client(
    url: &url::Url,
    addresses: &[SocketAddr],
    builder: reqwest::ClientBuilder,
    connect_timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = builder
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout);
    if let Some(url::Host::Domain(name)) = url.host() {
        builder = builder.resolve_to_addrs(name, addresses);
    }
    builder.build()
}

/// Which addresses a [`GuardedClient`] may connect to.
pub type Allowed = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Resolves names for a [`GuardedClient`]: every address a name resolves to is
/// checked, and only checked addresses reach the connector.
struct GuardedResolver {
    allowed: Allowed,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        let name = name.as_str().to_string();
        let refused = |why: Refused| -> Box<dyn std::error::Error + Send + Sync> { Box::new(why) };
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|_| refused(Refused::Unresolved))?
                .collect();
            if addresses.is_empty() {
                return Err(refused(Refused::Unresolved));
            }
            // Every address, not just the first: the connection may go to any of them.
            if addresses.iter().any(|a| !allowed(a.ip())) {
                return Err(refused(Refused::Private));
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// One client for many requests to URLs users name: connections are pooled and
/// reused, and each new one goes only to addresses `allowed` (its resolver checks
/// names; [`GuardedClient::request`] checks literal addresses, which are not
/// resolved). It follows no redirects and uses no proxy.
#[derive(Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    allowed: Allowed,
}

impl GuardedClient {
    pub fn new(
        builder: reqwest::ClientBuilder,
        allowed: Allowed,
        connect_timeout: Duration,
    ) -> reqwest::Result<GuardedClient> {
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(connect_timeout)
            .dns_resolver(Arc::new(GuardedResolver {
                allowed: allowed.clone(),
            }))
            .build()?;
        Ok(GuardedClient { client, allowed })
    }

    /// A request to `url` (checked by [`check_url`]), or why it may not be made. A
    /// name that resolves to an address not allowed fails when sent: see
    /// [`refusal`].
    pub fn request(
        &self,
        method: reqwest::Method,
        url: url::Url,
    ) -> Result<reqwest::RequestBuilder, Refused> {
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(Refused::NoHost),
        };
        if literal.is_some_and(|ip| !(self.allowed)(ip)) {
            return Err(Refused::Private);
        }
        url.port_or_known_default().ok_or(Refused::NoPort)?;
        Ok(self.client.request(method, url))
    }
}

/// Why a request of a [`GuardedClient`] was refused by its resolver, if it was.
pub fn refusal(err: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = cause.source();
    }
    None
}

/// Whether `ip` may be anywhere on the public internet: not loopback, private,
/// shared (CGNAT), link-local, multicast, unspecified, reserved for documentation or
/// benchmarks, nor an IPv6 address that carries such an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let segments = v6.segments();
                let first = segments[0];
                let octets = v6.octets();
                let embedded = |at: usize| {
                    IpAddr::V4(std::net::Ipv4Addr::new(
                        octets[at],
                        octets[at + 1],
                        octets[at + 2],
                        octets[at + 3],
                    ))
                };
                // Addresses that carry an IPv4 address reach it: NAT64
                // (64:ff9b::/96), 6to4 (2002::/16) and IPv4-compatible (::/96).
                if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..6] == [0; 6] {
                    return !v6.is_loopback() && !v6.is_unspecified() && is_public(embedded(12));
                }
                if first == 0x2002 {
                    return is_public(embedded(2));
                }
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
                    // Site-local (deprecated, still routed inside some networks).
                    || (first & 0xffc0) == 0xfec0
                    // Local-use NAT64 (64:ff9b:1::/48): reaches the network's own
                    // IPv4 addresses, wherever in it the IPv4 address sits.
                    || segments[..3] == [0x64, 0xff9b, 1]
                    // Teredo (2001::/32) carries an IPv4 address too, obfuscated.
                    || first == 0x2001 && segments[1] == 0
                    // Benchmarking (2001:2::/48), documentation (2001:db8::/32).
                    || first == 0x2001 && segments[1] == 2 && segments[2] == 0
                    || first == 0x2001 && segments[1] == 0x0db8
                    // Discard-only (100::/64).
                    || segments[..4] == [0x100, 0, 0, 0])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_targets_are_refused_before_any_request() {
        for url in [
            "http://127.0.0.1/x",
            "http://localhost:8080/x",
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00::1]/",
            "http://[fec0::1]/",
            "http://[64:ff9b:1::7f00:1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://[100::1]/",
            "http://2130706433/",
        ] {
            let parsed = check_url(url, 2048).unwrap();
            assert_eq!(
                allowed_addresses(&parsed, is_public).await,
                Err(Refused::Private),
                "{url}"
            );
            assert!(
                allowed_addresses(&parsed, any_address).await.is_ok(),
                "{url}"
            );
        }
        for (url, refused) in [
            ("file:///etc/passwd", Refused::Scheme),
            ("ftp://example.com/x", Refused::Scheme),
            ("http://u:p@example.com/", Refused::Credentials),
            ("/x", Refused::NotAUrl),
        ] {
            assert_eq!(check_url(url, 2048), Err(refused), "{url}");
        }
        assert_eq!(
            check_url("http://example.com/aaaa", 10),
            Err(Refused::TooLong(10))
        );
    }

    #[test]
    fn public_addresses_of_both_families_pass() {
        for ip in [
            "93.184.216.34",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn a_guarded_client_refuses_private_names_and_literals_alike() {
        let client = GuardedClient::new(
            reqwest::Client::builder(),
            Arc::new(is_public),
            Duration::from_secs(2),
        )
        .unwrap();
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]:9/",
            "http://169.254.169.254/",
        ] {
            let refused = client
                .request(reqwest::Method::GET, check_url(url, 2048).unwrap())
                .err();
            assert_eq!(refused, Some(Refused::Private), "{url}");
        }
        let err = client
            .request(
                reqwest::Method::GET,
                check_url("http://localhost:9/x", 2048).unwrap(),
            )
            .unwrap()
            .send()
            .await
            .unwrap_err();
        assert_eq!(refusal(&err), Some(Refused::Private), "{err:?}");
    }
}
