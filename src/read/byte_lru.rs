//! A byte-budgeted LRU of byte strings.

use bytes::Bytes;
use lru::LruCache;

/// Byte strings by key within a byte budget, least recently used first out.
pub struct ByteLru<K: std::hash::Hash + Eq> {
    lru: LruCache<K, Bytes>,
    bytes: usize,
    budget: usize,
}

impl<K: std::hash::Hash + Eq> ByteLru<K> {
    /// An empty cache that holds up to `budget` bytes.
    pub fn new(budget: usize) -> Self {
        ByteLru {
            lru: LruCache::unbounded(),
            bytes: 0,
            budget,
        }
    }

    /// The value for `key`, marked as recently used.
    pub fn get(&mut self, key: &K) -> Option<Bytes> {
        self.lru.get(key).cloned()
    }

    /// Keeps `value` unless it is too large for the budget (older values make room).
    pub fn insert(&mut self, key: K, value: Bytes) {
        if !self.fits(value.len() as u64) || self.lru.contains(&key) {
            return;
        }
        while self.bytes + value.len() > self.budget {
            match self.lru.pop_lru() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
        self.bytes += value.len();
        self.lru.put(key, value);
    }

    /// Whether a value of `size` bytes may be kept: at most a quarter of the budget.
    pub fn fits(&self, size: u64) -> bool {
        size <= (self.budget / 4) as u64
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget as u64
    }

    /// Changes the budget (values already kept stay until evicted).
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
    }
}
