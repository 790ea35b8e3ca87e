//! Header handling that is a pure function of the request: `platform::auth::bearer_token`
//! (Authorization) and `platform::net::{client_ip, client_addr}` (X-Forwarded-For behind a
//! trusted proxy). Input: the Authorization value, then `\n`-separated X-Forwarded-For lines.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::http::header::HeaderValue;
use actix_web::test::TestRequest;
use fountain::platform::{auth, net};
use libfuzzer_sys::fuzz_target;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let authorization = lines.next().unwrap_or_default();
    let mut request = TestRequest::default().peer_addr(SocketAddr::new(PEER, 40000));
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        request = request.insert_header(("authorization", value));
    }
    let mut forwarded = Vec::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            forwarded.push(line.to_vec());
            request = request.append_header(("x-forwarded-for", value));
        }
    }
    let req = request.to_http_request();
    if let Some(token) = auth::bearer_token(&req) {
        assert!(!token.is_empty() && token.trim() == token);
    }
    let trusted = [PEER, PROXY];
    let ip = net::client_ip(&req, &trusted).expect("a peer address");
    // The client address is the peer or one the headers named.
    if ip != PEER {
        let text = ip.to_string();
        let named = forwarded.iter().any(|line| {
            String::from_utf8_lossy(line).split(',').any(|hop| hop.trim().parse::<IpAddr>().ok() == Some(ip))
        });
        assert!(named, "client_ip {text} appears in no X-Forwarded-For hop");
    }
    let _ = net::client_addr(&req, &[]);
    let _ = net::client_addr(&req, &trusted);
});
