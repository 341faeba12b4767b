//! Stage 2 for rule actions: each action must carry exactly the fields its type uses.

use std::collections::HashMap;

use http::{HeaderName, HeaderValue};

use super::diagnostics::{FileId, Report};
use super::duration::parse_duration;
use super::file::{CacheBehavior, FileAction, HeaderAction, QueryStringBehavior, RedirectProtocol};
use super::model::{Action, HeaderEdit, QueryStringMode, Redirect};

/// Request headers the edge owns: `Host` (the origin's `host_header`), `Via` and `CDN-Loop`
/// (loop detection across tiers), the forwarding headers (what the origin believes about
/// the client) and the request id. A rule that edited them could forge a hop or a client.
fn is_edge_owned(name: &str) -> bool {
    matches!(
        name,
        "host" | "via" | "cdn-loop" | "forwarded" | "x-real-ip" | "x-portico-ref"
    ) || name.starts_with("x-forwarded-")
}

const ACTION_TYPES: &str = "route_override, cache_expiration, cache_key_query_string, modify_request_header, modify_response_header, url_rewrite, url_redirect";

/// The fields an action has set, by name.
fn set_fields(raw: &FileAction) -> Vec<&'static str> {
    let flags = [
        ("caching", raw.caching.is_some()),
        ("origin_group", raw.origin_group.is_some()),
        ("behavior", raw.behavior.is_some()),
        ("duration", raw.duration.is_some()),
        ("query_string", raw.query_string.is_some()),
        ("query_params", raw.query_params.is_some()),
        ("header_action", raw.header_action.is_some()),
        ("name", raw.name.is_some()),
        ("value", raw.value.is_some()),
        ("source_pattern", raw.source_pattern.is_some()),
        ("destination", raw.destination.is_some()),
        (
            "preserve_unmatched_path",
            raw.preserve_unmatched_path.is_some(),
        ),
        ("status", raw.status.is_some()),
        ("protocol", raw.protocol.is_some()),
        ("host", raw.host.is_some()),
        ("path", raw.path.is_some()),
        ("query", raw.query.is_some()),
    ];
    flags
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect()
}

pub(super) fn build_action(
    report: &mut Report,
    file: FileId,
    at: &str,
    raw: &FileAction,
    groups: &HashMap<String, usize>,
) -> Option<Action> {
    let allowed: &[&str] = match raw.kind.as_str() {
        "route_override" => &["caching", "origin_group"],
        "cache_expiration" => &["behavior", "duration"],
        "cache_key_query_string" => &["query_string", "query_params"],
        "modify_request_header" | "modify_response_header" => &["header_action", "name", "value"],
        "url_rewrite" => &["source_pattern", "destination", "preserve_unmatched_path"],
        "url_redirect" => &["status", "protocol", "host", "path", "query"],
        other => {
            report.error(
                file,
                &format!("{at}.type"),
                format!("unknown action type \"{other}\"; expected one of {ACTION_TYPES}"),
            );
            return None;
        }
    };
    let errors_before = report.items.len();
    for field in set_fields(raw) {
        if !allowed.contains(&field) {
            report.error(
                file,
                &format!("{at}.{field}"),
                format!("`{field}` does not apply to action type {}", raw.kind),
            );
        }
    }
    let require = |report: &mut Report, field: &str, present: bool| {
        if !present {
            report.error(
                file,
                at,
                format!("action type {} needs `{field}`", raw.kind),
            );
        }
    };
    let action = match raw.kind.as_str() {
        "route_override" => {
            if raw.caching.is_none() && raw.origin_group.is_none() {
                report.error(
                    file,
                    at,
                    "route_override needs `caching`, `origin_group` or both",
                );
            }
            let origin_group = raw
                .origin_group
                .as_ref()
                .and_then(|name| match groups.get(name) {
                    Some(index) => Some(*index),
                    None => {
                        report.error(
                            file,
                            &format!("{at}.origin_group"),
                            format!("no origin group named \"{name}\""),
                        );
                        None
                    }
                });
            Action::RouteOverride {
                caching: raw.caching,
                origin_group,
            }
        }
        "cache_expiration" => {
            let behavior = raw.behavior.unwrap_or(CacheBehavior::HonorOrigin);
            require(report, "behavior", raw.behavior.is_some());
            let duration = raw
                .duration
                .as_deref()
                .and_then(|text| match parse_duration(text) {
                    Ok(d) => Some(d),
                    Err(message) => {
                        report.error(file, &format!("{at}.duration"), message);
                        None
                    }
                });
            if behavior != CacheBehavior::HonorOrigin && raw.duration.is_none() {
                report.error(file, at, "override behaviours need a `duration`");
            }
            Action::CacheExpiration { behavior, duration }
        }
        "cache_key_query_string" => {
            require(report, "query_string", raw.query_string.is_some());
            let mode = query_string_mode(
                report,
                file,
                at,
                raw.query_string.unwrap_or(QueryStringBehavior::UseAll),
                raw.query_params.as_deref(),
            );
            Action::CacheKeyQueryString(mode)
        }
        "modify_request_header" | "modify_response_header" => {
            let edit = header_edit(report, file, at, raw)?;
            if raw.kind == "modify_request_header" && is_edge_owned(edit.name.as_str()) {
                report.error(
                    file,
                    &format!("{at}.name"),
                    format!("{} is set by the edge itself (routing, loop detection, client address, request id): a rule may not change it", edit.name),
                );
                return None;
            }
            if raw.kind == "modify_request_header" {
                Action::ModifyRequestHeader(edit)
            } else {
                Action::ModifyResponseHeader(edit)
            }
        }
        "url_rewrite" => {
            require(report, "source_pattern", raw.source_pattern.is_some());
            require(report, "destination", raw.destination.is_some());
            let source_pattern = raw.source_pattern.clone().unwrap_or_default();
            let destination = raw.destination.clone().unwrap_or_default();
            for (field, value) in [
                ("source_pattern", &source_pattern),
                ("destination", &destination),
            ] {
                if !value.starts_with('/') {
                    report.error(file, &format!("{at}.{field}"), "must start with '/'");
                }
            }
            Action::UrlRewrite {
                source_pattern,
                destination,
                preserve_unmatched_path: raw.preserve_unmatched_path.unwrap_or(true),
            }
        }
        _ => {
            let status = raw.status.unwrap_or(302);
            if ![301, 302, 307, 308].contains(&status) {
                report.error(
                    file,
                    &format!("{at}.status"),
                    format!("redirect status {status} must be 301, 302, 307 or 308"),
                );
            }
            if raw.path.as_ref().is_some_and(|p| !p.starts_with('/')) {
                report.error(file, &format!("{at}.path"), "must start with '/'");
            }
            Action::UrlRedirect(Redirect {
                status,
                protocol: raw.protocol.unwrap_or(RedirectProtocol::MatchRequest),
                host: raw.host.clone(),
                path: raw.path.clone(),
                query: raw
                    .query
                    .as_ref()
                    .map(|q| q.trim_start_matches('?').to_string()),
            })
        }
    };
    (report.items.len() == errors_before).then_some(action)
}

