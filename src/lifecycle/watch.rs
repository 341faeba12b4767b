//! `portico run --watch`: reload when a file of the configuration changes.
//!
//! The node file and every `*.yaml` of its rules folder are read every `every` (250 ms by
//! default) and fingerprinted by content, so an editor's save, a `cp` or a Kubernetes
//! ConfigMap's symlink swap are all seen, whatever the file system's time stamps say. A
//! change is acted on once the files have stayed the same for one more look (debounce). A
//! half-written file is just an invalid configuration: the reload is refused, the old one
//! keeps serving, and the completed file is picked up by the next change.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use super::Lifecycle;

pub struct FileWatch {
    every: Duration,
    /// The fingerprint the live configuration (or the last refused one) was loaded from.
    loaded: u64,
}

impl FileWatch {
    pub fn new(lifecycle: &Lifecycle, every: Duration) -> FileWatch {
        FileWatch {
            every,
            loaded: fingerprint(&lifecycle.conf_path),
        }
    }

    /// Runs until the future is dropped (the lifecycle loop stops polling it).
    pub async fn run(&mut self, lifecycle: &Lifecycle) {
        let mut seen = self.loaded;
        loop {
            tokio::time::sleep(self.every).await;
            let now = fingerprint(&lifecycle.conf_path);
            if now != seen {
                seen = now; // still changing: look again before acting
                continue;
            }
            if now != self.loaded {
                self.loaded = now;
                log::info!("--watch: the configuration files changed; reloading");
                let _ = lifecycle.reload("watch").await;
            }
        }
    }
}

/// A hash of the node file's and every rule file's name and content.
pub fn fingerprint(conf_path: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    let mut hash_file = |path: &Path| {
        path.hash(&mut hasher);
        std::fs::read(path).ok().hash(&mut hasher);
    };
    hash_file(conf_path);
    for path in crate::config::rule_file_paths(conf_path) {
        hash_file(&path);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_rule_file_contents_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        let conf = dir.path().join("portico.yaml");
        std::fs::write(&conf, "name: n\nrules_dir: rules\n").unwrap();
        std::fs::write(dir.path().join("rules/a.yaml"), "routes: []\n").unwrap();
        let first = fingerprint(&conf);
        assert_eq!(first, fingerprint(&conf));
        std::fs::write(dir.path().join("rules/a.yaml"), "routes: [] \n").unwrap();
        let second = fingerprint(&conf);
        assert_ne!(first, second);
        std::fs::write(dir.path().join("rules/b.yaml"), "").unwrap();
        assert_ne!(second, fingerprint(&conf));
        std::fs::write(dir.path().join("rules/notes.txt"), "ignored").unwrap();
        let third = fingerprint(&conf);
        std::fs::write(dir.path().join("rules/notes.txt"), "still ignored").unwrap();
        assert_eq!(third, fingerprint(&conf));
    }
}
