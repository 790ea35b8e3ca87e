//! Where a request comes from, as far as it can be trusted; where a service can be reached.

use std::net::IpAddr;

use actix_web::HttpRequest;

/// A service's base URL as fountain can reach it: plain `http://` with a host and no
/// credentials. TLS ends at the front proxy; roles and services talk over the private network.
pub fn is_plain_http_url(raw: &str) -> bool {
    url::Url::parse(raw).is_ok_and(|u| {
        u.scheme() == "http" && u.host_str().is_some() && u.username().is_empty() && u.password().is_none()
    })
}

/// The client address: the TCP peer, or — when the peer is a trusted proxy (the gateway,
/// Caddy) — the nearest address in `X-Forwarded-For` that is not itself a trusted proxy, read
/// from the right (each proxy appends the address it received the request from). A client
/// cannot choose its own address by sending the header, and a chain of trusted proxies (Caddy,
/// then the gateway) still yields the real client, not the first proxy.
pub fn client_addr(req: &HttpRequest, trusted_proxies: &[IpAddr]) -> String {
    client_ip(req, trusted_proxies).map_or_else(|| "unknown".into(), |ip| ip.to_string())
}

/// Appends `ip` to `out`. IPv4 goes through `itoa` rather than `Display` (padding support and
/// all): the gateway writes its peer into `X-Forwarded-For` on every request.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `client_addr` as an address, without formatting it.
pub fn client_ip(req: &HttpRequest, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let mut lines = req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok());
    // One header line is the usual case and is walked in place; several are joined first.
    Some(match (lines.next(), lines.next()) {
        (None, _) => peer,
        (Some(one), None) => nearest_untrusted(peer, std::iter::once(one), trusted_proxies),
        (Some(first), Some(second)) => {
            let all: Vec<&str> = [first, second].into_iter().chain(lines).collect();
            nearest_untrusted(peer, all.into_iter(), trusted_proxies)
        }
    })
}

/// Walks `X-Forwarded-For` values (in header order) from the right while the hop is trusted.
/// An unparsable hop ends the walk at the last trusted address: nothing beyond it is believed.
fn nearest_untrusted<'a>(
    peer: IpAddr,
    values: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[IpAddr],
) -> IpAddr {
    let mut current = peer;
    for hop in values.rev().flat_map(|v| v.rsplit(',')) {
        if !trusted.contains(&current) {
            break;
        }
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => current = ip,
            Err(_) => break,
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_nearest_untrusted_hop_from_the_right() {
        let trusted: Vec<IpAddr> = ["127.0.0.1", "10.0.0.2"].iter().map(|s| s.parse().unwrap()).collect();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let walk = |values: &[&str]| nearest_untrusted(peer, values.iter().copied(), &trusted).to_string();
        // Caddy (10.0.0.2) appended the client, the gateway (127.0.0.1) appended Caddy.
        assert_eq!(walk(&["203.0.113.7, 10.0.0.2"]), "203.0.113.7");
        // A client-sent value left of the real hops is not believed.
        assert_eq!(walk(&["1.2.3.4, 203.0.113.7, 10.0.0.2"]), "203.0.113.7");
        // Several header lines are one list.
        assert_eq!(walk(&["1.2.3.4", "198.51.100.9"]), "198.51.100.9");
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(walk(&["203.0.113.7, not-an-ip"]), "127.0.0.1");
        assert_eq!(walk(&[]), "127.0.0.1");
    }

    #[test]
    fn push_ip_writes_what_display_writes() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.30.40", "255.255.255.255", "::1", "2001:db8::8a2e:370:7334"]
        {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::from("x, ");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x, {ip}"));
        }
    }
}
