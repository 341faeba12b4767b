//! Configuration, in two stages (as sozu does it):
//!
//! 1. [`file`]: strict serde types for `conf/portico.yaml` and `rules/*.yaml`
//!    (`deny_unknown_fields`; serde reports syntax and type errors with their position).
//! 2. [`node`], [`origins`], [`rule_sets`], [`routes`]: pure validating builds into
//!    [`model`], which collect *every* problem with `file:line:column` and the field path.
//!
//! A configuration with any error is refused whole: [`load`] returns either a complete
//! [`Config`] or every diagnostic.

mod actions;
mod admin;
pub mod chaos;
mod conditions;
pub mod diagnostics;
pub mod duration;
pub mod file;
pub mod limits;
pub mod locate;
pub mod model;
mod node;
mod origins;
mod routes;
mod rule_sets;
mod tiers;
mod timeouts;
mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diagnostics::{ConfigError, Diagnostic, Severity};
pub use model::Config;

use diagnostics::{FileId, Report};
use file::{FileNode, FileRules};

/// A loaded configuration and the warnings `portico check` prints.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// A config file's name (as shown in diagnostics) and text.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// Reads and validates `conf_path` and every `*.yaml` file of its rules folder.
pub fn load(conf_path: &Path) -> Result<Loaded, ConfigError> {
    let node = Source {
        path: conf_path.to_path_buf(),
        text: read(conf_path)?,
    };
    let conf_dir = conf_path.parent().unwrap_or(Path::new("."));
    let rules_dir = rules_dir_of(conf_dir, &node.text);
    let files = match rule_files(&rules_dir) {
        Ok(files) => files,
        // A node file that does not parse may not name its rules folder: report its own
        // errors rather than the absence of the default folder.
        Err(_) if serde_yaml::from_str::<FileNode>(&node.text).is_err() => Vec::new(),
        Err(error) => return Err(error),
    };
    let mut rules = Vec::new();
    for path in files {
        let text = read(&path)?;
        rules.push(Source { path, text });
    }
    build(&node, conf_dir, &rules)
}

/// The rule files `conf_path` loads today (none if its folder cannot be read): what
/// `portico run --watch` looks at besides the node file.
pub fn rule_file_paths(conf_path: &Path) -> Vec<PathBuf> {
    let conf_dir = conf_path.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(conf_path).unwrap_or_default();
    rule_files(&rules_dir_of(conf_dir, &text)).unwrap_or_default()
}

/// Where the node file says its rules are (read before validation, to find the files).
/// Read leniently, so that a node file with errors elsewhere still finds its rules.
fn rules_dir_of(conf_dir: &Path, node_text: &str) -> PathBuf {
    let raw: Option<serde_yaml::Value> = serde_yaml::from_str(node_text).ok();
    let dir = raw
        .as_ref()
        .and_then(|node| node.get("rules_dir"))
        .and_then(|dir| dir.as_str());
    conf_dir.join(dir.unwrap_or(node::DEFAULT_RULES_DIR))
}

/// Validates texts already in memory; `conf_dir` anchors relative paths of the node file.
pub fn build(
    node_source: &Source,
    conf_dir: &Path,
    rules: &[Source],
) -> Result<Loaded, ConfigError> {
    let mut report = Report::default();
    let (conf_file, parsable) = add_source(&mut report, node_source);
    let raw_node = parsable
        .then(|| parse::<FileNode>(&mut report, conf_file, &node_source.text))
        .flatten();
    let Some(raw_node) = raw_node else {
        // Stage 1 still runs on the rule files, so that one run reports every file's errors.
        for source in rules {
            if let (file, true) = add_source(&mut report, source) {
                parse_rules(&mut report, file, &source.text);
            }
        }
        return Err(ConfigError::Invalid(report.items));
    };
    let node = node::build_node(&mut report, conf_file, conf_dir, &raw_node);
    let mut raw_rules = Vec::new();
    for source in rules {
        let (file, parsable) = add_source(&mut report, source);
        if !parsable {
            continue;
        }
        if let Some(parsed) = parse_rules(&mut report, file, &source.text) {
            raw_rules.push((file, parsed));
        }
    }
    let config = build_rules(&mut report, &raw_rules, node);
    if report.has_errors() {
        return Err(ConfigError::Invalid(report.items));
    }
    Ok(Loaded {
        config,
        warnings: report.items,
    })
}

