//! The avatars a replica drew lately, in memory and bounded both in count and in
//! bytes (least recently used first out), keyed by their `ETag`, which names
//! everything that decides the bytes. Each replica keeps its own: an avatar is
//! cheap to draw again, so nothing is shared or written.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

/// Holds at most `max_entries` avatars (`NIMBUS_AVATAR_CACHE_ENTRIES`) and
/// `max_bytes` bytes (`NIMBUS_AVATAR_CACHE_BYTES`); an avatar over an eighth of the
/// bytes is not kept at all, so one large image cannot empty the cache.
pub struct AvatarCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

struct Inner {
    entries: LruCache<String, Arc<[u8]>>,
    bytes: usize,
}

impl AvatarCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        AvatarCache {
            inner: Mutex::new(Inner {
                entries: LruCache::new(NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN)),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.lock().entries.get(key).cloned()
    }

    pub fn put(&self, key: String, bytes: Arc<[u8]>) {
        if bytes.len() > self.max_bytes / 8 {
            return;
        }
        let mut inner = self.lock();
        let added = bytes.len();
        if let Some((_, old)) = inner.entries.push(key, bytes) {
            // The displaced entry: the least recently used, or the same key's old bytes.
            inner.bytes -= old.len();
        }
        inner.bytes += added;
        while inner.bytes > self.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, old)) => inner.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Entries and bytes held.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Arc<[u8]> {
        vec![0u8; n].into()
    }

    #[test]
    fn keeps_within_its_count_and_bytes() {
        let cache = AvatarCache::new(3, 800);
        for i in 0..5 {
            cache.put(format!("k{i}"), bytes(10));
        }
        assert_eq!(cache.usage(), (3, 30));
        assert!(cache.get("k0").is_none() && cache.get("k4").is_some());
        cache.put("big".into(), bytes(101));
        assert!(cache.get("big").is_none(), "over an eighth is not kept");
        cache.put("k2".into(), bytes(90));
        assert_eq!(cache.usage(), (3, 110), "a key put again counts once");
        for i in 0..10 {
            cache.put(format!("m{i}"), bytes(100));
        }
        let (count, held) = cache.usage();
        assert!(count <= 3 && held <= 800, "{count} {held}");
    }
}
