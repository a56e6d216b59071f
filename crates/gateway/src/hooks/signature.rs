//! The signature of a hook call: HMAC-SHA256 with `--hook-secret` over the call's
//! timestamp, a dot and the exact body bytes, so a back end can tell the gateway's
//! calls from anyone else's and refuse an old one replayed.
//!
//! ```text
//! X-Wsgate-Timestamp: 1767225660
//! X-Wsgate-Signature: sha256=<hex of HMAC-SHA256(secret, "1767225660" + "." + body)>
//! ```
//!
//! The gateway only signs; [`verify`] is the check a back end makes (constant time),
//! kept here as the reference its documentation and tests follow.

use ring::hmac;

/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "x-wsgate-signature";
/// The header with the signed timestamp (seconds since the Unix epoch).
pub const TIMESTAMP_HEADER: &str = "x-wsgate-timestamp";
/// What the signature's value starts with.
const PREFIX: &str = "sha256=";

/// The key calls are signed with.
pub fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// The `X-Wsgate-Signature` value of `body` sent at `timestamp`.
pub fn sign(key: &hmac::Key, timestamp: u64, body: &[u8]) -> String {
    let tag = hmac::sign(key, &signed_material(timestamp, body));
    let mut out = String::with_capacity(PREFIX.len() + 64);
    out.push_str(PREFIX);
    for b in tag.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Whether `signature` (an `X-Wsgate-Signature` value) signs `body` at `timestamp`
/// (the `X-Wsgate-Timestamp` value) with `key`, compared in constant time. A back end
/// also refuses timestamps far from its clock (five minutes, say).
pub fn verify(key: &hmac::Key, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Ok(timestamp) = timestamp.parse::<u64>() else {
        return false;
    };
    let Some(tag) = signature.strip_prefix(PREFIX).and_then(unhex) else {
        return false;
    };
    hmac::verify(key, &signed_material(timestamp, body), &tag).is_ok()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `<timestamp>.<body>`.
fn signed_material(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let ts = timestamp.to_string();
    let mut m = Vec::with_capacity(ts.len() + 1 + body.len());
    m.extend_from_slice(ts.as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector any back end can check its own code against (Python:
    /// `hmac.new(b"0123456789abcdef", b"1700000000.{}", "sha256").hexdigest()`).
    #[test]
    fn known_vector() {
        let k = key(b"0123456789abcdef");
        let sig = sign(&k, 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "sha256=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
        assert!(verify(&k, "1700000000", b"{}", &sig));
    }

    #[test]
    fn body_timestamp_and_key_are_all_signed() {
        let k = key(b"0123456789abcdef");
        let body = br#"{"hook":"join","room":"lobby"}"#;
        let sig = sign(&k, 42, body);
        assert!(verify(&k, "42", body, &sig));
        assert!(verify(
            &k,
            "42",
            body,
            &sig.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify(&k, "43", body, &sig), "another timestamp");
        assert!(!verify(
            &k,
            "42",
            br#"{"hook":"join","room":"lobbY"}"#,
            &sig
        ));
        assert!(!verify(&key(b"0123456789abcdeF"), "42", body, &sig));
        assert!(!verify(&k, "42", body, &sig[7..]), "no prefix");
        assert!(!verify(&k, "42", body, &sig[..sig.len() - 1]), "odd length");
        assert!(!verify(&k, "x", body, &sig));
        assert!(!verify(&k, "42", body, "sha256=zz"));
    }
}
