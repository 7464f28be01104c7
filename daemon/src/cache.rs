//! The token cache: the fast path of every request.
//!
//! Tokens belong to the credential that minted them: a moka cache of
//! [`CachedToken`]s keyed by credential identity + tenant + scopes, each entry
//! expiring with its token, so every chain whose walk ends at that credential
//! (however the client spelled its chain) is served the same token. A second,
//! small map remembers which credential each chain's last walk ended at
//! (chain fingerprint -> [`CredentialId`]), so a hit is two map reads: no
//! chain walk, no actor hop, no lock. A connection that asks again for what
//! it was just served skips both reads ([`HitMemo`]) while nothing in the
//! cache has changed since. (One resolution per chain, not per
//! request: a request its chain's credential cannot serve, say two scopes
//! for `az`, walks again instead of costing every cached key a second entry.) Misses go through moka's `try_get_with`, so concurrent misses for one
//! credential's key run exactly one acquisition and all wait for its result
//! (errors included, which are not cached). Refresh is *not* driven from here:
//! the credential actor that minted a token re-inserts its successor.

use std::sync::atomic::{
    AtomicI64, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azbroker_proto::{CredentialKind, Secret};
use moka::future::Cache;
use moka::ops::compute::Op;
use moka::Expiry;

use crate::clock;
use crate::identity::CredentialId;

/// What a request asks for: the token's tenant and scopes. Shared (one
/// allocation per request) by the keys built from it, so a hit copies no
/// string and a cached key costs its strings once.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub tenant: Option<String>,
    /// Normalized, sorted, deduplicated.
    pub scopes: Vec<String>,
}

/// Which token: the credential that mints it, for which tenant and scopes.
/// Claims requests bypass the cache, so claims are not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub credential: CredentialId,
    pub target: Arc<Target>,
}

/// How long a chain's resolution is kept unused: longer than any token lives,
/// so it only goes when nobody has asked through that chain for a while.
const RESOLUTION_IDLE: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug)]
pub struct CachedToken {
    pub access_token: Secret,
    pub expires_on: i64,
    pub refresh_on: i64,
    pub tenant: Option<Arc<str>>,
    pub credential: CredentialKind,
    pub credential_id: CredentialId,
    pub minted_at_ms: i64,
    pub hits: AtomicU64,
    /// Last time a client asked for this key (epoch ms); drives "used recently".
    pub last_used_ms: AtomicI64,
}

impl CachedToken {
    /// Whether it stays valid for at least `min_validity` seconds from now.
    pub fn valid_for(&self, min_validity: i64) -> bool {
        self.expires_on - clock::now_secs() >= min_validity
    }

    /// Whether a client asked for it since it was minted (the refresh criterion).
    pub fn used_since_minted(&self) -> bool {
        self.last_used_ms.load(Relaxed) >= self.minted_at_ms
    }

    /// Records a use. Every hit on a key touches the same token, from every
    /// worker thread: storing only when the recorded use is older than a
    /// second (or older than the token) keeps its cache line from bouncing
    /// between cores on each request.
    fn touch(&self) {
        let now = clock::now_millis();
        let last = self.last_used_ms.load(Relaxed);
        if last < self.minted_at_ms || now - last >= 1000 {
            self.last_used_ms.store(now, Relaxed);
        }
    }
}

struct UntilExpiry;

impl Expiry<CacheKey, Arc<CachedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &CacheKey,
        token: &Arc<CachedToken>,
        _: Instant,
    ) -> Option<Duration> {
        Some(clock::until(token.expires_on))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        token: &Arc<CachedToken>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(clock::until(token.expires_on))
    }
}

#[derive(Clone)]
pub struct TokenCache {
    inner: Cache<CacheKey, Arc<CachedToken>>,
    /// Which credential each chain (fingerprint) last resolved to.
    resolved: Cache<u128, CredentialId>,
    /// Bumped after every change of an entry or a resolution (not when a
    /// token merely runs out: whoever serves a token checks its validity).
    generation: Arc<AtomicU64>,
}

/// How many targets a [`HitMemo`] remembers: a client asks for a few scopes.
const MEMO_TARGETS: usize = 4;

/// What one connection was last served, per target, and the cache's
/// generation then. Owned by the connection's task: no lock.
#[derive(Default)]
pub struct HitMemo {
    generation: u64,
    served: Vec<(Arc<Target>, Arc<CachedToken>)>,
}

