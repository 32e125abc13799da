//! API keys: the identity that scopes and rate limits attach to.
//!
//! A key reads `ak_3f9a1c2e_<43 characters>`. The first part is its prefix:
//! public, unique, safe to log and to name the key by. Postgres stores only
//! the SHA-256 of the whole key. A fast hash is the right one here: the keys
//! are 256 random bits, so there is nothing for a slow hash to protect, and
//! the hash runs on every request.
//!
//! Lookups cost no Postgres round trip: each replica holds a snapshot of
//! every active key ([`KeyRing`]) and polls a one-row version table, which
//! every change to `api_keys` bumps in the same transaction. A revocation
//! therefore takes effect on every replica within `API_KEY_REFRESH`.

pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ratelimit::Rate;

/// The start of every key.
const KEY_START: &str = "ak_";

/// The scopes a new key gets unless told otherwise.
{% if worker %}pub const DEFAULT_SCOPES: &str = "items:read,items:write,jobs:read,jobs:write";
{% endif %}{% unless worker %}pub const DEFAULT_SCOPES: &str = "items:read,items:write";
{% endunless %}
/// An active key, as a replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Row id; rate limits are kept per id.
    pub id: Uuid,
    /// The public start of the key, such as `ak_3f9a1c2e`.
    pub prefix: String,
    /// What the key is for.
    pub name: String,
    /// What it may do, such as `items:write`.
    pub scopes: Vec<String>,
    /// Its own rate for the `key` policy, if it has one.
    pub rate: Option<Rate>,
}

impl ApiKey {
    /// Whether the key holds `scope`.
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// A freshly generated key: the only moment the plain key exists.
#[derive(Debug)]
pub struct NewKey {
    /// The key to hand to the client.
    pub plain: String,
    /// Its public prefix.
    pub prefix: String,
    /// What is stored.
    pub hash: [u8; 32],
}

/// Makes a new random key.
pub fn generate() -> NewKey {
    let mut rng = rand::rng();
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let prefix = format!("{KEY_START}{:08x}", u32::from_be_bytes(id));
    let plain = format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&plain);
    NewKey { plain, prefix, hash }
}

/// The stored form of a key.
pub fn hash(plain: &str) -> [u8; 32] {
    Sha256::digest(plain.as_bytes()).into()
}

/// The prefix of a presented key, for logs, if it looks like one of ours.
pub fn prefix_of(plain: &str) -> Option<&str> {
    let end = KEY_START.len() + 8;
    (plain.starts_with(KEY_START) && plain.len() > end && plain.as_bytes()[end] == b'_')
        .then(|| &plain[..end])
}

/// Checks the inputs of `keys create`; every problem is reported.
pub fn validate_new(
    name: &str,
    scopes: &str,
    rate: Option<&str>,
) -> anyhow::Result<(Vec<String>, Option<Rate>)> {
    let mut problems = Vec::new();
    if name.trim().is_empty() || name.chars().count() > 100 {
        problems.push("--name must be 1 to 100 characters".to_owned());
    }
    let scopes: Vec<String> =
        scopes.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if scopes.is_empty() {
        problems.push("--scopes must name at least one scope, such as items:read".to_owned());
    }
    for scope in &scopes {
        let valid = scope.split_once(':').is_some_and(|(resource, access)| {
            !resource.is_empty()
                && resource.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && matches!(access, "read" | "write")
        });
        if !valid {
            problems.push(format!("scope {scope:?} is not RESOURCE:read or RESOURCE:write"));
        }
    }
    let rate = match rate.map(Rate::parse).transpose() {
        Ok(rate) => rate,
        Err(err) => {
            problems.push(format!("--rate: {err}"));
            None
        }
    };
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok((scopes, rate))
}

/// The keys a replica accepts, refreshed in the background.
#[derive(Debug, Default)]
pub struct KeyRing {
    snapshot: RwLock<Arc<Snapshot>>,
}

#[derive(Debug, Default)]
struct Snapshot {
    /// The `api_keys_version` this snapshot reflects; `None` before the
    /// first successful load.
    version: Option<i64>,
    keys: HashMap<[u8; 32], Arc<ApiKey>>,
}

/// The result of looking a key up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// An active key.
    Found(Arc<ApiKey>),
    /// Not a key, or a revoked one.
    Unknown,
    /// The replica has not loaded the keys yet (Postgres unreachable since
    /// start): the caller cannot be told the key is wrong.
    NotLoaded,
}

