//! The store's index: committed objects by cache tag and by host, and the fills in
//! progress (see the store's module doc, *Indexes*).

use std::collections::HashMap;
use std::sync::Arc;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::cache::object::Object;

/// Objects by id: one pointer and a control byte each (the id is the object's own).
#[derive(Default)]
pub(super) struct Objects(HashTable<Arc<Object>>);

impl Objects {
    /// Ids are handed out in sequence: a multiply spreads them over the table's buckets
    /// (its low bits) and its control bytes (its top bits).
    fn hash(id: u64) -> u64 {
        id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    pub(super) fn insert(&mut self, object: &Arc<Object>) {
        let id = object.id;
        match self
            .0
            .entry(Objects::hash(id), |o| o.id == id, |o| Objects::hash(o.id))
        {
            Entry::Occupied(mut occupied) => *occupied.get_mut() = object.clone(),
            Entry::Vacant(vacant) => {
                vacant.insert(object.clone());
            }
        }
    }

    pub(super) fn remove(&mut self, id: u64) {
        if let Ok(entry) = self.0.find_entry(Objects::hash(id), |o| o.id == id) {
            entry.remove();
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<Object>> {
        self.0.iter()
    }
}

/// Committed objects by tag and by host, and the fills in progress (see the module doc).
#[derive(Default)]
pub(super) struct Index {
    pub(super) by_tag: HashMap<Box<str>, Objects>,
    pub(super) by_host: HashMap<Box<str>, Objects>,
    pub(super) fills: Objects,
}

impl Index {
    pub(super) fn add(&mut self, object: &Arc<Object>) {
        for tag in object.meta().tags().iter() {
            self.by_tag.entry(tag.clone()).or_default().insert(object);
        }
        let host = object.host();
        match self.by_host.get_mut(host) {
            Some(objects) => objects.insert(object),
            None => self.by_host.entry(host.into()).or_default().insert(object),
        }
    }

    pub(super) fn remove(&mut self, object: &Object) {
        fn take(map: &mut HashMap<Box<str>, Objects>, name: &str, id: u64) {
            if let Some(objects) = map.get_mut(name) {
                objects.remove(id);
                if objects.0.is_empty() {
                    map.remove(name);
                }
            }
        }
        for tag in object.meta().tags().iter() {
            take(&mut self.by_tag, tag, object.id);
        }
        take(&mut self.by_host, object.host(), object.id);
    }
}
