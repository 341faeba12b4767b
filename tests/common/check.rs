//! Runs the built `portico check` on files written to a temporary folder and reads its
//! diagnostics (`file:line:column: severity: field.path: message`).

use std::path::Path;
use std::process::Command;

/// What one run of `portico check` printed.
pub struct Checked {
    pub success: bool,
    pub stdout: String,
}

impl Checked {
    /// The one stdout line at `location` (e.g. `rules/routes.yaml:7:5`), which must be a
    /// diagnostic of `severity` carrying `path` (field path or serde path) and `phrase`.
    pub fn assert_line(&self, location: &str, severity: &str, path: &str, phrase: &str) {
        // The leading '/' pins the file name; the trailing ':' pins the column.
        let needle = format!("/{location}: ");
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|line| line.contains(&needle))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one diagnostic at {location}, got {lines:?}\nstdout:\n{}",
            self.stdout
        );
        let line = lines[0];
        let rest = &line[line.find(&needle).unwrap() + needle.len()..];
        assert!(
            rest.starts_with(&format!("{severity}: ")),
            "expected a {severity} at {location}: {line}"
        );
        assert!(
            rest.contains(&format!("{path}: ")),
            "expected field path `{path}` at {location}: {line}"
        );
        assert!(
            rest.contains(phrase),
            "expected \"{phrase}\" at {location}: {line}"
        );
    }

    pub fn error(&self, location: &str, path: &str, phrase: &str) {
        self.assert_line(location, "error", path, phrase);
    }

    pub fn warning(&self, location: &str, path: &str, phrase: &str) {
        self.assert_line(location, "warning", path, phrase);
    }

    pub fn error_count(&self) -> usize {
        self.stdout
            .lines()
            .filter(|l| l.contains(": error: "))
            .count()
    }

    pub fn refused(self) -> Checked {
        assert!(
            !self.success,
            "check accepted a broken config:\n{}",
            self.stdout
        );
        assert!(
            self.stdout.contains("configuration refused"),
            "{}",
            self.stdout
        );
        self
    }

    pub fn accepted(self) -> Checked {
        assert!(self.success, "check refused the config:\n{}", self.stdout);
        assert!(self.stdout.contains("configuration OK"), "{}", self.stdout);
        self
    }
}

pub fn run_check(conf: &Path) -> Checked {
    let output = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("check")
        .arg("-c")
        .arg(conf)
        .env("RUST_LOG", "off")
        .output()
        .expect("run portico check");
    Checked {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
    }
}

/// Writes `portico.yaml` (`node`) and `rules/<name>` files into a new temporary folder and
/// runs `portico check` on it.
pub fn check_files(node: &str, rules: &[(&str, &str)]) -> Checked {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("portico.yaml"), node).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    for (name, text) in rules {
        std::fs::write(dir.path().join("rules").join(name), text).unwrap();
    }
    run_check(&dir.path().join("portico.yaml"))
}
