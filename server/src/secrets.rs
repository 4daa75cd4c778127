//! Everything that touches a secret: generating keys, hashing them for storage, fingerprinting
//! client keys for the log, and masking them for display. No secret leaves this module in clear
//! except a newly generated key, which its creator receives once.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of keys Tokenboard generates.
pub const KEY_PREFIX: &str = "tb_";

/// A new key: `tb_` and 40 hex digits from the OS CSPRNG (160 bits).
pub fn generate_key() -> String {
    let mut b = [0u8; 20];
    getrandom::fill(&mut b).expect("the OS random source failed");
    format!("{KEY_PREFIX}{}", hex::encode(b))
}

/// How a key is stored: SHA-256, hex. Keys are long random strings, so a fast hash suffices.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Compares two stored hashes in constant time.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A display form that cannot be turned back into the secret: the first four and last four
/// characters of long values, less of short ones.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    let n = chars.len();
    let (head, tail) = match n {
        0 => return String::new(),
        1..=7 => (0, 0),
        8..=15 => (2, 2),
        _ => (if secret.starts_with(KEY_PREFIX) { 7 } else { 4 }, 4),
    };
    let head: String = chars[..head].iter().collect();
    let tail: String = chars[n - tail..].iter().collect();
    format!("{head}…{tail}")
}

/// The server's fingerprint secret, created on first start in the data directory.
pub struct Fingerprinter {
    secret: [u8; 32],
}

impl Fingerprinter {
    pub fn load_or_create(dir: &Path) -> std::io::Result<Fingerprinter> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("fingerprint.key");
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut secret = [0u8; 32];
                secret.copy_from_slice(&bytes);
                return Ok(Fingerprinter { secret });
            }
            Ok(_) => {
                return Err(std::io::Error::other(format!("{} is not 32 bytes; restore it from a backup", path.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = dir.join("fingerprint.key.tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&secret)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(Fingerprinter { secret })
    }

    /// A fingerprinter with a given secret, for tests and fuzzing.
    #[doc(hidden)]
    pub fn fixed(secret: [u8; 32]) -> Fingerprinter {
        Fingerprinter { secret }
    }

    /// 12 hex digits of HMAC-SHA256(secret, value): stable for this data directory, useless
    /// without its secret.
    pub fn fingerprint(&self, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..6])
    }

    /// The identifier a client key gets in the log: its masked form and its fingerprint, e.g.
    /// `sk-t…0001#3fa94c21d0e7`. Managed keys get the same, so their calls are attributed to them.
    pub fn client_key_id(&self, secret: &str) -> String {
        format!("{}#{}", mask(secret), self.fingerprint(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_most_of_the_secret() {
        assert_eq!(mask("sk-test-client-alpha-0001"), "sk-t…0001");
        assert_eq!(mask("tb_0123456789abcdef0123456789abcdef01234567"), "tb_0123…4567");
        assert_eq!(mask("short"), "…");
        assert_eq!(mask("abcdefghij"), "ab…ij");
        let fp = Fingerprinter::fixed([7; 32]);
        let id = fp.client_key_id("sk-test-client-alpha-0001");
        assert!(id.starts_with("sk-t…0001#") && id.len() == "sk-t…0001#".len() + 12, "{id}");
        assert_eq!(id, fp.client_key_id("sk-test-client-alpha-0001"));
        assert_ne!(id, Fingerprinter::fixed([8; 32]).client_key_id("sk-test-client-alpha-0001"));
        let k = generate_key();
        assert!(k.starts_with("tb_") && k.len() == 43);
        assert_ne!(k, generate_key());
        assert!(hashes_equal(&hash_key(&k), &hash_key(&k)));
        assert!(!hashes_equal(&hash_key(&k), &hash_key("x")));
    }
}
