//! The provider-key vault: AES-256-GCM under a master key chosen by id.
//!
//! Each ciphertext is stored with the id of the master key that sealed it and a fresh 96-bit
//! nonce; the user id and the provider are the associated data, so a row copied onto another
//! user or provider fails to open instead of handing one user's key to another. Several master
//! keys are loaded at once (the keyring): new keys are sealed under the current one, old rows
//! open under theirs, so rotation (re-seal every row under the new key, then retire the old)
//! has no moment in which a key cannot be read.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::types::KeyProvider;

/// A sealed provider key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The master keys by id, and which one seals.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: BTreeMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Parses `id:base64key[,id:base64key...]` (each key 32 bytes). The current key is
    /// `current`, else the first listed.
    pub fn parse(spec: &str, current: Option<&str>) -> Result<Self> {
        let mut keys = BTreeMap::new();
        let mut first = None;
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) = entry.split_once(':').ok_or_else(|| {
                Error::Config("master keys are written id:base64key, separated by commas".into())
            })?;
            let id = id.trim();
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(Error::Config(format!(
                    "master key id {id:?} must be letters, digits, - or _"
                )));
            }
            // The key itself is never part of an error.
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| Error::Config(format!("master key {id}: not valid base64")))?;
            if bytes.len() != 32 {
                return Err(Error::Config(format!(
                    "master key {id}: must be 32 bytes (openssl rand -base64 32)"
                )));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| Error::Config(format!("master key {id}: unusable")))?;
            if keys.insert(id.to_string(), cipher).is_some() {
                return Err(Error::Config(format!("master key {id} is listed twice")));
            }
            first.get_or_insert_with(|| id.to_string());
        }
        let current = match current {
            Some(c) => c.to_string(),
            None => first.ok_or_else(|| Error::Config("no master key given".into()))?,
        };
        if !keys.contains_key(&current) {
            return Err(Error::Config(format!(
                "the current master key {current:?} is not among the master keys"
            )));
        }
        Ok(Keyring { current, keys })
    }

    /// A new random master key, base64 (what `clawdbot-admin` prints for rotation).
    pub fn generate_key() -> String {
        let bytes: [u8; 32] = rand::random();
        STANDARD.encode(bytes)
    }

    pub fn current_id(&self) -> &str {
        &self.current
    }

    pub fn has(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Seals `plaintext` under the current master key, bound to `user` and `provider`.
    pub fn seal(&self, user: Uuid, provider: KeyProvider, plaintext: &str) -> Result<Sealed> {
        let cipher = &self.keys[&self.current];
        let nonce: [u8; 12] = rand::random();
        let aad = associated_data(user, provider);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Crypto("sealing a provider key failed"))?;
        Ok(Sealed {
            key_id: self.current.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed key of `user` and `provider`.
    pub fn open(&self, user: Uuid, provider: KeyProvider, sealed: &Sealed) -> Result<String> {
        let cipher = self.keys.get(&sealed.key_id).ok_or(Error::Crypto(
            "the master key of a stored provider key is not loaded",
        ))?;
        if sealed.nonce.len() != 12 {
            return Err(Error::Crypto("a stored provider key has a malformed nonce"));
        }
        let aad = associated_data(user, provider);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Crypto("a stored provider key failed to open"))?;
        String::from_utf8(plain).map_err(|_| Error::Crypto("a stored provider key is not text"))
    }

    /// The same key sealed under the current master key (rotation).
    pub fn reseal(&self, user: Uuid, provider: KeyProvider, sealed: &Sealed) -> Result<Sealed> {
        let plain = self.open(user, provider, sealed)?;
        self.seal(user, provider, &plain)
    }
}

fn associated_data(user: Uuid, provider: KeyProvider) -> Vec<u8> {
    format!("clawdbot/provider-key/v1/{user}/{}", provider.as_str()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn ring(spec: &str, current: Option<&str>) -> Keyring {
        Keyring::parse(spec, current).unwrap()
    }

    #[test]
    fn a_key_round_trips_and_the_ciphertext_hides_it() {
        let r = ring(&format!("k1:{K1}"), None);
        let user = Uuid::new_v4();
        let key = "sk-proj-secretsecretsecret1234";
        let s = r.seal(user, KeyProvider::Openai, key).unwrap();
        assert_eq!(s.key_id, "k1");
        assert!(!s.ciphertext.windows(8).any(|w| w == &key.as_bytes()[8..16]));
        assert_eq!(r.open(user, KeyProvider::Openai, &s).unwrap(), key);
        let again = r.seal(user, KeyProvider::Openai, key).unwrap();
        assert_ne!(again.nonce, s.nonce, "a fresh nonce per seal");
    }

    #[test]
    fn a_row_moved_to_another_user_or_provider_does_not_open() {
        let r = ring(&format!("k1:{K1}"), None);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let s = r
            .seal(a, KeyProvider::Openai, "sk-aaaaaaaaaaaaaaaaaaaa")
            .unwrap();
        assert!(r.open(b, KeyProvider::Openai, &s).is_err());
        assert!(r.open(a, KeyProvider::Anthropic, &s).is_err());
        let mut tampered = s.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(r.open(a, KeyProvider::Openai, &tampered).is_err());
    }

    #[test]
    fn rotation_keeps_old_rows_readable_and_reseals_under_the_new_key() {
        let k2 = Keyring::generate_key();
        let old = ring(&format!("k1:{K1}"), None);
        let user = Uuid::new_v4();
        let s1 = old
            .seal(user, KeyProvider::Anthropic, "sk-ant-0123456789abcdef")
            .unwrap();
        // Both keys loaded, the new one current: the old row still opens.
        let both = ring(&format!("k1:{K1},k2:{k2}"), Some("k2"));
        assert_eq!(
            both.open(user, KeyProvider::Anthropic, &s1).unwrap(),
            "sk-ant-0123456789abcdef"
        );
        let s2 = both.reseal(user, KeyProvider::Anthropic, &s1).unwrap();
        assert_eq!(s2.key_id, "k2");
        // With the old key retired, the resealed row opens and the old one does not.
        let new = ring(&format!("k2:{k2}"), None);
        assert!(new.open(user, KeyProvider::Anthropic, &s2).is_ok());
        assert!(matches!(
            new.open(user, KeyProvider::Anthropic, &s1),
            Err(Error::Crypto(_))
        ));
    }

    #[test]
    fn bad_keyrings_are_refused_without_showing_the_key() {
        for (spec, current) in [
            ("", None),
            ("k1", None),
            ("k1:not-base64!", None),
            ("k1:AAAA", None),
            (&*format!("k1:{K1},k1:{K1}"), None),
            (&*format!("k1:{K1}"), Some("k9")),
            (&*format!("bad id:{K1}"), None),
        ] {
            let e = Keyring::parse(spec, current).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{spec}");
            assert!(!e.to_string().contains(K1));
        }
        let shown = format!("{:?}", ring(&format!("k1:{K1}"), None));
        assert!(!shown.contains(K1) && shown.contains("k1"));
    }
}
