//! Caching: the cache key (and, as caching lands, the store and its policy).

pub mod key;
