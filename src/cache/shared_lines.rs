//! Header lines that many stored objects have word for word, kept once.
//!
//! An origin sends the same `Server`, `Content-Type` and `Cache-Control` lines on every
//! object of a kind, and the same `Date` on every object it answers within a second: about
//! two thirds of a typical static response's header text (about 160 of nginx's 250 bytes).
//! A stored header keeps those lines (`SHARED_NAMES`) as one block interned here, and only
//! the rest as its own text (`cache::header`), so a million objects from one origin hold a
//! few hundred blocks, not a million copies.
//!
//! The table holds weak references: a block lives as long as a header holds it, and the
//! table forgets dead ones in a sweep once it has grown to twice what was alive at the
//! last sweep. Interning happens when a header is stored (a fill's start, a revalidation),
//! never on a hit; a hit copies the block as one run.
//!
//! Who pays for a block in `cache.memory_bytes`: the header that made it (see
//! [`Interned::made`]); headers that found it add nothing. A block whose maker has left
//! the store while others still hold it is outside the bound, at most one block's bytes
//! per distinct block alive: the store's documented slack.

use std::sync::{Arc, LazyLock, Weak};

use ahash::RandomState;
use hashbrown::HashTable;
use parking_lot::Mutex;

/// Field names whose lines go in the shared block (in lower case): those a hit copies as
/// they are (`cache::hit_lines`, its `COPIED` names) whose values are commonly the same
/// across an origin's objects. `ETag` and `Last-Modified`, copied too, are each object's
/// own; `Accept-Ranges` joins only as the exact line `Accept-Ranges: bytes`
/// (`is_shared_line`), the one a hit writes anyway.
const SHARED_NAMES: [&str; 7] = [
    "server",
    "date",
    "content-type",
    "cache-control",
    "expires",
    "vary",
    "content-encoding",
];

/// The one `Accept-Ranges` line a block keeps: what a whole `200` hit says in its place.
pub const SHARED_ACCEPT_RANGES: (&[u8], &[u8]) = (b"Accept-Ranges", b"bytes");

/// Whether the field `name: value` goes in a shared block. `Accept-Ranges` only as
/// [`SHARED_ACCEPT_RANGES`], exactly, and only when it is the header's one such line
/// (`one_accept_ranges`): a hit counts it as written.
pub fn is_shared_line(name: &[u8], value: &[u8], one_accept_ranges: bool) -> bool {
    if name.eq_ignore_ascii_case(b"accept-ranges") {
        return one_accept_ranges && (name, value) == SHARED_ACCEPT_RANGES;
    }
    SHARED_NAMES
        .iter()
        .any(|shared| name.eq_ignore_ascii_case(shared.as_bytes()))
}

/// A block of whole field lines (`Name: value` and CRLF each), shared by the headers that
/// have them all, in this order.
#[derive(Clone)]
pub struct SharedLines(Arc<Box<[u8]>>);

impl SharedLines {
    pub fn text(&self) -> &[u8] {
        &self.0
    }

    /// What the block takes in memory: its text, its `Arc` with the box it holds, and its
    /// entry in the table (a hash, a weak pointer and a control byte, with the table's
    /// spare room).
    pub fn weight(&self) -> usize {
        const TABLE_ENTRY_BYTES: usize = 32;
        self.0.len()
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<Box<[u8]>>()
            + TABLE_ENTRY_BYTES
    }
}

/// A block as `intern` hands it out.
pub struct Interned {
    pub lines: SharedLines,
    /// Whether this call made the block (no header held one with this text).
    pub made: bool,
}

/// The blocks alive, by their text's hash.
struct Table {
    seeds: RandomState,
    blocks: HashTable<(u64, Weak<Box<[u8]>>)>,
    /// How many were alive at the last sweep.
    alive_at_sweep: usize,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| {
    Mutex::new(Table {
        seeds: RandomState::new(),
        blocks: HashTable::new(),
        alive_at_sweep: 0,
    })
});

/// The block with `text`: the one some header holds, or a new one.
pub fn intern(text: &[u8]) -> Interned {
    let mut table = TABLE.lock();
    let hash = table.seeds.hash_one(text);
    let found = table
        .blocks
        .find(hash, |(h, block)| {
            *h == hash && block.upgrade().is_some_and(|b| **b == *text)
        })
        .and_then(|(_, block)| block.upgrade());
    if let Some(block) = found {
        return Interned {
            lines: SharedLines(block),
            made: false,
        };
    }
    if table.blocks.len() >= 2 * table.alive_at_sweep + 1024 {
        table.blocks.retain(|(_, block)| block.strong_count() > 0);
        table.alive_at_sweep = table.blocks.len();
    }
    let block = Arc::new(Box::<[u8]>::from(text));
    table
        .blocks
        .insert_unique(hash, (hash, Arc::downgrade(&block)), |(h, _)| *h);
    Interned {
        lines: SharedLines(block),
        made: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_block_and_only_the_first_makes_it() {
        let text = b"Server: shared-lines-test\r\n";
        let first = intern(text);
        let second = intern(text);
        assert!(first.made);
        assert!(!second.made);
        assert!(Arc::ptr_eq(&first.lines.0, &second.lines.0));
        assert_eq!(second.lines.text(), text);
        let other = intern(b"Server: shared-lines-test-2\r\n");
        assert!(other.made);
    }

    /// Blocks no header holds any longer leave the table by the sweeps: it stays within
    /// twice what is alive, plus the sweep's step.
    #[test]
    fn dead_blocks_are_swept() {
        for n in 0..10_000 {
            drop(intern(
                format!("Server: shared-lines-sweep-{n}\r\n").as_bytes(),
            ));
        }
        let table = TABLE.lock();
        assert!(table.blocks.len() < 2 * table.alive_at_sweep + 1024 + 1);
        assert!(table.alive_at_sweep < 1000, "{}", table.alive_at_sweep);
    }

    #[test]
    fn a_block_no_header_holds_is_made_again() {
        let text = b"Server: shared-lines-dropped\r\n";
        drop(intern(text));
        assert!(intern(text).made);
    }

    #[test]
    fn shared_lines_are_the_copied_names_and_one_exact_accept_ranges() {
        assert!(is_shared_line(b"Content-Type", b"text/html", false));
        assert!(is_shared_line(b"date", b"x", false));
        assert!(!is_shared_line(b"ETag", b"\"a\"", true));
        assert!(!is_shared_line(b"Content-Length", b"12", true));
        assert!(is_shared_line(b"Accept-Ranges", b"bytes", true));
        assert!(!is_shared_line(b"Accept-Ranges", b"bytes", false));
        assert!(!is_shared_line(b"accept-ranges", b"bytes", true));
        assert!(!is_shared_line(b"Accept-Ranges", b"none", true));
    }
}