fn header_edit(
    report: &mut Report,
    file: FileId,
    at: &str,
    raw: &FileAction,
) -> Option<HeaderEdit> {
    let Some(action) = raw.header_action else {
        report.error(
            file,
            at,
            format!(
                "action type {} needs `header_action` (append, overwrite or delete)",
                raw.kind
            ),
        );
        return None;
    };
    let name = match raw.name.as_deref().map(HeaderName::try_from) {
        Some(Ok(name)) => name,
        Some(Err(_)) => {
            report.error(file, &format!("{at}.name"), "not a valid header name");
            return None;
        }
        None => {
            report.error(file, at, format!("action type {} needs `name`", raw.kind));
            return None;
        }
    };
    let value = match (&raw.value, action) {
        (Some(_), HeaderAction::Delete) => {
            report.error(file, &format!("{at}.value"), "a delete takes no value");
            return None;
        }
        (None, HeaderAction::Delete) => None,
        (None, _) => {
            report.error(file, at, "append and overwrite need a `value`");
            return None;
        }
        (Some(text), _) => match HeaderValue::from_str(text) {
            Ok(value) => Some(value),
            Err(_) => {
                report.error(file, &format!("{at}.value"), "not a valid header value");
                return None;
            }
        },
    };
    Some(HeaderEdit {
        action,
        name,
        value,
    })
}

/// Builds a query-string mode; `include`/`exclude` need names, the others take none.
pub fn query_string_mode(
    report: &mut Report,
    file: FileId,
    at: &str,
    behavior: QueryStringBehavior,
    params: Option<&[String]>,
) -> QueryStringMode {
    let mut names: Vec<String> = params.unwrap_or_default().to_vec();
    names.sort();
    let wants_names = matches!(
        behavior,
        QueryStringBehavior::Include | QueryStringBehavior::Exclude
    );
    if wants_names && names.is_empty() {
        report.error(
            file,
            &format!("{at}.query_params"),
            "include and exclude need `query_params`",
        );
    }
    if !wants_names && !names.is_empty() {
        report.error(
            file,
            &format!("{at}.query_params"),
            "`query_params` only applies to include and exclude",
        );
    }
    match behavior {
        QueryStringBehavior::Ignore => QueryStringMode::Ignore,
        QueryStringBehavior::UseAll => QueryStringMode::UseAll,
        QueryStringBehavior::Include => QueryStringMode::Include(names),
        QueryStringBehavior::Exclude => QueryStringMode::Exclude(names),
    }
}
