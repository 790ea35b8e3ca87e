//! Where notify may send webhooks. A callback URL names a host, but what notify connects to is
//! an address: every address the host stands for is checked — when the subscription is created
//! and again before each delivery — and a delivery connects to the very address that was
//! checked, so a name that later resolves elsewhere (DNS rebinding) cannot swap it.
//!
//! Refused destinations:
//! - cloud metadata endpoints: 169.254.169.254, fd00:ec2::254 (AWS), 100.100.100.200 (Alibaba);
//! - link-local addresses: 169.254.0.0/16, fe80::/10;
//! - the unspecified address (0.0.0.0, `::`), which reaches the local host;
//! - notify's own listener under any alias: any loopback address at notify's port, its listen
//!   address, and — when it listens on every interface — every local address at its port.
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
//! `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are checked as that IPv4 address. `localhost` and
//! names under `.localhost`, with or without the final dot, are loopback without asking DNS
//! (RFC 6761). Loopback at other ports stays allowed: development and tests run there.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Why a destination address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the notification service itself")]
    Itself,
    #[error("a cloud metadata address")]
    Metadata,
    #[error("a link-local address")]
    LinkLocal,
    #[error("an unspecified address")]
    Unspecified,
}

/// Why a callback cannot be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("its host cannot be resolved")]
    Unresolvable,
    /// `addr` is what the host resolved to (for the delivery log; never shown to the caller
    /// who submitted the URL).
    #[error("{addr} is {refused}")]
    Refused { addr: SocketAddr, refused: Refused },
}

const METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// The IPv4 address an IPv6 address carries (mapped, compatible or NAT64), else the address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let segments = v6.segments();
    let [.., a, b, c, d] = v6.octets();
    let compatible = segments[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    } else {
        ip
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Whether `ip` is an address of this host (a socket can be bound to it).
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The destinations notify refuses, given where it listens itself.
#[derive(Debug, Clone)]
pub struct CallbackPolicy {
    /// notify's listener: the configured host (possibly unspecified) and the bound port.
    own: SocketAddr,
}

impl CallbackPolicy {
    pub fn new(own: SocketAddr) -> Self {
        Self { own: SocketAddr::new(canonical(own.ip()), own.port()) }
    }

    /// Whether notify may connect to `addr`.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refused> {
        let ip = canonical(addr.ip());
        if METADATA.contains(&ip) {
            return Err(Refused::Metadata);
        }
        if is_link_local(ip) {
            return Err(Refused::LinkLocal);
        }
        if ip.is_unspecified() {
            return Err(Refused::Unspecified);
        }
        if addr.port() == self.own.port() && self.reaches_own_listener(ip) {
            return Err(Refused::Itself);
        }
        Ok(())
    }

    fn reaches_own_listener(&self, ip: IpAddr) -> bool {
        let own = self.own.ip();
        ip == own || ip.is_loopback() || (own.is_unspecified() && is_local(ip))
    }

    /// Every address `addr` stands for passes [`CallbackPolicy::check`]; returns them in order.
    pub fn check_all(&self, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, CallbackError> {
        if addrs.is_empty() {
            return Err(CallbackError::Unresolvable);
        }
        for addr in &addrs {
            self.check(*addr).map_err(|refused| CallbackError::Refused { addr: *addr, refused })?;
        }
        Ok(addrs)
    }

    /// Resolves `url`'s host and checks every address it stands for.
    pub async fn resolve_checked(&self, url: &url::Url) -> Result<Vec<SocketAddr>, CallbackError> {
        self.check_all(resolve(url).await?)
    }
}

/// The port a callback URL is reached at.
fn port_of(url: &url::Url) -> u16 {
    url.port_or_known_default().unwrap_or(80)
}

/// The loopback addresses of `localhost` and names under `.localhost` (RFC 6761), else None.
fn special_name(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then(|| {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]
    })
}

/// The addresses `url`'s host stands for: an IP literal as is, a special-use loopback name
/// without DNS, any other name through the system resolver (on a blocking thread).
pub async fn resolve(url: &url::Url) -> Result<Vec<SocketAddr>, CallbackError> {
    let port = port_of(url);
    match url.host() {
        Some(url::Host::Ipv4(v4)) => Ok(vec![SocketAddr::new(IpAddr::V4(v4), port)]),
        Some(url::Host::Ipv6(v6)) => Ok(vec![SocketAddr::new(IpAddr::V6(v6), port)]),
        Some(url::Host::Domain(name)) => {
            if let Some(addrs) = special_name(name, port) {
                return Ok(addrs);
            }
            let name = name.to_string();
            let found = actix_web::rt::task::spawn_blocking(move || {
                (name.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>)
            })
            .await;
            match found {
                Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
                _ => Err(CallbackError::Unresolvable),
            }
        }
        None => Err(CallbackError::Unresolvable),
    }
}

/// How long the delivery worker reuses a resolution.
const RESOLVED_TTL: Duration = Duration::from_secs(5);

