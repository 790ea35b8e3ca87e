//! `fountain healthcheck`: GET each selected role's `/health` on its configured port and say
//! whether all answered 200. A container's `HEALTHCHECK` runs it, so the image needs no curl.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;
use crate::platform::role::Role;

/// One probe's verdict: the role and what went wrong, if anything.
pub struct Probe {
    pub role: &'static str,
    pub url: String,
    pub failure: Option<String>,
}

/// Probes every role in `roles` with the given per-probe timeout.
pub fn probe_all(config: &Config, roles: &[&'static dyn Role], timeout: Duration) -> Vec<Probe> {
    roles.iter().map(|role| probe(config, *role, timeout)).collect()
}

fn probe(config: &Config, role: &'static dyn Role, timeout: Duration) -> Probe {
    let port = config.role_port(role.name(), role.default_port());
    let addr = SocketAddr::new(probe_ip(config.server.host), port);
    let url = format!("http://{addr}/health");
    let failure = if port == 0 {
        Some("the port is ephemeral (0): nothing fixed to probe".to_string())
    } else {
        get_health(addr, timeout).err()
    };
    Probe { role: role.name(), url, failure }
}

/// Where to reach a listener bound to `host` from the same machine: a wildcard address is
/// reached over loopback.
fn probe_ip(host: IpAddr) -> IpAddr {
    match host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// A plain HTTP/1.1 GET /health: Ok when the status line says 200.
fn get_health(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {}\r\nUser-Agent: fountain-healthcheck/{}\r\nConnection: close\r\n\r\n",
        addr,
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("no answer: {e}"))?;
    let head = String::from_utf8_lossy(&response);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else if status.is_empty() {
        Err("no HTTP answer".to_string())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_probed_over_loopback() {
        assert_eq!(probe_ip("0.0.0.0".parse().unwrap()), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(probe_ip("::".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
        assert_eq!(probe_ip("10.1.2.3".parse().unwrap()), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
