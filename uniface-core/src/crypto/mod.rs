//! Keys and sealed envelopes: what keeps templates unreadable outside memory.
//!
//! * [`Key`]: 32 random bytes (zeroed when dropped, never printed), named by a [`KeyId`] that
//!   can be shown and stored;
//! * [`KeyProvider`]: where the host's key comes from — a [`KeyFile`] (made by
//!   `uniface keys new`; on Unix refused unless owner-only), an environment variable
//!   ([`EnvKey`]), or the host's own implementation in front of a KMS;
//! * [`seal`] / [`open`]: XChaCha20-Poly1305 (RustCrypto) with a random 192-bit nonce per
//!   envelope. The envelope's header (format, key id, nonce), its purpose (what kind of
//!   payload: a template, …) and the caller's associated data are authenticated, so an
//!   envelope cannot be opened under another key, as another kind of payload, in another
//!   context (other associated data) or with a single bit altered without a typed error.
//!   (Altered key-id bytes are reported as [`Error::WrongKey`]: the envelope then names a key
//!   other than the one given.)
//!
//! Envelope layout: `"UFS1"` · key id (8 bytes) · nonce (24 bytes) · ciphertext · tag
//! (16 bytes). Authenticated data: the 36-byte header, then the purpose and the caller's
//! associated data, each preceded by its length (u64 little-endian).
//!
//! ```
//! use uniface_core::crypto::{open, seal, Key};
//! # fn main() -> uniface_core::Result<()> {
//! let key = Key::generate()?;
//! let sealed = seal(&key, "note", b"subject 42", b"a template's bytes")?;
//! assert_eq!(&open(&key, "note", b"subject 42", &sealed)?[..], b"a template's bytes");
//! assert!(open(&key, "note", b"subject 43", &sealed).is_err());
//! assert!(open(&key, "template", b"subject 42", &sealed).is_err());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Bytes in a key.
pub const KEY_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"UFS1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its plaintext.
pub const SEAL_OVERHEAD: usize = MAGIC.len() + 8 + NONCE_LEN + TAG_LEN;

fn crypto_error(message: impl Into<String>) -> Error {
    Error::Crypto {
        message: message.into(),
    }
}

/// A 256-bit secret key. Zeroed when dropped; `Debug` shows only its [`KeyId`].
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; KEY_LEN]>);

/// The public name of a key: the first 8 bytes of SHA-256 over a domain tag and the key. Safe
/// to show and store; says which key sealed an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Key {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut k[..])
            .map_err(|e| crypto_error(format!("the system random source failed: {e}")))?;
        Ok(Self(k))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A key from exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let b: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| crypto_error(format!("a key is {KEY_LEN} bytes, got {}", bytes.len())))?;
        Ok(Self::from_bytes(b))
    }

    /// A key written as 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self> {
        let t = text.trim().as_bytes();
        if t.len() != 2 * KEY_LEN || !t.iter().all(u8::is_ascii_hexdigit) {
            return Err(crypto_error(format!(
                "a key is {} hex digits, got {} characters",
                2 * KEY_LEN,
                t.len()
            )));
        }
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        for (i, b) in k.iter_mut().enumerate() {
            let pair = std::str::from_utf8(&t[2 * i..2 * i + 2]).unwrap_or("00");
            *b = u8::from_str_radix(pair, 16).unwrap_or(0);
        }
        Ok(Self(k))
    }

    /// The key's public name.
    pub fn id(&self) -> KeyId {
        let mut h = Sha256::new();
        h.update(b"uniface key id v1");
        h.update(&self.0[..]);
        let d = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        KeyId(id)
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The secret bytes, for a host that stores the key itself (a binding handing a fresh key
    /// to its caller); the copy is zeroed when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        self.0.clone()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

/// Where a host's key comes from. Implement it in front of a KMS or an HSM: `key` may fetch
/// and unwrap the key there. An encrypted gallery calls it once when it is created or opened
/// (its key-encryption key); hosts sealing templates call it themselves and pass the [`Key`]
/// to [`crate::template::Template::seal`].
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    fn key(&self) -> Result<Key>;
    /// Where the key comes from, for messages (never the key itself).
    fn describe(&self) -> String;
}

/// A key file: 32 raw bytes, readable by its owner only (enforced on Unix: made with mode
/// 600, refused when its group or others may use it or another user owns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub path: PathBuf,
}

