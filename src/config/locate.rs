//! Maps field paths such as `routes[2].origin_group` to `line:column` in a YAML text.
//!
//! serde gives positions only for syntax and type errors; cross-reference errors found after
//! deserialising (a route naming a missing group) need this index to point at the right line.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Every field path of a YAML document with the position where it is written.
#[derive(Debug, Default)]
pub struct Positions {
    by_path: HashMap<String, Pos>,
}

impl Positions {
    /// Indexes `text`. A text that does not parse yields what was indexed before the error
    /// (the serde pass reports the syntax error itself).
    pub fn index(text: &str) -> Positions {
        let mut indexer = Indexer::default();
        let _ = Parser::new_from_str(text).load(&mut indexer, false);
        Positions {
            by_path: indexer.by_path,
        }
    }

    /// The position of `path`, or of its nearest indexed ancestor.
    pub fn find(&self, path: &str) -> Pos {
        let mut path = path;
        loop {
            if let Some(pos) = self.by_path.get(path) {
                return *pos;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return Pos { line: 1, column: 1 },
            }
        }
    }
}

enum Frame {
    /// `first_key` is set until the mapping's first key is seen (see `path_of_next_node`).
    Map {
        path: String,
        key: Option<String>,
        first_key: bool,
    },
    Seq {
        path: String,
        next_index: usize,
    },
}

#[derive(Default)]
struct Indexer {
    stack: Vec<Frame>,
    by_path: HashMap<String, Pos>,
}

impl Indexer {
    /// Path of the node starting now, or `None` when the node is a mapping key.
    fn path_of_next_node(&mut self, key_text: Option<&str>, mark: Marker) -> Option<String> {
        let pos = Pos {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next_index }) => {
                let child = format!("{path}[{next_index}]");
                *next_index += 1;
                self.by_path.insert(child.clone(), pos);
                Some(child)
            }
            Some(Frame::Map {
                path,
                key,
                first_key,
            }) => match key.take() {
                Some(key) => Some(join(path, &key)),
                None => {
                    // yaml-rust2 marks a block mapping's start at the `:` after its first
                    // key; the mapping (e.g. a sequence item `- name: a`) starts at that key.
                    if std::mem::take(first_key) {
                        if let Some(start) = self.by_path.get_mut(path.as_str()) {
                            if (pos.line, pos.column) < (start.line, start.column) {
                                *start = pos;
                            }
                        }
                    }
                    let key = key_text.unwrap_or("?").to_string();
                    self.by_path.insert(join(path, &key), pos);
                    if let Some(Frame::Map { key: slot, .. }) = self.stack.last_mut() {
                        *slot = Some(key);
                    }
                    None
                }
            },
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => {
                self.path_of_next_node(Some(&text), mark);
            }
            Event::Alias(_) => {
                self.path_of_next_node(None, mark);
            }
            Event::MappingStart(..) => {
                let path = self.path_of_next_node(None, mark).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    first_key: true,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.path_of_next_node(None, mark).unwrap_or_default();
                self.stack.push(Frame::Seq {
                    path,
                    next_index: 0,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "routes:\n  - name: a\n    origin_group: web\n  - name: b\n    cache:\n      enabled: true\n";

    #[test]
    fn finds_nested_fields_and_sequence_items() {
        let positions = Positions::index(TEXT);
        assert_eq!(positions.find("routes"), Pos { line: 1, column: 1 });
        assert_eq!(positions.find("routes[0]"), Pos { line: 2, column: 5 });
        assert_eq!(
            positions.find("routes[0].origin_group"),
            Pos { line: 3, column: 5 }
        );
        assert_eq!(
            positions.find("routes[1].cache.enabled"),
            Pos { line: 6, column: 7 }
        );
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let positions = Positions::index(TEXT);
        assert_eq!(
            positions.find("routes[1].rule_sets[3]"),
            Pos { line: 4, column: 5 }
        );
    }
}
