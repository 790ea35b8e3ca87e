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
/// Caddy) — the last address that proxy appended to `X-Forwarded-For`. A client cannot choose
/// its own address by sending the header directly.
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
    if trusted_proxies.contains(&peer) {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

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