fn build_rules(report: &mut Report, raw: &[(FileId, FileRules)], node: node::BuiltNode) -> Config {
    let groups: Vec<_> = raw
        .iter()
        .flat_map(|(f, r)| {
            r.origin_groups
                .iter()
                .enumerate()
                .map(move |(i, g)| (*f, i, g))
        })
        .collect();
    let sets: Vec<_> = raw
        .iter()
        .flat_map(|(f, r)| r.rule_sets.iter().enumerate().map(move |(i, s)| (*f, i, s)))
        .collect();
    let routes: Vec<_> = raw
        .iter()
        .flat_map(|(f, r)| r.routes.iter().enumerate().map(move |(i, s)| (*f, i, s)))
        .collect();

    let (origin_groups, group_names) = origins::build_origin_groups(
        report,
        &groups,
        node.settings.origin_timeouts,
        node.settings.tiers.hosts_file.as_deref(),
    );
    let (rule_sets, set_names) = rule_sets::build_rule_sets(report, &sets, &group_names);
    let defaults = routes::RouteDefaults {
        on_cached_upgrade: node.on_cached_upgrade,
        tunnel: node.tunnel,
    };
    let listener_names: Vec<&str> = node
        .settings
        .listeners
        .iter()
        .filter_map(|l| l.name.as_deref())
        .collect();
    let routes = routes::build_routes(
        report,
        &routes,
        &group_names,
        &set_names,
        &rule_sets,
        &defaults,
        &listener_names,
    );
    tls::check_names_served(report, &node.cert_names, &routes);
    if routes.is_empty() && !report.has_errors() {
        report.warning(
            0,
            "rules_dir",
            format!(
                "no routes in {}: every request will get 404",
                node.rules_dir.display()
            ),
        );
    }
    Config {
        node: node.settings,
        routes,
        rule_sets,
        origin_groups,
    }
}

/// The most a configuration file may hold (10,000 routes take about 2 MiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads a configuration file, refusing one over [`MAX_FILE_BYTES`] without reading more
/// (a link to `/dev/zero` or an endless pipe would otherwise grow without bound).
fn read(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let failed = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(failed)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(text)
}

/// The deepest nesting a configuration file may have: far beyond any real one, well before
/// the YAML parser's time grows (it is quadratic in the nesting of flow collections).
const MAX_NESTING: usize = 64;

/// Where `text` first nests deeper than [`MAX_NESTING`] (flow `[`/`{`, or indentation of
/// more than 4 columns a level), as 1-based line and column.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (index, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if indent > MAX_NESTING * 4 {
            return Some((index + 1, indent + 1));
        }
        let mut quote = None;
        for (column, c) in line.char_indices() {
            match (quote, c) {
                (None, '#') => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some((index + 1, column + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// Adds `source` to the report, or refuses it when it nests too deep to parse safely.
fn add_source(report: &mut Report, source: &Source) -> (FileId, bool) {
    match too_deep(&source.text) {
        None => (report.add_file(&source.path, &source.text), true),
        Some((line, column)) => {
            let file = report.add_file(&source.path, "");
            report.error_at(
                file,
                line,
                column,
                format!("nested more than {MAX_NESTING} levels deep; no configuration needs that"),
            );
            (file, false)
        }
    }
}

/// The rule files of `dir`, in name order so that merging is deterministic.
fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Stage 1 for a rules file. An empty (or comment-only) file is an empty set of rules.
fn parse_rules(report: &mut Report, file: FileId, text: &str) -> Option<FileRules> {
    if text
        .lines()
        .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'))
    {
        return Some(FileRules::default());
    }
    parse(report, file, text)
}

/// Stage 1 for one file.
fn parse<T: serde::de::DeserializeOwned>(
    report: &mut Report,
    file: FileId,
    text: &str,
) -> Option<T> {
    match serde_yaml::from_str(text) {
        Ok(value) => Some(value),
        Err(error) => {
            report.serde_error(file, &error);
            None
        }
    }
}

/// Like [`duration_field`], refusing values under `min`: a zero or tiny duration there
/// would make the node misbehave (a `0s` probe interval probes hundreds of times a second,
/// a `0s` tunnel idle timeout closes every tunnel at once).
pub(crate) fn bounded_duration_field(
    report: &mut Report,
    file: FileId,
    path: &str,
    text: Option<&str>,
    default: Duration,
    min: Duration,
) -> Duration {
    let value = duration_field(report, file, path, text, default);
    if value < min {
        let given = if value.is_zero() {
            "0s".to_string()
        } else {
            format!("{value:?}")
        };
        report.error(
            file,
            path,
            format!("{given} is too short here; the least that works is {min:?}"),
        );
        return default;
    }
    value
}

/// Parses an optional duration field, reporting a bad one and falling back to `default`.
pub(crate) fn duration_field(
    report: &mut Report,
    file: FileId,
    path: &str,
    text: Option<&str>,
    default: Duration,
) -> Duration {
    match text.map(duration::parse_duration) {
        None => default,
        Some(Ok(value)) => value,
        Some(Err(message)) => {
            report.error(file, path, message);
            default
        }
    }
}