impl KeyFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Write a fresh key to `path` (created with owner-only permissions; an existing file is
    /// never overwritten) and return its id.
    pub fn create(path: &Path) -> Result<KeyId> {
        use std::io::Write;
        let key = Key::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(path).map_err(|e| Error::io(path, e))?;
        let written = f.write_all(key.bytes()).and_then(|()| f.sync_all());
        if let Err(e) = written {
            // a partial key file would block the next attempt (files are never overwritten)
            drop(f);
            let _ = std::fs::remove_file(path);
            return Err(Error::io(path, e));
        }
        Ok(key.id())
    }
}

impl KeyProvider for KeyFile {
    /// The key in the file; refused when the file is not exactly 32 bytes or (on Unix) when
    /// another user owns it or its group or others may read or write it. The checks and the
    /// read are on one open file, so they cannot see different files.
    fn key(&self) -> Result<Key> {
        use std::io::Read;
        let p = &self.path;
        let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
        let meta = f.metadata().map_err(|e| Error::io(p, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(crypto_error(format!(
                    "the key file {} has permissions {mode:03o}: others may read it; run \
                     `chmod 600 {}`",
                    p.display(),
                    p.display()
                )));
            }
            // the owner must be this process's user: on Linux /proc/self belongs to the
            // process's effective user (where there is no /proc the owner is not checked)
            if let Ok(me) = std::fs::metadata("/proc/self") {
                if meta.uid() != me.uid() {
                    return Err(crypto_error(format!(
                        "the key file {} belongs to user {}, not to this process's user {}",
                        p.display(),
                        meta.uid(),
                        me.uid()
                    )));
                }
            }
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(crypto_error(format!(
                "the key file {} holds {} bytes, a key is {KEY_LEN} (make one with `uniface keys new`)",
                p.display(),
                meta.len()
            )));
        }
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        f.read_exact(&mut k[..]).map_err(|e| Error::io(p, e))?;
        let mut extra = [0u8; 1];
        if f.read(&mut extra).map_err(|e| Error::io(p, e))? != 0 {
            return Err(crypto_error(format!(
                "the key file {} grew while it was read",
                p.display()
            )));
        }
        Ok(Key(k))
    }

    fn describe(&self) -> String {
        format!("key file {}", self.path.display())
    }
}

/// A key in an environment variable, as 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvKey {
    pub var: String,
}

impl EnvKey {
    pub fn new(var: impl Into<String>) -> Self {
        Self { var: var.into() }
    }
}

impl KeyProvider for EnvKey {
    fn key(&self) -> Result<Key> {
        let v = Zeroizing::new(std::env::var(&self.var).map_err(|_| {
            crypto_error(format!(
                "the environment variable {} holding the key is not set (or not UTF-8)",
                self.var
            ))
        })?);
        Key::from_hex(&v).map_err(|e| crypto_error(format!("{}: {e}", self.var)))
    }

    fn describe(&self) -> String {
        format!("environment variable {}", self.var)
    }
}

/// A key already in memory (tests, or a host that fetched it itself).
impl KeyProvider for Key {
    fn key(&self) -> Result<Key> {
        Ok(self.clone())
    }

    fn describe(&self) -> String {
        format!("key {}", self.id())
    }
}

fn header(id: KeyId, nonce: &[u8; NONCE_LEN]) -> [u8; 4 + 8 + NONCE_LEN] {
    let mut h = [0u8; 4 + 8 + NONCE_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4..12].copy_from_slice(&id.0);
    h[12..].copy_from_slice(nonce);
    h
}

/// Authenticated data: the envelope header, then the purpose and the caller's associated
/// data, each length-prefixed (so no two (purpose, aad) pairs give the same bytes).
fn aad_of(header: &[u8], purpose: &str, aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(header.len() + 16 + purpose.len() + aad.len());
    v.extend_from_slice(header);
    for part in [purpose.as_bytes(), aad] {
        v.extend_from_slice(&(part.len() as u64).to_le_bytes());
        v.extend_from_slice(part);
    }
    v
}

/// Encrypt and authenticate `plaintext` under `key`, binding `purpose` (what kind of payload
/// this is, e.g. `"template"`) and `aad` (its context). Neither is stored: the opener must
/// present the same.
pub fn seal(key: &Key, purpose: &str, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| crypto_error(format!("the system random source failed: {e}")))?;
    let h = header(key.id(), &nonce);
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let body = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad_of(&h, purpose, aad),
            },
        )
        .map_err(|_| crypto_error("encryption failed"))?;
    let mut out = Vec::with_capacity(h.len() + body.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The key id an envelope names (`None` when it is not an envelope).
pub fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
    if sealed.len() < SEAL_OVERHEAD || &sealed[..4] != MAGIC {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&sealed[4..12]);
    Some(KeyId(id))
}

