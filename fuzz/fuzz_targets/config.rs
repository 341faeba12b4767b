//! Configuration loading from text, both stages: the raw `File*` types (stage 1, serde with
//! `deny_unknown_fields`) and the validating build (stage 2), then the rule engine built
//! from a valid result. No file is read: the texts are the input.
//!
//! Input: the node file, then each rules file, separated by NUL bytes.
//!
//! Invariants: no panic; the same texts give the same outcome; every diagnostic points
//! into one of the given files, at a line that file has (lines as YAML counts them: a lone
//! CR ends one too); a configuration that builds gives an engine that
//! routes a plain request without panicking.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use portico::config::{self, Source};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let node = Source {
        path: PathBuf::from("portico.yaml"),
        text: parts.next().unwrap_or_default().to_owned(),
    };
    let rules: Vec<Source> = parts
        .take(4)
        .enumerate()
        .map(|(i, text)| Source {
            path: PathBuf::from(format!("rules/r{i}.yaml")),
            text: text.to_owned(),
        })
        .collect();
    // Relative paths in the node file (certificates, CA files) resolve under a folder that
    // does not exist: nothing is read.
    let conf_dir = Path::new("/nonexistent/portico-fuzz");
    let first = config::build(&node, conf_dir, &rules);
    let second = config::build(&node, conf_dir, &rules);
    match (&first, &second) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "not deterministic"),
        _ => panic!("one build succeeded and the other failed"),
    }
    match first {
        Err(error) => {
            for diagnostic in error.diagnostics() {
                let source = std::iter::once(&node)
                    .chain(rules.iter())
                    .find(|s| s.path.display().to_string() == diagnostic.file)
                    .unwrap_or_else(|| panic!("a diagnostic for an unknown file: {diagnostic}"));
                // Lines as YAML counts them: CR LF, a lone CR and LF each end one.
                let lines = source.text.replace("\r\n", "\n").split(['\r', '\n']).count();
                assert!(
                    diagnostic.line <= lines + 1,
                    "line {} of a {lines}-line file: {diagnostic}",
                    diagnostic.line
                );
            }
        }
        Ok(loaded) => {
            for warning in &loaded.warnings {
                assert!(
                    !warning.file.is_empty(),
                    "a warning without a file: {warning}"
                );
            }
            let engine = portico::rules::Engine::new(loaded.config);
            let headers = http::HeaderMap::new();
            let _ = engine.decide(&portico::rules::RequestFacts {
                method: "GET",
                host: "example.com",
                path: "/",
                query: None,
                headers: &headers,
                client_ip: None,
                scheme: portico::rules::Scheme::Http,
                listener: None,
            });
        }
    }
});