/// Host and port -> when they were resolved, and the checked addresses.
type Resolved = HashMap<(String, u16), (Instant, Vec<SocketAddr>)>;

/// The delivery worker's resolver: checked resolutions reused for a few seconds, so that a
/// busy subscriber does not cost a DNS lookup per delivery. Only checked addresses are kept,
/// and a delivery connects to one of them.
pub struct CheckedResolver {
    policy: CallbackPolicy,
    cache: RefCell<Resolved>,
}

impl CheckedResolver {
    pub fn new(policy: CallbackPolicy) -> Self {
        Self { policy, cache: RefCell::new(HashMap::new()) }
    }

    /// The checked addresses of `url`'s host.
    pub async fn addresses(&self, url: &url::Url) -> Result<Vec<SocketAddr>, CallbackError> {
        let key = (url.host_str().unwrap_or_default().to_string(), port_of(url));
        let now = Instant::now();
        if let Some((at, addrs)) = self.cache.borrow().get(&key) {
            if now.duration_since(*at) < RESOLVED_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.policy.resolve_checked(url).await?;
        let mut cache = self.cache.borrow_mut();
        cache.retain(|_, (at, _)| now.duration_since(*at) < RESOLVED_TTL);
        cache.insert(key, (now, addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_checked_as_ipv4() {
        for (v6, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:169.254.169.254", "169.254.169.254"),
            ("::127.0.0.1", "127.0.0.1"),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ] {
            assert_eq!(canonical(v6.parse().unwrap()), v4.parse::<IpAddr>().unwrap(), "{v6}");
        }
        for same in ["::1", "::", "2001:db8::1", "fe80::1"] {
            assert_eq!(canonical(same.parse().unwrap()), same.parse::<IpAddr>().unwrap(), "{same}");
        }
    }

    #[test]
    fn metadata_link_local_and_unspecified_addresses_are_refused() {
        let policy = CallbackPolicy::new(addr("127.0.0.1:8006"));
        for (target, refused) in [
            ("169.254.169.254:80", Refused::Metadata),
            ("[::ffff:169.254.169.254]:80", Refused::Metadata),
            ("[fd00:ec2::254]:80", Refused::Metadata),
            ("100.100.100.200:80", Refused::Metadata),
            ("169.254.1.2:8080", Refused::LinkLocal),
            ("[fe80::1]:80", Refused::LinkLocal),
            ("[febf::1]:80", Refused::LinkLocal),
            ("[::ffff:169.254.0.1]:80", Refused::LinkLocal),
            ("0.0.0.0:9000", Refused::Unspecified),
            ("[::]:9000", Refused::Unspecified),
        ] {
            assert_eq!(policy.check(addr(target)), Err(refused), "{target}");
        }
        for allowed in ["127.0.0.1:9000", "[::1]:9000", "10.1.2.3:8006", "[2001:db8::1]:443", "[fec0::1]:80"]
        {
            assert_eq!(policy.check(addr(allowed)), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn notify_itself_is_refused_under_every_alias() {
        let policy = CallbackPolicy::new(addr("127.0.0.1:8006"));
        for alias in [
            "127.0.0.1:8006",
            "127.0.0.2:8006",
            "[::1]:8006",
            "[::ffff:127.0.0.1]:8006",
            "[::ffff:7f00:1]:8006",
        ] {
            assert_eq!(policy.check(addr(alias)), Err(Refused::Itself), "{alias}");
        }
        // Listening on every interface: every local address at the port is notify.
        let everywhere = CallbackPolicy::new(addr("0.0.0.0:8006"));
        assert_eq!(everywhere.check(addr("127.0.0.1:8006")), Err(Refused::Itself));
        assert_eq!(everywhere.check(addr("127.0.0.1:8007")), Ok(()));
        assert_eq!(everywhere.check(addr("192.0.2.10:8006")), Ok(()), "not an address of this host");
        // Listening on one address: that address at the port.
        let one = CallbackPolicy::new(addr("192.0.2.10:8006"));
        assert_eq!(one.check(addr("[::ffff:192.0.2.10]:8006")), Err(Refused::Itself));
        assert_eq!(one.check(addr("192.0.2.11:8006")), Ok(()));
    }

    #[actix_web::test]
    async fn special_use_names_are_loopback_without_dns() {
        for url in ["http://localhost.:9/", "http://LOCALHOST:9/", "http://api.localhost./"] {
            let url = url::Url::parse(url).unwrap();
            let addrs = resolve(&url).await.unwrap();
            assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{url}: {addrs:?}");
        }
        let literal = url::Url::parse("http://[::ffff:127.0.0.1]:9/").unwrap();
        assert_eq!(resolve(&literal).await.unwrap(), vec![addr("[::ffff:127.0.0.1]:9")]);
        let decimal = url::Url::parse("http://2130706433:9/").unwrap();
        assert_eq!(resolve(&decimal).await.unwrap(), vec![addr("127.0.0.1:9")]);
    }
}
