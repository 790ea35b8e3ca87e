//! Where a request comes from, as far as it can be trusted.

use std::net::IpAddr;

use actix_web::HttpRequest;

/// The client address: the TCP peer, or — when the peer is a trusted proxy (the gateway,
/// Caddy) — the last address that proxy appended to `X-Forwarded-For`. A client cannot choose
/// its own address by sending the header directly.
pub fn client_addr(req: &HttpRequest, trusted_proxies: &[IpAddr]) -> String {
    client_ip(req, trusted_proxies).map_or_else(|| "unknown".into(), |ip| ip.to_string())
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