impl TokenCache {
    pub fn new(max_entries: u64) -> Self {
        TokenCache {
            inner: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExpiry)
                .build(),
            resolved: Cache::builder()
                .max_capacity(max_entries)
                .time_to_idle(RESOLUTION_IDLE)
                .build(),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Called after every change, never before: a reader that saw the new
    /// generation also sees the change.
    fn changed(&self) {
        self.generation.fetch_add(1, Release);
    }

    /// [`TokenCache::lookup`] for a connection that keeps `memo`: a target it
    /// was served before, with no change in the cache since, is answered from
    /// the memo without reading either map. (A token moka evicted for room
    /// may still be served from a memo while it is valid: it is no less a
    /// token of this credential.)
    pub async fn lookup_remembered(
        &self,
        memo: &mut HitMemo,
        chain: u128,
        target: &Arc<Target>,
        min_validity: i64,
    ) -> Option<Arc<CachedToken>> {
        // Read before the maps: a change after this read bumps past it.
        let generation = self.generation.load(Acquire);
        if memo.generation != generation {
            memo.served.clear();
            memo.generation = generation;
        }
        let remembered = memo.served.iter().find(|(seen, _)| **seen == **target);
        if let Some((_, token)) = remembered {
            // The maps hold this very token: nothing changed since.
            return token.valid_for(min_validity).then(|| {
                token.hits.fetch_add(1, Relaxed);
                token.touch();
                token.clone()
            });
        }
        let token = self.lookup(chain, target, min_validity).await?;
        if memo.served.len() == MEMO_TARGETS {
            memo.served.remove(0);
        }
        memo.served.push((target.clone(), token.clone()));
        Some(token)
    }

    /// The fast path of a request: the credential its chain resolved to last
    /// time, then that credential's token if it is still valid for
    /// `min_validity` seconds.
    pub async fn lookup(
        &self,
        chain: u128,
        target: &Arc<Target>,
        min_validity: i64,
    ) -> Option<Arc<CachedToken>> {
        let credential = self.resolved.get(&chain).await?;
        let key = CacheKey {
            credential,
            target: target.clone(),
        };
        self.get_fresh(&key, min_validity).await
    }

    /// Remembers that `chain` resolved to `credential` (a write only when it changed).
    pub async fn note_resolution(&self, chain: u128, credential: &CredentialId) {
        if self.resolved.get(&chain).await.as_ref() != Some(credential) {
            self.resolved.insert(chain, credential.clone()).await;
            self.changed();
        }
    }

    /// Forgets `chain`'s resolution: no credential of it served.
    pub async fn forget_resolution(&self, chain: u128) {
        self.resolved.invalidate(&chain).await;
        self.changed();
    }

    /// The credential `chain` resolved to, if any.
    pub async fn resolution(&self, chain: u128) -> Option<CredentialId> {
        self.resolved.get(&chain).await
    }

    /// The fast path: a cached token still valid for `min_validity` seconds.
    pub async fn get_fresh(&self, key: &CacheKey, min_validity: i64) -> Option<Arc<CachedToken>> {
        let token = self.inner.get(key).await?;
        if !token.valid_for(min_validity) {
            return None;
        }
        token.hits.fetch_add(1, Relaxed);
        token.touch();
        Some(token)
    }

    /// The slow path: one `acquire` per key however many callers wait on it.
    /// A cached token too short-lived for this caller is dropped first, so the
    /// acquisition replaces it. If the acquisition fails while that token is
    /// still valid for `fallback_validity` seconds, it is put back and given
    /// to every waiter instead of the error (as the Azure SDKs' bearer-token
    /// policy keeps using a token it failed to refresh); callers tell it from
    /// a new one by its `minted_at_ms`.
    pub async fn get_or_acquire<F, E>(
        &self,
        key: CacheKey,
        min_validity: i64,
        fallback_validity: Option<i64>,
        acquire: F,
    ) -> Result<Arc<CachedToken>, Arc<E>>
    where
        F: std::future::Future<Output = Result<Arc<CachedToken>, E>>,
        E: Send + Sync + 'static,
    {
        let mut fallback = None;
        if let Some(stale) = self.inner.get(&key).await {
            if stale.valid_for(min_validity) {
                stale.hits.fetch_add(1, Relaxed);
                stale.touch();
                return Ok(stale);
            }
            if fallback_validity.is_some() {
                fallback = Some(stale.clone());
            }
            // Remove only that very entry: another caller may have replaced it already.
            self.inner
                .entry(key.clone())
                .and_compute_with(|current| async move {
                    match current {
                        Some(entry) if Arc::ptr_eq(entry.value(), &stale) => Op::Remove,
                        _ => Op::Nop,
                    }
                })
                .await;
            self.changed();
        }
        let acquire = async move {
            match acquire.await {
                Ok(token) => Ok(token),
                Err(error) => match (fallback, fallback_validity) {
                    (Some(old), Some(floor)) if old.valid_for(floor) => {
                        // The actor logged the failure's reason.
                        tracing::warn!(credential = %old.credential_id, expires_on = old.expires_on, "acquisition failed; serving the cached token, still valid");
                        Ok(old)
                    }
                    _ => Err(error),
                },
            }
        };
        let token = self.inner.try_get_with(key, acquire).await;
        self.changed();
        let token = token?;
        token.touch();
        Ok(token)
    }

    /// Stores a token a credential actor minted for `key`. The client's
    /// `get_or_acquire` that asked for it stores the same entry when it gets
    /// its answer.
    pub async fn insert(&self, key: CacheKey, token: Arc<CachedToken>) {
        self.inner.insert(key, token).await;
        self.changed();
    }

    /// Puts `token` in place of `expected` if `expected` is still the entry:
    /// a refresh must not bring back a key that was invalidated (or replaced)
    /// while it ran. Returns whether it did.
    pub async fn replace(
        &self,
        key: &CacheKey,
        expected: &Arc<CachedToken>,
        token: Arc<CachedToken>,
    ) -> bool {
        let result = self
            .inner
            .entry(key.clone())
            .and_compute_with(|current| async move {
                match current {
                    Some(entry) if Arc::ptr_eq(entry.value(), expected) => Op::Put(token),
                    _ => Op::Nop,
                }
            })
            .await;
        self.changed();
        matches!(result, moka::ops::compute::CompResult::ReplacedWith(_))
    }

    /// The current entry, without counting a use.
    pub async fn peek(&self, key: &CacheKey) -> Option<Arc<CachedToken>> {
        self.inner.get(key).await
    }

    /// Drops the entries whose scopes equal `scopes` (all when empty) and
    /// whose credential is of one of `kinds` (any when empty); returns how many.
    pub async fn invalidate(&self, scopes: &[String], kinds: &[CredentialKind]) -> u64 {
        self.invalidate_where(|key| {
            (scopes.is_empty() || key.target.scopes == scopes)
                && (kinds.is_empty() || kinds.contains(&key.credential.kind))
        })
        .await
    }

    /// Drops every entry minted by any of `credentials` (a logout, a changed
    /// tool login), and the chains' resolutions to them; returns how many tokens.
    pub async fn invalidate_credentials(&self, credentials: &[CredentialId]) -> u64 {
        let doomed: Vec<Arc<u128>> = self
            .resolved
            .iter()
            .filter(|(_, credential)| credentials.contains(credential))
            .map(|(chain, _)| chain)
            .collect();
        for chain in &doomed {
            self.resolved.invalidate(chain.as_ref()).await;
        }
        self.changed();
        self.invalidate_where(|key| credentials.contains(&key.credential))
            .await
    }

    async fn invalidate_where(&self, doomed: impl Fn(&CacheKey) -> bool) -> u64 {
        let doomed: Vec<Arc<CacheKey>> = self
            .inner
            .iter()
            .filter(|(key, _)| doomed(key))
            .map(|(key, _)| key)
            .collect();
        for key in &doomed {
            self.inner.invalidate(key.as_ref()).await;
        }
        self.changed();
        doomed.len() as u64
    }

    /// Every live entry, for status.
    pub fn entries(&self) -> Vec<(Arc<CacheKey>, Arc<CachedToken>)> {
        let now = clock::now_secs();
        self.inner
            .iter()
            .filter(|(_, token)| token.expires_on > now)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::{CredentialSpec, ErrorKind, ToolSpec, WireError};
    use std::sync::atomic::AtomicUsize;

    fn az() -> CredentialId {
        CredentialId::of(&CredentialSpec::AzureCli(ToolSpec::default()), "h")
    }

    fn key(scope: &str) -> CacheKey {
        CacheKey {
            credential: az(),
            target: Arc::new(Target {
                tenant: None,
                scopes: vec![scope.to_string()],
            }),
        }
    }

    fn token(lifetime: i64) -> Arc<CachedToken> {
        let now = clock::now_secs();
        Arc::new(CachedToken {
            access_token: Secret::new(format!("tok-{}", clock::now_millis())),
            expires_on: now + lifetime,
            refresh_on: now + lifetime / 2,
            tenant: None,
            credential: CredentialKind::AzureCli,
            credential_id: az(),
            minted_at_ms: clock::now_millis(),
            hits: AtomicU64::new(0),
            last_used_ms: AtomicI64::new(0),
        })
    }

    #[tokio::test]
    async fn concurrent_misses_acquire_once() {
        let cache = TokenCache::new(100);
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let cache = cache.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_acquire(key("a"), 300, None, async move {
                        calls.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, WireError>(token(3600))
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.push(task.await.unwrap());
        }
        assert_eq!(calls.load(Relaxed), 1);
        assert!(tokens.iter().all(|t| Arc::ptr_eq(t, &tokens[0])));
        assert!(cache.get_fresh(&key("a"), 300).await.is_some());
    }

    #[tokio::test]
    async fn errors_reach_every_waiter_and_are_not_cached() {
        let cache = TokenCache::new(100);
        let err = cache
            .get_or_acquire(key("a"), 300, None, async {
                Err(WireError::new(ErrorKind::CredentialUnavailable, "nope"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.message, "nope");
        assert!(cache.peek(&key("a")).await.is_none());
        let ok = cache
            .get_or_acquire(key("a"), 300, None, async {
                Ok::<_, WireError>(token(3600))
            })
            .await;
        assert!(ok.is_ok());
    }

    #[tokio::test]
    async fn too_short_lived_tokens_are_not_served_and_get_replaced() {
        let cache = TokenCache::new(100);
        cache.insert(key("a"), token(200)).await;
        assert!(cache.get_fresh(&key("a"), 300).await.is_none());
        assert!(cache.get_fresh(&key("a"), 100).await.is_some());
        let fresh = cache
            .get_or_acquire(key("a"), 300, None, async {
                Ok::<_, WireError>(token(3600))
            })
            .await
            .unwrap();
        assert!(fresh.valid_for(3000));
        assert!(Arc::ptr_eq(&cache.peek(&key("a")).await.unwrap(), &fresh));
    }

    /// Expiry is judged on `clock`, which tests run on tokio's clock: a paused
    /// runtime moves it only by `advance`, and moves it for expiry too.
    #[tokio::test(start_paused = true)]
    async fn an_entry_past_its_expiry_is_not_served_on_paused_time() {
        let cache = TokenCache::new(100);
        let t = token(3600);
        cache.insert(key("a"), t.clone()).await;
        tokio::time::advance(Duration::from_secs(3599)).await;
        // One second left: served to a caller content with that, not under the floor.
        assert!(Arc::ptr_eq(
            &cache.get_fresh(&key("a"), 0).await.unwrap(),
            &t
        ));
        assert!(cache.get_fresh(&key("a"), 300).await.is_none());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(cache.get_fresh(&key("a"), 0).await.is_none());
        assert!(cache.entries().is_empty());
        assert_eq!(t.hits.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn hits_and_use_are_recorded() {
        let cache = TokenCache::new(100);
        let t = token(3600);
        cache.insert(key("a"), t.clone()).await;
        assert!(!t.used_since_minted());
        cache.get_fresh(&key("a"), 300).await.unwrap();
        cache.get_fresh(&key("a"), 300).await.unwrap();
        assert_eq!(t.hits.load(Relaxed), 2);
        assert!(t.used_since_minted());
    }

    #[tokio::test]
    async fn invalidate_by_scope_or_all() {
        let cache = TokenCache::new(100);
        cache.insert(key("a"), token(3600)).await;
        cache.insert(key("b"), token(3600)).await;
        assert_eq!(cache.invalidate(&["a".to_string()], &[]).await, 1);
        assert!(cache.peek(&key("a")).await.is_none());
        assert_eq!(cache.invalidate(&[], &[]).await, 1);
        assert!(cache.entries().is_empty());
    }

    #[tokio::test]
    async fn a_refresh_does_not_bring_back_an_invalidated_key() {
        let cache = TokenCache::new(100);
        let old = token(3600);
        cache.insert(key("a"), old.clone()).await;
        // The refresh started from `old`; an Invalidate lands before it finishes.
        assert_eq!(cache.invalidate(&[], &[]).await, 1);
        assert!(!cache.replace(&key("a"), &old, token(3600)).await);
        assert!(cache.peek(&key("a")).await.is_none());
        assert!(cache.entries().is_empty());
    }

    #[tokio::test]
    async fn a_refresh_replaces_only_the_token_it_started_from() {
        let cache = TokenCache::new(100);
        let old = token(3600);
        cache.insert(key("a"), old.clone()).await;
        let newer = token(3600);
        cache.insert(key("a"), newer.clone()).await;
        assert!(!cache.replace(&key("a"), &old, token(3600)).await);
        assert!(Arc::ptr_eq(&cache.peek(&key("a")).await.unwrap(), &newer));
        let successor = token(3600);
        assert!(cache.replace(&key("a"), &newer, successor.clone()).await);
        assert!(Arc::ptr_eq(
            &cache.peek(&key("a")).await.unwrap(),
            &successor
        ));
    }

    #[tokio::test]
    async fn a_failed_acquisition_falls_back_to_a_still_valid_token() {
        let cache = TokenCache::new(100);
        let old = token(200);
        cache.insert(key("a"), old.clone()).await;
        let failing = || async { Err(WireError::new(ErrorKind::AuthenticationFailed, "429")) };
        // Under the 300 s floor, but valid for the 60 s fallback: served, and kept.
        let served = cache
            .get_or_acquire(key("a"), 300, Some(60), failing())
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&served, &old));
        assert!(Arc::ptr_eq(&cache.peek(&key("a")).await.unwrap(), &old));
        // No fallback allowed (the caller asked for more than it has): the error.
        let err = cache
            .get_or_acquire(key("a"), 300, None, failing())
            .await
            .unwrap_err();
        assert_eq!(err.message, "429");
        // Not valid for the fallback's floor either: the error.
        cache.insert(key("a"), token(30)).await;
        assert!(cache
            .get_or_acquire(key("a"), 300, Some(60), failing())
            .await
            .is_err());
    }

    /// A chain, resolved to [`az`] where a test says so.
    const CHAIN: u128 = 7;

    async fn remembered(
        cache: &TokenCache,
        memo: &mut HitMemo,
        scope: &str,
        min_validity: i64,
    ) -> Option<Arc<CachedToken>> {
        cache
            .lookup_remembered(memo, CHAIN, &key(scope).target, min_validity)
            .await
    }

    #[tokio::test]
    async fn a_memo_serves_what_the_maps_would_and_forgets_on_every_change() {
        let cache = TokenCache::new(100);
        let mut memo = HitMemo::default();
        let first = token(3600);
        cache.insert(key("a"), first.clone()).await;
        // The chain has not resolved yet: a miss.
        assert!(remembered(&cache, &mut memo, "a", 300).await.is_none());
        cache.note_resolution(CHAIN, &az()).await;
        for _ in 0..2 {
            let served = remembered(&cache, &mut memo, "a", 300).await.unwrap();
            assert!(Arc::ptr_eq(&served, &first));
        }
        assert_eq!(first.hits.load(Relaxed), 2);
        assert!(first.used_since_minted());
        // Too short-lived for this asker: a miss, as from the maps.
        assert!(remembered(&cache, &mut memo, "a", 4000).await.is_none());

        // A refresh's successor is served at once.
        let successor = token(3600);
        assert!(cache.replace(&key("a"), &first, successor.clone()).await);
        let served = remembered(&cache, &mut memo, "a", 300).await.unwrap();
        assert!(Arc::ptr_eq(&served, &successor));
        // An invalidation is not outlived...
        cache.invalidate(&[], &[]).await;
        assert!(remembered(&cache, &mut memo, "a", 300).await.is_none());
        // ...nor a forgotten resolution...
        cache.insert(key("a"), token(3600)).await;
        assert!(remembered(&cache, &mut memo, "a", 300).await.is_some());
        cache.forget_resolution(CHAIN).await;
        assert!(remembered(&cache, &mut memo, "a", 300).await.is_none());
        // ...nor a logout of the credential.
        cache.note_resolution(CHAIN, &az()).await;
        assert!(remembered(&cache, &mut memo, "a", 300).await.is_some());
        assert_eq!(cache.invalidate_credentials(&[az()]).await, 1);
        assert!(remembered(&cache, &mut memo, "a", 300).await.is_none());
    }

    #[tokio::test]
    async fn a_memo_keeps_the_last_few_targets() {
        let cache = TokenCache::new(100);
        let mut memo = HitMemo::default();
        let scopes = ["a", "b", "c", "d", "e"];
        for scope in scopes {
            cache.insert(key(scope), token(3600)).await;
        }
        cache.note_resolution(CHAIN, &az()).await;
        for scope in scopes {
            assert!(remembered(&cache, &mut memo, scope, 300).await.is_some());
        }
        let kept: Vec<&str> = memo
            .served
            .iter()
            .map(|(target, _)| target.scopes[0].as_str())
            .collect();
        assert_eq!(kept, ["b", "c", "d", "e"]);
        // The one it let go is still served, from the maps.
        assert!(remembered(&cache, &mut memo, "a", 300).await.is_some());
    }
}
