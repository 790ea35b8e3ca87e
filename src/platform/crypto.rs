//! Encryption at rest and keyed lookup hashes, both derived from one master key.
//!
//! The master key comes from a file (`FOUNTAIN_MASTER_KEY_FILE`: Docker or systemd credentials)
//! or is generated on first start as `<data dir>/master.key` with mode 0600. Two independent
//! subkeys are derived from it with HKDF-SHA256: an AES-256-GCM key for values that must be
//! readable again (API keys, signing keys, secrets) and an HMAC-SHA256 key for lookup hashes of
//! values that are only ever compared (refresh tokens, API keys on verify). A database row alone
//! reveals neither. A third, the audit chain key, MACs audit records (`platform::audit`), so
//! that someone with only database access cannot rewrite the trail and recompute its chain.

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const MASTER_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const CHECK_CONTEXT: &str = "master-key-check";
const CHECK_PLAINTEXT: &[u8] = b"fountain master key check v1";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("cannot read master key file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("master key file {path} must hold 32 bytes, base64-encoded")]
    Malformed { path: String },
    #[error("cannot create master key file {path}: {reason}")]
    Create { path: String, reason: String },
    #[error("the master key does not match the data in this database (was the master key file replaced?)")]
    WrongKey,
    #[error("stored ciphertext is damaged or was sealed with another key")]
    Open,
}

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The secret value itself; every call site is a place where the secret leaves its wrapper.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Encrypts, decrypts and hashes with subkeys of the master key.
pub struct MasterKey {
    cipher: Aes256Gcm,
    lookup: Hmac<Sha256>,
    audit_chain: ChainKey,
}

/// The HMAC-SHA256 key of the audit trail's hash chain, derived from the master key: every
/// process that has the master key (every role, also one per systemd unit) can append to and
/// verify a chain; a copy of the database alone cannot.
#[derive(Clone)]
pub struct ChainKey(Hmac<Sha256>);

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(***)")
    }
}

impl ChainKey {
    /// The MAC of `message`, hex.
    pub fn mac(&self, message: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(message);
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `stored` is the MAC of `message`, compared in constant time.
    pub fn verify(&self, message: &[u8], stored: &str) -> bool {
        constant_time_eq(self.mac(message).as_bytes(), stored.as_bytes())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// Builds the subkeys from 32 bytes of key material.
    pub fn from_bytes(material: &[u8; MASTER_KEY_LEN]) -> Self {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"fountain"), material);
        let mut enc = [0u8; 32];
        let mut mac = [0u8; 32];
        let mut chain = [0u8; 32];
        // All three expansions are 32 bytes, far below HKDF's 255*32 limit: they cannot fail.
        hkdf.expand(b"fountain/aes-256-gcm/v1", &mut enc).expect("32-byte HKDF output");
        hkdf.expand(b"fountain/lookup-hmac/v1", &mut mac).expect("32-byte HKDF output");
        hkdf.expand(b"fountain/audit-chain-hmac/v1", &mut chain).expect("32-byte HKDF output");
        let hmac =
            |key: &[u8]| <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        Self { cipher: Aes256Gcm::new(&enc.into()), lookup: hmac(&mac), audit_chain: ChainKey(hmac(&chain)) }
    }

    /// Reads the key from `file` when given, otherwise from `<data_dir>/master.key`, generating
    /// that file (mode 0600) on first start.
    pub fn load_or_create(file: Option<&Path>, data_dir: &Path) -> Result<Self, CryptoError> {
        match file {
            Some(path) => Self::read(path),
            None => {
                let path = data_dir.join("master.key");
                if !path.exists() {
                    create_key_file(&path)?;
                    log::info!(target: "fountain::crypto", path = path.display().to_string().as_str(); "generated a new master key");
                }
                Self::read(&path)
            }
        }
    }

    /// Reads the key from `file` when given, otherwise from `<data_dir>/master.key`; never
    /// creates one (for commands that only read, such as `fountain audit verify`).
    pub fn load_existing(file: Option<&Path>, data_dir: &Path) -> Result<Self, CryptoError> {
        match file {
            Some(path) => Self::read(path),
            None => Self::read(&data_dir.join("master.key")),
        }
    }

    /// The key that MACs the audit trail's hash chain.
    pub fn audit_chain_key(&self) -> ChainKey {
        self.audit_chain.clone()
    }

