// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! PORTICO PATCH (pool keys mixed, not SipHashed): the hasher of the pool's own maps.
//!
//! The pool's keys are not chosen by a peer: a group key is already a hash (of the peer,
//! `Peer::reuse_hash`) and a connection ID is a file descriptor. SipHash's resistance to
//! chosen keys buys nothing here, and it cost about 350 instructions per connection taken
//! from and given back to the pool. One multiply by an odd constant and a rotation spread
//! both kinds over buckets and shards.

use std::hash::{BuildHasherDefault, Hasher};

/// The multiplier of Fibonacci hashing (2^64 divided by the golden ratio, made odd).
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// A hasher for integer keys: each written integer is folded in with a multiply.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl KeyHasher {
    #[inline]
    fn fold(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // The high bits of a product are its best mixed: bring them down, where shard
        // and bucket indices are taken.
        self.0.rotate_left(26)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.fold(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.fold(n);
    }

    #[inline]
    fn write_i32(&mut self, n: i32) {
        self.fold(n as u32 as u64);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.fold(n as u64);
    }
}

/// Builds [`KeyHasher`]s, for the pool's maps.
pub type BuildKeyHasher = BuildHasherDefault<KeyHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<K: Hash>(key: K) -> u64 {
        BuildKeyHasher::default().hash_one(key)
    }

    #[test]
    fn consecutive_descriptors_spread_over_the_shards() {
        let mut shards = [0usize; 16];
        for fd in 3..3 + 16 * 64 {
            shards[(hash(fd as i32) as usize) % 16] += 1;
        }
        // 64 per shard if even; no shard gets twice that or none.
        assert!(shards.iter().all(|&n| n > 16 && n < 128), "{shards:?}");
    }

    #[test]
    fn different_keys_hash_differently() {
        let hashes: std::collections::HashSet<u64> = (0..10_000u64).map(hash).collect();
        assert_eq!(hashes.len(), 10_000);
        assert_ne!(hash(1u64), hash(1i32 as u64 + 1));
    }
}