impl KeyRing {
    /// Loads the keys once (bounded), then keeps them fresh every `every`
    /// until the ring is dropped.
    pub async fn start(db: PgPool, every: Duration) -> Arc<Self> {
        let ring = Arc::new(Self::default());
        // The first load is best effort: a replica must start while Postgres
        // is down, and then answers keyed requests 503 until it loads.
        if let Ok(Err(err)) = tokio::time::timeout(Duration::from_secs(2), ring.refresh(&db)).await {
            tracing::warn!(error = %telemetry::chain(&err), "could not load API keys yet");
        }
        tokio::spawn(refresh_forever(Arc::downgrade(&ring), db, every));
        ring
    }

    /// Finds the key a client presented. No I/O.
    pub fn lookup(&self, plain: &str) -> KeyLookup {
        let snapshot = self.snapshot.read().unwrap_or_else(PoisonError::into_inner).clone();
        if snapshot.version.is_none() {
            return KeyLookup::NotLoaded;
        }
        snapshot.keys.get(&hash(plain)).map_or(KeyLookup::Unknown, |key| KeyLookup::Found(key.clone()))
    }

    /// Reloads the keys if they changed since the last load.
    pub async fn refresh(&self, db: &PgPool) -> sqlx::Result<()> {
        let known = self.snapshot.read().unwrap_or_else(PoisonError::into_inner).version;
        let current = store::version(db).await?;
        if known == Some(current) {
            return Ok(());
        }
        let (version, rows) = store::active(db).await?;
        let keys = rows
            .into_iter()
            .map(|row| {
                let rate = row.rate.as_deref().and_then(|raw| {
                    Rate::parse(raw)
                        .inspect_err(|err| {
                            tracing::warn!(key = row.prefix, error = err, "ignoring the key's rate");
                        })
                        .ok()
                });
                let key = ApiKey { id: row.id, prefix: row.prefix, name: row.name, scopes: row.scopes, rate };
                (row.secret_hash, Arc::new(key))
            })
            .collect::<HashMap<_, _>>();
        tracing::info!(keys = keys.len(), version, "API keys loaded");
        *self.snapshot.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(Snapshot { version: Some(version), keys });
        Ok(())
    }
}

async fn refresh_forever(ring: Weak<KeyRing>, db: PgPool, every: Duration) {
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        let Some(ring) = ring.upgrade() else { return };
        match ring.refresh(&db).await {
            Ok(()) => failing = false,
            // Keep serving the last snapshot; say so once per outage.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %telemetry::chain(&err), "cannot refresh API keys; using the last snapshot");
            }
            Err(_) => {}
        }
    }
}

/// `api keys create`: stores a new key and returns it with its plain text.
pub async fn create(
    db: &PgPool,
    name: &str,
    scopes: &str,
    rate: Option<&str>,
) -> anyhow::Result<(ApiKey, String)> {
    let (scopes, rate) = validate_new(name, scopes, rate)?;
    let new = generate();
    let id = Uuid::now_v7();
    store::insert(db, id, &new, name.trim(), &scopes, rate.map(|r| r.to_string()).as_deref())
        .await
        .context("storing the key")?;
    let key = ApiKey { id, prefix: new.prefix, name: name.trim().to_owned(), scopes, rate };
    Ok((key, new.plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_stored_only_as_a_hash() {
        let a = generate();
        let b = generate();
        assert_ne!(a.plain, b.plain);
        assert_eq!(prefix_of(&a.plain), Some(a.prefix.as_str()));
        assert_eq!(a.hash, hash(&a.plain));
        assert_eq!(a.plain.len(), "ak_".len() + 8 + 1 + 43);
        assert_eq!(prefix_of("Bearer nonsense"), None);
    }

    #[test]
    fn new_key_inputs_are_checked_together() {
        let err = validate_new("", "items:delete,Items:read", Some("fast")).expect_err("invalid");
        let text = err.to_string();
        for part in ["--name", "items:delete", "Items:read", "--rate"] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        let (scopes, rate) = validate_new("ci", DEFAULT_SCOPES, Some("5/1s")).expect("valid");
        assert_eq!(scopes, DEFAULT_SCOPES.split(',').collect::<Vec<_>>());
        assert_eq!(rate.map(|r| r.quota), Some(5));
    }

    #[test]
    fn an_unloaded_ring_says_so_rather_than_refusing_keys() {
        assert_eq!(KeyRing::default().lookup("ak_00000000_x"), KeyLookup::NotLoaded);
    }
}
