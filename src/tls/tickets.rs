//! TLS session tickets: how a returning client skips the full handshake's signature.
//!
//! A ticket is the client's session sealed under a key of the node's; the client sends it
//! back on its next connection and resumes (TLS 1.3: a new key exchange, no certificate and
//! no signature; the signature is most of a full handshake's cost). By default a node
//! makes its own key (rustls' ticketer: random, rotated every six hours, the previous
//! still opens), so a client resumes only on the node that issued its ticket, and not after
//! a binary upgrade. `tls_ticket_keys:` in the node file names files of shared keys
//! instead, each 48 or 80 random bytes (nginx's `ssl_session_ticket_key` files: the first
//! 16 bytes name the key, the rest is its secret): every node given the same files seals
//! and opens the same tickets, so a client resumes on any node of the fleet. The first
//! file's key seals; every file's key opens. A rotation puts a new file first, keeps the
//! old one second for a ticket's lifetime, then drops it; a reload reads the files again.
//!
//! A ticket under a shared key (this format is Portico's, not nginx's): the key's name
//! (16 bytes), a random salt (16), then AES-256-GCM of its issue time (8: seconds since
//! the Unix epoch) and the session, and the tag (16). Each ticket is sealed under a key of
//! its own, derived from the file's secret and the salt (HKDF-SHA256), so no AES-GCM key
//! seals twice and the nonce can be fixed: a fleet seals more tickets under one file than
//! random 96-bit nonces allow (about 2³² a key). A ticket is refused once older than
//! [`LIFETIME`] (what clients are told too), so a stolen file opens no session older than
//! that; forward secrecy beyond it rests on rotating the files, as with nginx.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf::{Prk, Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long a ticket resumes its session: rustls' own ticketer's rotation period.
pub const LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// How far in the future another node's clock may date a ticket.
const CLOCK_SKEW_SECS: u64 = 300;

const NAME: usize = 16;
const SALT: usize = 16;
const ISSUED: usize = 8;
const TAG: usize = 16;
/// The clear part of a ticket: its key's name and its salt.
const CLEAR: usize = NAME + SALT;

/// Binds the keys derived from a file's secret to this use of it.
const EXTRACT_SALT: &[u8] = b"portico session ticket key v1";

/// Why a ticket key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} holds {}; a ticket key file holds 48 or 80 random bytes (make one with `openssl rand 80 > FILE`)",
        path.display(), size_text(*len)
    )]
    BadSize { path: PathBuf, len: usize },
    #[error("{} names the same key as {} (their first 16 bytes are equal)", path.display(), first.display())]
    SameName { path: PathBuf, first: PathBuf },
}

fn size_text(len: usize) -> String {
    match len {
        0 => "nothing".to_string(),
        1..=80 => format!("{len} bytes"),
        _ => "more than 80 bytes".to_string(),
    }
}

/// One shared key: its name (the file's first 16 bytes) and its secret, extracted.
struct SharedKey {
    name: [u8; NAME],
    secret: Prk,
}