    fn read(path: &Path) -> Result<Self, CryptoError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CryptoError::Unreadable { path: display.clone(), reason: e.kind().to_string() })?;
        let bytes =
            STANDARD.decode(text.trim()).map_err(|_| CryptoError::Malformed { path: display.clone() })?;
        let material: [u8; MASTER_KEY_LEN] =
            bytes.try_into().map_err(|_| CryptoError::Malformed { path: display })?;
        Ok(Self::from_bytes(&material))
    }

    /// Encrypts `plaintext`, bound to `context` (a row can't be moved to another purpose).
    /// Output: base64 of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Decrypts what [`seal`](Self::seal) produced with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| CryptoError::Open)?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .map_err(|_| CryptoError::Open)
    }

    /// A keyed hash for exact-match lookups (hex). Deterministic, so it can be a unique index.
    pub fn lookup_hash(&self, context: &str, value: &[u8]) -> String {
        let mut mac = self.lookup.clone();
        mac.update(context.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        hex(&mac.finalize().into_bytes())
    }

    /// A token that proves this key sealed the data: stored once, checked on every start.
    pub fn check_value(&self) -> String {
        self.seal(CHECK_CONTEXT, CHECK_PLAINTEXT)
    }

    /// Whether `stored` was produced by [`check_value`](Self::check_value) with this key.
    pub fn verify_check_value(&self, stored: &str) -> Result<(), CryptoError> {
        match self.open(CHECK_CONTEXT, stored) {
            Ok(plain) if plain == CHECK_PLAINTEXT => Ok(()),
            _ => Err(CryptoError::WrongKey),
        }
    }
}

/// `n` random bytes from the operating system, URL-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Constant-time equality for secrets (only the lengths may differ visibly): every byte is
/// looked at whatever the contents, eight at a time. `subtle`'s slice comparison takes ~10
/// instructions a byte, too many for the gateway's per-request token check.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |chunk: &[u8]| u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail =
        a_words.remainder().iter().zip(b_words.remainder()).fold(0u64, |d, (x, y)| d | u64::from(x ^ y));
    let difference = a_words.zip(b_words).fold(tail, |d, (x, y)| d | (word(x) ^ word(y)));
    // Keeps the compiler from turning the fold into an early exit.
    std::hint::black_box(difference) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn create_key_file(path: &Path) -> Result<(), CryptoError> {
    let mut material = [0u8; MASTER_KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut material);
    super::fs::write_private_file(path, &STANDARD.encode(material))
        .map_err(|e| CryptoError::Create { path: path.display().to_string(), reason: e.kind().to_string() })
}

/// Where the master key file is, when one is configured.
pub fn configured_key_file(configured: &str) -> Option<PathBuf> {
    let trimmed = configured.trim();
    (!trimmed.is_empty()).then(|| PathBuf::from(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let k = key(1);
        let sealed = k.seal("api-key", b"fk_secret");
        assert!(!sealed.contains("fk_secret"));
        assert_eq!(k.open("api-key", &sealed).unwrap(), b"fk_secret");
        assert!(k.open("signing-key", &sealed).is_err(), "context is bound");
        assert!(key(2).open("api-key", &sealed).is_err(), "another key cannot open it");
        assert_ne!(k.seal("api-key", b"fk_secret"), sealed, "fresh nonce every time");
        assert!(k.open("api-key", "not base64!").is_err());
    }

    #[test]
    fn lookup_hashes_are_keyed_and_domain_separated() {
        let k = key(1);
        assert_eq!(k.lookup_hash("api-key", b"x"), k.lookup_hash("api-key", b"x"));
        assert_ne!(k.lookup_hash("api-key", b"x"), k.lookup_hash("refresh", b"x"));
        assert_ne!(k.lookup_hash("api-key", b"x"), key(2).lookup_hash("api-key", b"x"));
        assert_eq!(k.lookup_hash("api-key", b"x").len(), 64);
    }

    #[test]
    fn audit_chain_macs_are_keyed_and_separate_from_lookup_hashes() {
        let chain = key(1).audit_chain_key();
        let mac = chain.mac(b"record");
        assert_eq!(mac.len(), 64);
        assert!(chain.verify(b"record", &mac));
        assert!(!chain.verify(b"record!", &mac));
        assert!(!key(2).audit_chain_key().verify(b"record", &mac), "another master key");
        assert_ne!(mac, key(1).lookup_hash("", b"record"));
        assert_eq!(format!("{chain:?}"), "ChainKey(***)");
    }

    #[test]
    fn check_values_detect_a_replaced_key() {
        let stored = key(1).check_value();
        assert!(key(1).verify_check_value(&stored).is_ok());
        assert!(matches!(key(2).verify_check_value(&stored), Err(CryptoError::WrongKey)));
    }

    #[cfg(unix)]
    #[test]
    fn generated_key_files_are_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load_or_create(None, dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = MasterKey::load_or_create(None, dir.path()).unwrap();
        assert_eq!(again.open("c", &first.seal("c", b"v")).unwrap(), b"v");
        std::fs::write(dir.path().join("bad.key"), "short").unwrap();
        let err = MasterKey::load_or_create(Some(&dir.path().join("bad.key")), dir.path()).unwrap_err();
        assert!(err.to_string().contains("must hold 32 bytes"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        let long: Vec<u8> = (0..=255).collect();
        assert!(constant_time_eq(&long, &long.clone()));
        for at in [0, 7, 8, 200, 255] {
            let mut other = long.clone();
            other[at] ^= 1;
            assert!(!constant_time_eq(&long, &other), "a difference at byte {at}");
        }
        assert!(!constant_time_eq(&long, &long[..255]));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
