//! Where the gateway may send requests for registered instances: the registry must not turn
//! the gateway into a way into the private network or the cloud's metadata service.
//!
//! - Link-local addresses (169.254.0.0/16, fe80::/10), cloud metadata addresses
//!   (169.254.169.254, fd00:ec2::254, 100.100.100.200), unspecified, multicast and reserved
//!   addresses are never allowed.
//! - Private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10) are allowed
//!   only inside `registry_allowed_networks`.
//! - Loopback and public addresses are allowed (everything runs on loopback in development).
//!
//! A host name passes when every address it resolves to passes. It is checked when it is
//! registered and again whenever the gateway opens a connection or probes it, so a name that
//! resolves elsewhere later (DNS rebinding) is refused then. The `[peers]` URLs are the
//! operator's own choice and are never checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use rustc_hash::FxHashSet;

/// How long resolving a registered host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// An address block, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("{text:?} is not an address or a network like 10.0.0.0/8");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let base: IpAddr = address.parse().map_err(|_| invalid())?;
        let longest = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= longest).ok_or_else(invalid)?,
            None => longest,
        };
        Ok(Self { base, prefix })
    }
}

impl Network {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self { base: IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Self { base: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), prefix }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Never allowed, whatever is configured.
const FORBIDDEN: &[(Network, &str)] = &[
    (Network::v4(0, 0, 0, 0, 8), "an unspecified address"),
    (Network::v4(169, 254, 0, 0, 16), "a link-local or metadata address"),
    (Network::v4(100, 100, 100, 200, 32), "a cloud metadata address"),
    (Network::v4(224, 0, 0, 0, 4), "a multicast address"),
    (Network::v4(240, 0, 0, 0, 4), "a reserved or broadcast address"),
    (Network::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "an unspecified address"),
    (Network::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "a link-local address"),
    (Network::v6([0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254], 128), "a cloud metadata address"),
    (Network::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "a multicast address"),
];

/// Allowed only inside `registry_allowed_networks`.
const PRIVATE: &[Network] = &[
    Network::v4(10, 0, 0, 0, 8),
    Network::v4(172, 16, 0, 0, 12),
    Network::v4(192, 168, 0, 0, 16),
    Network::v4(100, 64, 0, 0, 10),
    Network::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    Network::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
];

/// An IPv4 address that an IPv6 address reaches through a translator: compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`). (Mapped addresses,
/// `::ffff:a.b.c.d`, are the IPv4 address itself.)
fn translated_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if (bits >> 32 == 0 && bits > 1)
        || Network::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96).contains(IpAddr::V6(ip))
    {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if ip.segments()[0] == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// Why an instance address is refused (for the 422 and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The address is in a forbidden or not-allowed block: the reason.
    Address(&'static str),
    /// The host name did not resolve (or not in time).
    Unresolved,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Address(reason) => write!(f, "the instance address is {reason}"),
            Refused::Unresolved => f.write_str("the instance's host name does not resolve"),
        }
    }
}

/// The registry's address policy, shared by registration, health probes and every worker's pool.
#[derive(Debug, Default)]
pub struct AddressPolicy {
    allowed: Vec<Network>,
    /// `[peers]` base URLs as configured and as the URL parser writes them.
    configured: FxHashSet<Box<str>>,
}

impl AddressPolicy {
    pub fn new<'a>(
        allowed_networks: &[String],
        configured_urls: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, String> {
        let allowed = allowed_networks
            .iter()
            .map(|n| n.parse().map_err(|e| format!("registry_allowed_networks: {e}")))
            .collect::<Result<_, _>>()?;
        let mut configured = FxHashSet::default();
        for url in configured_urls {
            configured.insert(Box::from(url.trim_end_matches('/')));
            if let Some(normalised) = normalise(url) {
                configured.insert(normalised.into_boxed_str());
            }
        }
        Ok(Self { allowed, configured })
    }

    /// A `[peers]` URL: the operator's choice, never checked.
    pub fn is_configured(&self, base_url: &str) -> bool {
        self.configured.contains(base_url)
    }