impl SharedKey {
    fn load(path: &Path) -> Result<SharedKey, TicketKeyError> {
        let mut bytes = Vec::with_capacity(81);
        std::fs::File::open(path)
            .and_then(|file| file.take(81).read_to_end(&mut bytes))
            .map_err(|source| TicketKeyError::Unreadable {
                path: path.to_path_buf(),
                source,
            })?;
        if bytes.len() != 48 && bytes.len() != 80 {
            return Err(TicketKeyError::BadSize {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        let (name, secret) = bytes.split_at(NAME);
        Ok(SharedKey {
            name: name.try_into().unwrap_or_default(),
            secret: Salt::new(HKDF_SHA256, EXTRACT_SALT).extract(secret),
        })
    }

    /// The AES-256-GCM key of the ticket with this salt.
    fn ticket_key(&self, salt: &[u8]) -> Option<LessSafeKey> {
        let info = [salt];
        let okm = self.secret.expand(&info, &AES_256_GCM).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

/// Reads one key file as [`TicketKeys::load`] does: its key's name (the first 16 bytes),
/// or why it cannot be used.
pub fn key_name(path: &Path) -> Result<[u8; NAME], TicketKeyError> {
    SharedKey::load(path).map(|key| key.name)
}

/// Shared ticket keys, loaded from their files in the order given: the first seals.
pub struct TicketKeys(Vec<SharedKey>);

impl TicketKeys {
    /// Loads every file; `None` for none (the node then makes its own key).
    pub fn load(paths: &[PathBuf]) -> Result<Option<TicketKeys>, TicketKeyError> {
        let mut keys: Vec<SharedKey> = Vec::with_capacity(paths.len());
        for path in paths {
            let key = SharedKey::load(path)?;
            if let Some(first) = keys.iter().position(|k| k.name == key.name) {
                return Err(TicketKeyError::SameName {
                    path: path.clone(),
                    first: paths[first].clone(),
                });
            }
            keys.push(key);
        }
        Ok((!keys.is_empty()).then_some(TicketKeys(keys)))
    }

    fn seal(&self, session: &[u8], now: SystemTime) -> Option<Vec<u8>> {
        let key = self.0.first()?;
        let mut ticket = Vec::with_capacity(CLEAR + ISSUED + session.len() + TAG);
        ticket.extend_from_slice(&key.name);
        ticket.resize(CLEAR, 0);
        SystemRandom::new().fill(&mut ticket[NAME..]).ok()?;
        ticket.extend_from_slice(&unix_seconds(now).to_be_bytes());
        ticket.extend_from_slice(session);
        let sealing = key.ticket_key(&ticket[NAME..CLEAR])?;
        let (clear, sealed) = ticket.split_at_mut(CLEAR);
        let tag = sealing
            .seal_in_place_separate_tag(single_use_nonce(), Aad::from(&*clear), sealed)
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// The session in `ticket`, if one of these keys sealed it less than [`LIFETIME`] ago.
    fn open(&self, ticket: &[u8], now: SystemTime) -> Option<Vec<u8>> {
        if ticket.len() < CLEAR + ISSUED + TAG {
            return None;
        }
        let (clear, sealed) = ticket.split_at(CLEAR);
        let key = self.0.iter().find(|key| key.name == clear[..NAME])?;
        let opening = key.ticket_key(&clear[NAME..])?;
        let mut plain = sealed.to_vec();
        let len = opening
            .open_in_place(single_use_nonce(), Aad::from(clear), &mut plain)
            .ok()?
            .len();
        plain.truncate(len);
        let issued = u64::from_be_bytes(plain.get(..ISSUED)?.try_into().ok()?);
        let now = unix_seconds(now);
        if issued > now.saturating_add(CLOCK_SKEW_SECS)
            || now.saturating_sub(issued) > LIFETIME.as_secs()
        {
            return None;
        }
        plain.drain(..ISSUED);
        Some(plain)
    }
}

/// Each ticket key seals once (it is derived from a random salt), so one fixed nonce.
fn single_use_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0; 12])
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The node's ticketer, shared by its TLS listeners (a client resumes on any of them):
/// the shared keys while there are any, else its own. A reload replaces the shared keys.
pub struct Ticketer {
    /// rustls' ticketer: a random key of the node's, rotated every six hours (the previous
    /// one still opens). Kept for the node's life, so a reload that drops the shared keys
    /// returns to the same key.
    own: Arc<dyn ProducesTickets>,
    shared: ArcSwapOption<TicketKeys>,
}

impl Ticketer {
    /// Errs only if the system's random source does.
    pub fn new(keys: Option<TicketKeys>) -> Result<Ticketer, rustls::Error> {
        Ok(Ticketer {
            own: rustls::crypto::aws_lc_rs::Ticketer::new()?,
            shared: ArcSwapOption::new(keys.map(Arc::new)),
        })
    }

    /// Tickets are sealed under `keys` from now on (the node's own key when `None`).
    pub fn replace(&self, keys: Option<TicketKeys>) {
        self.shared.store(keys.map(Arc::new));
    }

    /// What `/status` shows (`configuration.tls_tickets`): the keys' kind, and for shared
    /// ones their count and the name of the one that seals, in hex (the name travels in
    /// clear in every ticket), so an operator can see a rotation reach every node.
    pub fn status(&self) -> serde_json::Value {
        match &*self.shared.load() {
            None => serde_json::json!({ "keys": "own" }),
            Some(keys) => serde_json::json!({
                "keys": "shared",
                "count": keys.0.len(),
                "sealing": keys.0.first().map(|key| hex(&key.name)),
            }),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Names the keys' kind and count, never their bytes.
impl fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.shared.load() {
            None => f.write_str("Ticketer(own rotating key)"),
            Some(keys) => write!(f, "Ticketer({} shared keys)", keys.0.len()),
        }
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        match &*self.shared.load() {
            None => self.own.lifetime(),
            Some(_) => LIFETIME.as_secs() as u32,
        }
    }

    fn encrypt(&self, session: &[u8]) -> Option<Vec<u8>> {
        match &*self.shared.load() {
            None => self.own.encrypt(session),
            Some(keys) => keys.seal(session, SystemTime::now()),
        }
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        match &*self.shared.load() {
            None => self.own.decrypt(ticket),
            Some(keys) => keys.open(ticket, SystemTime::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn random(len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        SystemRandom::new().fill(&mut bytes).unwrap();
        bytes
    }

    fn keys(paths: &[PathBuf]) -> TicketKeys {
        TicketKeys::load(paths).unwrap().unwrap()
    }

    #[test]
    fn a_ticket_opens_under_any_given_key_with_its_name_and_nowhere_else() {
        let dir = tempfile::tempdir().unwrap();
        let old = key_file(dir.path(), "old", &random(80));
        let new = key_file(dir.path(), "new", &random(48));
        let other = key_file(dir.path(), "other", &random(80));
        let now = SystemTime::now();
        let sealed_by_old = keys(std::slice::from_ref(&old))
            .seal(b"session", now)
            .unwrap();
        // A rotation: the new key seals, the old one still opens.
        let rotated = keys(&[new.clone(), old.clone()]);
        assert_eq!(rotated.open(&sealed_by_old, now).unwrap(), b"session");
        let sealed_by_new = rotated.seal(b"later", now).unwrap();
        assert_eq!(
            &sealed_by_new[..NAME],
            &std::fs::read(&new).unwrap()[..NAME]
        );
        assert_eq!(keys(&[new]).open(&sealed_by_new, now).unwrap(), b"later");
        assert_eq!(keys(&[old]).open(&sealed_by_new, now), None);
        assert_eq!(keys(&[other]).open(&sealed_by_old, now), None);
    }

    #[test]
    fn a_ticket_is_never_sealed_twice_alike_and_any_changed_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(&[key_file(dir.path(), "k", &random(80))]);
        let now = SystemTime::now();
        let ticket = keys.seal(b"session", now).unwrap();
        assert_eq!(ticket.len(), CLEAR + ISSUED + b"session".len() + TAG);
        assert_ne!(keys.seal(b"session", now).unwrap(), ticket);
        for at in 0..ticket.len() {
            let mut changed = ticket.clone();
            changed[at] ^= 1;
            assert_eq!(keys.open(&changed, now), None, "byte {at} changed");
        }
        for len in 0..ticket.len() {
            assert_eq!(keys.open(&ticket[..len], now), None, "cut to {len}");
        }
        assert_eq!(keys.open(&ticket, now).unwrap(), b"session");
    }

    #[test]
    fn a_ticket_older_than_its_lifetime_or_dated_ahead_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(&[key_file(dir.path(), "k", &random(80))]);
        let issued = SystemTime::now();
        let ticket = keys.seal(b"s", issued).unwrap();
        let last = issued + LIFETIME;
        assert_eq!(keys.open(&ticket, last).unwrap(), b"s");
        assert_eq!(keys.open(&ticket, last + Duration::from_secs(1)), None);
        let early = issued - Duration::from_secs(CLOCK_SKEW_SECS);
        assert_eq!(keys.open(&ticket, early).unwrap(), b"s");
        assert_eq!(keys.open(&ticket, early - Duration::from_secs(1)), None);
    }

    #[test]
    fn key_files_of_the_wrong_size_unreadable_or_named_alike_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (len, says) in [
            (0, "holds nothing"),
            (32, "holds 32 bytes"),
            (81, "holds more than 80 bytes"),
            (4096, "holds more than 80 bytes"),
        ] {
            let path = key_file(dir.path(), "bad", &random(len));
            let error = TicketKeys::load(&[path]).err().unwrap().to_string();
            assert!(
                error.contains(says) && error.contains("48 or 80"),
                "{error}"
            );
        }
        let missing = dir.path().join("missing");
        let error = TicketKeys::load(&[missing]).err().unwrap().to_string();
        assert!(
            error.starts_with("cannot read ") && error.contains("missing"),
            "{error}"
        );
        let bytes = random(80);
        let mut same_name = random(80);
        same_name[..NAME].copy_from_slice(&bytes[..NAME]);
        let first = key_file(dir.path(), "first", &bytes);
        let second = key_file(dir.path(), "second", &same_name);
        let error = TicketKeys::load(&[first, second])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("second names the same key as"), "{error}");
        assert!(TicketKeys::load(&[]).unwrap().is_none());
    }

    #[test]
    fn shared_keys_replace_the_nodes_own_and_a_reload_without_them_returns_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let ticketer = Ticketer::new(None).unwrap();
        let own = ticketer.encrypt(b"own").unwrap();
        assert_eq!(format!("{ticketer:?}"), "Ticketer(own rotating key)");
        let path = key_file(dir.path(), "k", &random(80));
        ticketer.replace(TicketKeys::load(std::slice::from_ref(&path)).unwrap());
        assert_eq!(format!("{ticketer:?}"), "Ticketer(1 shared keys)");
        let name = hex(&std::fs::read(&path).unwrap()[..NAME]);
        assert_eq!(
            ticketer.status(),
            serde_json::json!({"keys": "shared", "count": 1, "sealing": name})
        );
        assert_eq!(ticketer.lifetime(), LIFETIME.as_secs() as u32);
        assert_eq!(ticketer.decrypt(&own), None);
        let shared = ticketer.encrypt(b"shared").unwrap();
        assert_eq!(ticketer.decrypt(&shared).unwrap(), b"shared");
        ticketer.replace(None);
        assert_eq!(ticketer.status(), serde_json::json!({"keys": "own"}));
        assert_eq!(ticketer.decrypt(&own).unwrap(), b"own");
        assert_eq!(ticketer.decrypt(&shared), None);
    }
}
