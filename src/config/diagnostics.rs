//! Config problems with their place: `file:line:column: field.path: message`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::locate::{Pos, Positions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The field path, e.g. `routes[2].origin_group`; empty for whole-file problems.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {kind}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
    /// A configuration file is never this big: a link to a device or an endless file.
    #[error("cannot read {path}: larger than {limit} bytes, which no configuration file is")]
    TooLarge { path: PathBuf, limit: u64 },
}

impl ConfigError {
    /// Every diagnostic, errors and warnings, in the order found.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(all) => all,
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => &[],
        }
    }
}

fn render(all: &[Diagnostic]) -> String {
    let errors = all.iter().filter(|d| d.severity == Severity::Error).count();
    let mut text = String::new();
    for diagnostic in all {
        text.push_str(&diagnostic.to_string());
        text.push('\n');
    }
    text.push_str(&format!(
        "{errors} error(s); the configuration was not loaded"
    ));
    text
}

/// A parsed file, kept so that any later stage can place a problem in it.
pub struct SourceFile {
    pub display: String,
    /// The folder relative paths written in this file start from.
    pub dir: std::path::PathBuf,
    pub positions: Positions,
}

/// Collects diagnostics across every file of one load.
#[derive(Default)]
pub struct Report {
    files: Vec<SourceFile>,
    pub items: Vec<Diagnostic>,
}

/// Index of a file in a [`Report`].
pub type FileId = usize;

impl Report {
    pub fn add_file(&mut self, path: &Path, text: &str) -> FileId {
        self.files.push(SourceFile {
            display: path.display().to_string(),
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            positions: Positions::index(text),
        });
        self.files.len() - 1
    }

    pub fn error(&mut self, file: FileId, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, file, path, message.into());
    }

    pub fn warning(&mut self, file: FileId, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, file, path, message.into());
    }

    /// The folder of `file`, for paths written relative to it.
    pub fn file_dir(&self, file: FileId) -> &Path {
        &self.files[file].dir
    }

    /// Where `path` is written in `file`, as `file:line:column`.
    pub fn place(&self, file: FileId, path: &str) -> String {
        let source = &self.files[file];
        let pos = source.positions.find(path);
        format!("{}:{}:{}", source.display, pos.line, pos.column)
    }

    /// A serde error, at the position serde found, with serde's own field path.
    pub fn serde_error(&mut self, file: FileId, error: &serde_yaml::Error) {
        let pos = error
            .location()
            .map_or(Pos { line: 1, column: 1 }, |location| Pos {
                line: location.line(),
                column: location.column(),
            });
        let mut message = error.to_string();
        if let Some(cut) = message.rfind(" at line ") {
            message.truncate(cut);
        }
        self.items.push(Diagnostic {
            severity: Severity::Error,
            file: self.files[file].display.clone(),
            line: pos.line,
            column: pos.column,
            path: String::new(),
            message,
        });
    }

    /// An error at a known place, with no field path (a file that cannot be parsed).
    pub fn error_at(&mut self, file: FileId, line: usize, column: usize, message: String) {
        self.items.push(Diagnostic {
            severity: Severity::Error,
            file: self.files[file].display.clone(),
            line,
            column,
            path: String::new(),
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    fn push(&mut self, severity: Severity, file: FileId, path: &str, message: String) {
        let source = &self.files[file];
        let pos = source.positions.find(path);
        self.items.push(Diagnostic {
            severity,
            file: source.display.clone(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message,
        });
    }
}