/// Check and decrypt an envelope made by [`seal`] with `key`, the same `purpose` and `aad`.
/// An envelope naming another key (or whose key-id bytes were altered) gives
/// [`Error::WrongKey`]; any other altered byte, another purpose or other associated data give
/// [`Error::Crypto`].
pub fn open(key: &Key, purpose: &str, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let id = sealed_key_id(sealed).ok_or_else(|| {
        crypto_error(format!(
            "not a sealed envelope ({} bytes; an envelope starts with \"UFS1\" and is at least \
             {SEAL_OVERHEAD})",
            sealed.len()
        ))
    })?;
    if id != key.id() {
        return Err(Error::WrongKey {
            expected: id.to_string(),
            got: key.id().to_string(),
        });
    }
    let (h, body) = sealed.split_at(4 + 8 + NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    cipher
        .decrypt(
            XNonce::from_slice(&h[12..]),
            Payload {
                msg: body,
                aad: &aad_of(h, purpose, aad),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| {
            crypto_error(
                "the envelope does not authenticate: its bytes were altered, or it belongs to \
                 other associated data",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_open_only_with_their_key_bytes_and_context() {
        let key = Key::generate().unwrap();
        let other = Key::generate().unwrap();
        assert_ne!(key.id(), other.id());
        let s = seal(&key, "p", b"ctx", b"secret bytes").unwrap();
        assert_eq!(s.len(), 12 + SEAL_OVERHEAD);
        assert_eq!(&open(&key, "p", b"ctx", &s).unwrap()[..], b"secret bytes");
        // two seals of the same bytes differ (random nonces)
        assert_ne!(seal(&key, "p", b"ctx", b"secret bytes").unwrap(), s);
        assert!(matches!(
            open(&other, "p", b"ctx", &s),
            Err(Error::WrongKey { .. })
        ));
        assert!(matches!(
            open(&key, "p", b"ctx2", &s),
            Err(Error::Crypto { .. })
        ));
        assert!(matches!(
            open(&key, "q", b"ctx", &s),
            Err(Error::Crypto { .. })
        ));
        // the purpose and the context cannot trade bytes
        let shifted = seal(&key, "pc", b"tx", b"secret bytes").unwrap();
        assert!(open(&key, "p", b"ctx", &shifted).is_err());
        // every single flipped bit is caught (the key id bits as a wrong key)
        for i in 0..s.len() * 8 {
            let mut t = s.clone();
            t[i / 8] ^= 1 << (i % 8);
            assert!(open(&key, "p", b"ctx", &t).is_err(), "bit {i}");
        }
        for n in 0..SEAL_OVERHEAD {
            assert!(open(&key, "p", b"ctx", &s[..n]).is_err());
        }
        assert!(!format!("{key:?}").contains(&format!("{:02x}", key.bytes()[0]).repeat(4)));
    }

    #[test]
    fn keys_parse_from_hex_and_refuse_the_rest() {
        let k = Key::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(k.bytes(), &[0xab; 32]);
        assert_eq!(
            Key::from_hex(&format!(" {}\n", "AB".repeat(32)))
                .unwrap()
                .id(),
            k.id()
        );
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(Key::from_hex(bad).is_err(), "{bad:?}");
        }
        assert!(Key::from_slice(&[0; 31]).is_err());
        assert_eq!(k.id().to_string().len(), 16);
    }

    #[test]
    fn key_files_are_owner_only_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let id = KeyFile::create(&p).unwrap();
        let key = KeyFile::new(&p).key().unwrap();
        assert_eq!(key.id(), id);
        assert!(KeyFile::create(&p).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = KeyFile::new(&p).key().unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            // another user's key file is refused (checkable when the test may chown: root)
            use std::os::unix::fs::MetadataExt;
            if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
                let theirs = dir.path().join("theirs");
                KeyFile::create(&theirs).unwrap();
                std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
                let e = KeyFile::new(&theirs).key().unwrap_err().to_string();
                assert!(e.contains("belongs to user 65534"), "{e}");
            }
        }
        std::fs::write(dir.path().join("short"), [0u8; 5]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let s = dir.path().join("short");
            std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(KeyFile::new(dir.path().join("short")).key().is_err());
        assert!(KeyFile::new(dir.path().join("missing")).key().is_err());
    }

    #[test]
    fn env_keys_read_hex() {
        let var = "UNIFACE_TEST_KEY_ENV_KEYS_READ_HEX";
        assert!(EnvKey::new(var).key().is_err());
        std::env::set_var(var, "01".repeat(32));
        assert_eq!(EnvKey::new(var).key().unwrap().bytes(), &[1; 32]);
        std::env::remove_var(var);
    }
}
