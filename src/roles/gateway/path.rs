//! The path a proxied request is checked and forwarded with.
//!
//! Services route on the decoded path: actix's router decodes every `%xx` except `%25`, `%2F`
//! and `%2B` before matching, so `/kms/%6beys/x/rotate` is kms's `/keys/{service_name}/rotate`.
//! Access rules and public routes must see the path exactly as the service will route it, and
//! the service must receive exactly the path that was checked. So the gateway brings every path
//! to one canonical form first, checks that form and forwards it:
//!
//! - escapes of characters a path may carry literally (RFC 3986 `pchar`: letters, digits,
//!   `-._~`, `!$&'()*+,;=`, `:` and `@`) are decoded; other escapes are kept (upper-case hex),
//!   malformed ones are refused;
//! - empty segments (`//`) and `.` segments are dropped, `..` removes the segment before it;
//! - a path that still holds an encoded slash, backslash or NUL (`%2F`, `%5C`, `%00`), a raw
//!   backslash, or a `..` that would climb above its route prefix is refused with 400: services
//!   and proxies disagree about what those mean.
//!
//! Paths without `%`, `\`, `//` or dot segments — nearly all of them — are canonical already:
//! one scan, no allocation.

use std::borrow::Cow;

use crate::platform::error::{ApiError, ErrorCode};

/// Why a path cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    /// `%2F`, `%5C`, `%00` or a raw backslash.
    Separator,
    /// A `%` not followed by two hex digits.
    MalformedEscape,
    /// `..` above the route prefix.
    Climbs,
}

impl From<Unroutable> for ApiError {
    fn from(why: Unroutable) -> Self {
        let reason = match why {
            Unroutable::Separator => "encoded slashes, backslashes and NUL bytes are not routed",
            Unroutable::MalformedEscape => "the path has a malformed percent-escape",
            Unroutable::Climbs => "the path climbs above its service with '..'",
        };
        ApiError::new(ErrorCode::BadRequest, format!("this path cannot be routed: {reason}"))
    }
}

/// The canonical form of `path` (borrowed when `path` is canonical already).
pub fn canonical(path: &str) -> Result<Cow<'_, str>, Unroutable> {
    if is_canonical(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)?))
}

/// True when `path` has no `%`, no backslash, no empty segment and no `.` or `..` segment.
fn is_canonical(path: &[u8]) -> bool {
    let mut at = 0;
    while at < path.len() {
        match path[at] {
            b'%' | b'\\' => return false,
            b'/' => match path.get(at + 1) {
                Some(b'/') => return false,
                Some(b'.') => {
                    let segment = &path[at + 1..];
                    let end = segment.iter().position(|&b| b == b'/').unwrap_or(segment.len());
                    if matches!(&segment[..end], b"." | b"..") {
                        return false;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        at += 1;
    }
    true
}

/// Characters a path segment may carry literally (RFC 3986 `pchar` without `%`).
fn is_literal(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes the escapes of literal characters; keeps the others, upper-cased.
fn decode(path: &str) -> Result<String, Unroutable> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => return Err(Unroutable::Separator),
            b'%' => {
                let digit = |i: usize| bytes.get(i).copied().and_then(hex_value);
                let (Some(high), Some(low)) = (digit(at + 1), digit(at + 2)) else {
                    return Err(Unroutable::MalformedEscape);
                };
                match high << 4 | low {
                    b'/' | b'\\' | 0 => return Err(Unroutable::Separator),
                    byte if is_literal(byte) => out.push(byte),
                    _ => out.extend_from_slice(&[b'%', HEX[usize::from(high)], HEX[usize::from(low)]]),
                }
                at += 3;
            }
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
    // Only ASCII was added or replaced: the bytes of other characters are copied in order.
    String::from_utf8(out).map_err(|_| Unroutable::MalformedEscape)
}

/// Drops empty and `.` segments and applies `..`, which may not remove the first segment (the
/// route prefix). A path ending in a removed segment keeps its trailing slash.
fn remove_dot_segments(path: &str) -> Result<String, Unroutable> {
    let Some(path) = path.strip_prefix('/') else { return Ok(path.to_string()) };
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/') {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                if segments.len() <= 1 {
                    return Err(Unroutable::Climbs);
                }
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(path: &str) -> Result<String, Unroutable> {
        canonical(path).map(Cow::into_owned)
    }

    #[test]
    fn ordinary_paths_are_borrowed_unchanged() {
        for path in ["/", "/kms/keys", "/kms/.well-known/jwks.json", "/kms/keys/", "/a/b.c/..d/.e", "/x/a+b"]
        {
            assert!(matches!(canonical(path), Ok(Cow::Borrowed(p)) if p == path), "{path}");
        }
    }

    #[test]
    fn escapes_and_dot_segments_come_out_as_the_service_routes_them() {
        for (path, expected) in [
            ("/kms/%6beys/svc/rotate", "/kms/keys/svc/rotate"),
            ("/secrets/secret%73/svc/rotate", "/secrets/secrets/svc/rotate"),
            ("/kms/signing-key%73/rotate", "/kms/signing-keys/rotate"),
            ("/%6Bms/keys", "/kms/keys"),
            ("/kms/./keys/x/rotate", "/kms/keys/x/rotate"),
            ("/kms//keys/x/rotate", "/kms/keys/x/rotate"),
            ("//kms/keys", "/kms/keys"),
            ("/kms/foo/../keys/x/rotate", "/kms/keys/x/rotate"),
            ("/kms/foo/%2e%2E/keys", "/kms/keys"),
            ("/kms/keys/.", "/kms/keys/"),
            ("/kms/keys/x/..", "/kms/keys/"),
            ("/kms/a%20b/%3f/%25/%e2%82%ac", "/kms/a%20b/%3F/%25/%E2%82%AC"),
            ("/kms/%40%3a%2B", "/kms/@:+"),
            ("/kms/é%41", "/kms/éA"),
        ] {
            assert_eq!(canon(path).as_deref(), Ok(expected), "{path}");
        }
    }

    #[test]
    fn separators_in_disguise_malformed_escapes_and_climbing_are_refused() {
        for (path, why) in [
            ("/kms/keys%2Fx/rotate", Unroutable::Separator),
            ("/kms/keys%2fx", Unroutable::Separator),
            ("/kms/keys%5Cx", Unroutable::Separator),
            ("/kms/keys\\x", Unroutable::Separator),
            ("/kms/keys%00", Unroutable::Separator),
            ("/kms/%zz", Unroutable::MalformedEscape),
            ("/kms/%4", Unroutable::MalformedEscape),
            ("/kms/..", Unroutable::Climbs),
            ("/kms/../secrets/secrets/x", Unroutable::Climbs),
            ("/kms/a/../../secrets", Unroutable::Climbs),
            ("/../kms/keys", Unroutable::Climbs),
            ("/kms/%2e%2e/secrets", Unroutable::Climbs),
        ] {
            assert_eq!(canon(path), Err(why), "{path}");
        }
    }

    #[test]
    fn canonicalising_twice_changes_nothing() {
        for path in ["/kms/%6beys//./x/../y/", "/a/%20/%41", "/kms/keys/.", "/a/%25%32%46"] {
            let once = canon(path).unwrap();
            assert_eq!(canon(&once).as_deref(), Ok(once.as_str()), "{path}");
        }
    }
}
