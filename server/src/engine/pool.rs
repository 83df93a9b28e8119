//! Which documents keep a warm KV cache: an LRU over document keys bounded by a count and a memory budget.
//! The pool only decides; the caller owns the sessions and drops the ones it is told to evict.

use std::collections::VecDeque;

/// LRU bookkeeping for warm sessions.
#[derive(Debug, Clone)]
pub struct WarmPool<K: PartialEq + Clone> {
    max_docs: usize,
    max_bytes: usize,
    /// Most recently used last: (key, bytes).
    order: VecDeque<(K, usize)>,
}

impl<K: PartialEq + Clone> WarmPool<K> {
    pub fn new(max_docs: usize, max_bytes: usize) -> Self {
        WarmPool { max_docs: max_docs.max(1), max_bytes, order: VecDeque::new() }
    }

    /// From the engine settings (`max_warm_documents`, `max_cache_mib`).
    pub fn from_config(c: &super::EngineConfig) -> Self {
        Self::new(c.max_warm_documents, c.max_cache_mib.saturating_mul(1 << 20))
    }

    /// Mark `key` used with its current size; returns the keys to evict (least recently used first). The key just
    /// touched is never evicted, even if it alone exceeds the budget.
    pub fn touch(&mut self, key: &K, bytes: usize) -> Vec<K> {
        self.order.retain(|(k, _)| k != key);
        self.order.push_back((key.clone(), bytes));
        let mut evicted = Vec::new();
        while self.order.len() > 1 && (self.order.len() > self.max_docs || self.total_bytes() > self.max_bytes) {
            if let Some((k, _)) = self.order.pop_front() {
                evicted.push(k);
            }
        }
        evicted
    }

    /// Before `key` gets a new session: the keys to evict (least recently used first) so that it fits the count,
    /// so that the new cache is never built beside a full pool. (Its size is not known yet: `touch` enforces the
    /// byte budget once it is.) `key` itself leaves the pool; `touch` puts it back.
    pub fn make_room(&mut self, key: &K) -> Vec<K> {
        self.order.retain(|(k, _)| k != key);
        let mut evicted = Vec::new();
        while self.order.len() >= self.max_docs {
            if let Some((k, _)) = self.order.pop_front() {
                evicted.push(k);
            }
        }
        evicted
    }

    pub fn remove(&mut self, key: &K) {
        self.order.retain(|(k, _)| k != key);
    }

    pub fn contains(&self, key: &K) -> bool {
        self.order.iter().any(|(k, _)| k == key)
    }

    pub fn total_bytes(&self) -> usize {
        self.order.iter().map(|(_, b)| b).sum()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_lru_by_count_and_bytes() {
        let mut p = WarmPool::new(2, 100);
        assert!(p.touch(&"a", 10).is_empty());
        assert!(p.touch(&"b", 10).is_empty());
        assert!(p.touch(&"a", 10).is_empty());
        assert_eq!(p.touch(&"c", 10), vec!["b"]);
        assert_eq!(p.touch(&"d", 95), vec!["a", "c"]);
        assert!(p.contains(&"d"));
        assert_eq!(p.touch(&"d", 500), Vec::<&str>::new());
    }

    #[test]
    fn makes_room_before_a_new_cache_is_built() {
        let mut p = WarmPool::new(2, 1000);
        assert!(p.make_room(&"a").is_empty());
        p.touch(&"a", 10);
        p.touch(&"b", 10);
        // Reopening a key already warm frees its own slot only.
        assert!(p.make_room(&"b").is_empty());
        p.touch(&"b", 10);
        assert_eq!(p.make_room(&"c"), vec!["a"]);
        assert_eq!(p.len(), 1);
        assert!(p.touch(&"c", 10).is_empty());
    }
}