    /// Whether the gateway may connect to `ip` for a registered instance.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let IpAddr::V6(v6) = ip else { return self.check_as(ip, ip) };
        if let Some(v4) = v6.to_ipv4_mapped() {
            return self.check_as(IpAddr::V4(v4), ip);
        }
        match translated_v4(v6) {
            // Through a translator only another host makes sense.
            Some(v4) if v4.is_loopback() => Err(Refused::Address("a translated loopback address")),
            Some(v4) => self.check_as(IpAddr::V4(v4), ip),
            None => self.check_as(ip, ip),
        }
    }

    /// Checks `ip`, which reaches `seen_as`.
    fn check_as(&self, seen_as: IpAddr, ip: IpAddr) -> Result<(), Refused> {
        if seen_as.is_loopback() {
            return Ok(());
        }
        if let Some((_, reason)) = FORBIDDEN.iter().find(|(block, _)| block.contains(seen_as)) {
            return Err(Refused::Address(reason));
        }
        let private = PRIVATE.iter().any(|block| block.contains(seen_as));
        if private && !self.allowed.iter().any(|n| n.contains(ip) || n.contains(seen_as)) {
            return Err(Refused::Address("in a private network not in registry_allowed_networks"));
        }
        Ok(())
    }

    /// Every address `host` resolves to, when all of them pass.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        // `[::1]` in a URL is `::1` to the resolver.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check(ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await;
        let addresses: Vec<SocketAddr> = match resolved {
            Ok(Ok(addresses)) => addresses.collect(),
            _ => return Err(Refused::Unresolved),
        };
        if addresses.is_empty() {
            return Err(Refused::Unresolved);
        }
        for address in &addresses {
            self.check(address.ip())?;
        }
        Ok(addresses)
    }

    /// Whether a connection to `base_url` (a registered instance) is allowed now.
    pub async fn check_url(&self, base_url: &str) -> Result<(), Refused> {
        if self.is_configured(base_url) {
            return Ok(());
        }
        let url = url::Url::parse(base_url).map_err(|_| Refused::Unresolved)?;
        let host = url.host_str().ok_or(Refused::Unresolved)?;
        self.resolve(host, url.port_or_known_default().unwrap_or(80)).await.map(|_| ())
    }
}

/// A base URL as the registry stores it: the URL parser's serialisation (so that the gateway's
/// check and its connection read the same host), without a trailing slash.
pub fn normalise(raw: &str) -> Option<String> {
    url::Url::parse(raw).ok().map(|u| u.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> AddressPolicy {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        AddressPolicy::new(&allowed, ["http://kms.internal:8003/"]).unwrap()
    }

    fn verdict(policy: &AddressPolicy, ip: &str) -> bool {
        policy.check(ip.parse().unwrap()).is_ok()
    }

    #[test]
    fn metadata_link_local_and_private_addresses_are_refused_loopback_and_public_pass() {
        let closed = policy(&[]);
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "100.100.100.200",
            "fe80::1",
            "fd00:ec2::254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "fc00::1",
            "fd12::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!verdict(&closed, ip), "{ip} passed");
        }
        for ip in
            ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1", "8.8.8.8", "172.32.0.1", "2001:db8::1"]
        {
            assert!(verdict(&closed, ip), "{ip} refused");
        }
    }

    #[test]
    fn allowed_networks_open_private_ranges_but_never_metadata_or_link_local() {
        let open = policy(&["10.0.0.0/8", "fd00::/8", "169.254.0.0/16", "192.168.7.7"]);
        for ip in ["10.9.9.9", "::ffff:10.9.9.9", "fd12::1", "192.168.7.7"] {
            assert!(verdict(&open, ip), "{ip} refused");
        }
        for ip in ["169.254.169.254", "fd00:ec2::254", "192.168.7.8", "172.16.0.1"] {
            assert!(!verdict(&open, ip), "{ip} passed");
        }
    }

    #[test]
    fn networks_parse_strictly() {
        assert_eq!("10.0.0.0/8".parse::<Network>().unwrap(), Network::v4(10, 0, 0, 0, 8));
        assert!("0.0.0.0/0".parse::<Network>().unwrap().contains("203.0.113.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fc00::/129", "10.0.0/8", "ten", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    #[test]
    fn configured_peer_urls_are_trusted_as_written_and_as_normalised() {
        let p = policy(&[]);
        assert!(p.is_configured("http://kms.internal:8003"));
        assert!(!p.is_configured("http://evil.internal:8003"));
        assert_eq!(normalise("http://SVC.test:80/").as_deref(), Some("http://svc.test"));
        assert_eq!(normalise("http://2852039166/").as_deref(), Some("http://169.254.169.254"));
    }
}
