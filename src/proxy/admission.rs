//! The first decision on a request: refuse what must not be forwarded, route it, run its
//! rule sets, and answer at the edge when the answer does not need an origin
//! (no route, redirect, rejected upgrade, loop).

use std::borrow::Cow;

use http::HeaderValue;
use pingora_error::Result;
use pingora_http::authority::{is_http_family_scheme, raw_target_authority, RawTargetAuthority};
use pingora_proxy::Session;

use crate::config::model::RedirectProtocol;
use crate::rules::path::{normalise_path, PathRefusal};
use crate::rules::request::{normalise_host, strip_port, BadHost};
use crate::rules::{Miss, RedirectTarget, RequestFacts, Scheme, UpgradeHandling};
use crate::tunnel::TunnelState;

use super::ctx::RequestCtx;
use super::respond::{EdgeAnswer, Quoted};
use super::Snapshot;

/// Routes the request into `ctx`; returns `true` when the edge has answered it itself.
pub async fn admit(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snapshot: &Snapshot,
    node: &str,
) -> Result<bool> {
    if let Some(answer) = refusal(session, node) {
        return answer.send(session, ctx).await.map(|_| true);
    }
    if let Err(why) = normalise_request_path(session) {
        let answer = EdgeAnswer {
            status: 400,
            error: "bad-path",
            body: format!(
                "path \"{}\" is not allowed: {why}",
                Quoted(session.req_header().uri.path())
            ),
            location: None,
        };
        return answer.send(session, ctx).await.map(|_| true);
    }
    let request = session.req_header();
    ctx.host = match normal_host(request) {
        Ok(host) => host,
        Err(why) => {
            let answer = EdgeAnswer {
                status: 400,
                error: "bad-host",
                body: format!("bad Host: {}", why.reason()),
                location: None,
            };
            return answer.send(session, ctx).await.map(|_| true);
        }
    };
    // Owned copies (reference-counted, not copied), so `ctx` stays free to change below.
    let host_value = ctx.host.clone();
    let edge_listener = ctx.edge_listener.clone();
    let listener = if ctx.tier.from_edge {
        edge_listener.as_ref().and_then(|v| v.to_str().ok())
    } else {
        ctx.listener
            .and_then(|i| snapshot.engine.config.node.listeners.get(i))
            .and_then(|l| l.name.as_deref())
    };
    let host = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let path = request.uri.path();
    let facts = RequestFacts {
        method: request.method.as_str(),
        host,
        path,
        query: request.uri.query(),
        headers: &request.headers,
        client_ip: ctx.client_ip,
        scheme: ctx.scheme,
        listener,
    };
    let engine = &snapshot.engine;
    let decision = match engine.decide(&facts) {
        Ok(decision) => decision,
        Err(miss) => {
            let answer = no_route(engine, miss, host, path, facts.method);
            return answer.send(session, ctx).await.map(|_| true);
        }
    };
    let route = engine.route(decision.route);
    let answer = if let Some(target) = &decision.redirect {
        let location = redirect_location(engine, target, &facts);
        // HTTPS redirects use 308: permanent, and the method and body are kept.
        let status = engine.redirect(target).map_or(308, |r| r.status);
        Some(EdgeAnswer {
            status,
            error: "",
            body: format!("redirecting to {location}"),
            location: Some(location),
        })
    } else if decision.upgrade == UpgradeHandling::Reject {
        Some(EdgeAnswer {
            status: 426,
            error: "cached-route-upgrade",
            body: format!("route \"{}\" has caching enabled, so WebSocket upgrades are rejected (on_cached_upgrade: reject)", route.name),
            location: None,
        })
    } else {
        None
    };
    if decision.upgrade == UpgradeHandling::Tunnel {
        ctx.tunnel = Some(TunnelState::new(route.tunnel));
    }
    ctx.cache_status = match decision.upgrade {
        UpgradeHandling::Reproduce => "UNCACHEABLE",
        _ => "CONFIG_NOCACHE",
    };
    ctx.decision = Some(decision);
    match answer {
        Some(answer) => answer.send(session, ctx).await.map(|_| true),
        None => Ok(false),
    }
}

/// The host a request is for, as received (for the access log): the `Host` header, else
/// the URI's authority (HTTP/2) or an absolute-form target's. Routing and the cache use the
/// normalised [`normal_host`] instead.
pub fn request_host(request: &pingora_http::RequestHeader) -> &str {
    raw_host(request)
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .unwrap_or("")
}

/// The raw bytes naming the request's host. Pingora has already refused a request whose
/// `Host` and target authority differ, so whichever is present is the one host named.
/// In 0.9.1 an HTTP/1 absolute-form target keeps its authority only in the raw target
/// (`uri.authority()` is `None`), so that is read too.
fn raw_host(request: &pingora_http::RequestHeader) -> Option<&[u8]> {
    if let Some(host) = request.headers.get(http::header::HOST) {
        return Some(host.as_bytes());
    }
    if let Some(authority) = request.uri.authority() {
        return Some(authority.as_str().as_bytes());
    }
    raw_target_authority(request.raw_path()).authority()
}

/// The request's host, checked and normalised; `Ok(None)` when it names none (HTTP/1.0;
/// HTTP/1.1 without a host was refused already). The already-normal `Host` header value
/// (the common case) is shared, not copied.
fn normal_host(request: &pingora_http::RequestHeader) -> Result<Option<HeaderValue>, BadHost> {
    // `Host` looked up once: it is both the raw host (when present) and what is shared.
    let header = request.headers.get(http::header::HOST);
    let Some(raw) = header
        .map(HeaderValue::as_bytes)
        .or_else(|| raw_host(request))
    else {
        return Ok(None);
    };
    let value = match normalise_host(raw)? {
        Cow::Borrowed(_) => match header {
            Some(host) => host.clone(),
            None => HeaderValue::from_bytes(raw).map_err(|_| BadHost::NotText)?,
        },
        Cow::Owned(text) => HeaderValue::try_from(text).map_err(|_| BadHost::NotText)?,
    };
    Ok(Some(value))
}

/// Requests refused before routing: a target in none of the forms a request may take (see
/// [`target_form`]), an HTTP/1.1 request without a `Host` header (RFC 9112 §3.2, even with
/// an absolute-form target: a proxy that guessed would route it somewhere the client never
/// named; Pingora already refuses a second `Host` line, and `CONNECT`:
/// `limits::head_error`), and loops. Paths with dot segments are refused by
/// [`normalise_request_path`].
fn refusal(session: &Session, node: &str) -> Option<EdgeAnswer<'static>> {
    let request = session.req_header();
    if let Err(why) = target_form(request) {
        return Some(EdgeAnswer {
            status: 400,
            error: "bad-target",
            body: format!("request target is not allowed: {why}"),
            location: None,
        });
    }
    let no_host = request.version == http::Version::HTTP_11
        && !request.headers.contains_key(http::header::HOST);
    if no_host {
        return Some(EdgeAnswer {
            status: 400,
            error: "bad-host",
            body: "an HTTP/1.1 request needs a Host header".into(),
            location: None,
        });
    }
    const CDN_LOOP: http::HeaderName = http::HeaderName::from_static("cdn-loop");
    let looped = super::headers::has_any_field(&request.headers, &[CDN_LOOP])
        && request.headers.get_all(CDN_LOOP).iter().any(|value| {
            value.to_str().is_ok_and(|text| {
                text.split(',')
                    .any(|entry| entry.trim().split(';').next() == Some(node))
            })
        });
    if looped {
        return Some(EdgeAnswer {
            status: 508,
            error: "loop-detected",
            body: format!("loop detected: this request already passed through {node} (CDN-Loop)"),
            location: None,
        });
    }
    None
}

/// Whether the request's target has one of the forms RFC 9112 §3.2 allows a request that
/// is not `CONNECT`: origin-form (`/path?query`), absolute-form with an HTTP or WebSocket
/// scheme (`http://host/path`), or `*` for `OPTIONS`. Pingora keeps any other target (`GET
/// page.html`, `GET host:80`) verbatim for the origin while the URI it parses reads `/`:
/// routing, rules, path checks and the cache key would see another request than the one
/// the origin answers, and its answer would be stored as the site's root.
fn target_form(request: &pingora_http::RequestHeader) -> std::result::Result<(), &'static str> {
    let target = request.raw_path();
    if target.first() == Some(&b'/') {
        return Ok(());
    }
    if target == b"*" {
        return match request.method {
            http::Method::OPTIONS => Ok(()),
            _ => Err("\"*\" is only for OPTIONS"),
        };
    }
    match raw_target_authority(target) {
        RawTargetAuthority::Absolute { scheme, .. } if is_http_family_scheme(scheme) => Ok(()),
        _ => Err("it must start with \"/\" or be an absolute http(s) URL"),
    }
}

/// Puts the request's path in normal form (`rules::path`) before anything reads it:
/// routing, rules, the cache key and the forwarded request all see that form.
fn normalise_request_path(session: &mut Session) -> std::result::Result<(), PathRefusal> {
    let request = session.req_header();
    let normal = match normalise_path(request.uri.path())? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(normal) => normal,
    };
    let mut parts = request.uri.clone().into_parts();
    let target = match request.uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    parts.path_and_query = Some(target.parse().map_err(|_| "it cannot be written back")?);
    let uri = http::Uri::from_parts(parts).map_err(|_| "it cannot be written back")?;
    session.req_header_mut().set_uri(uri);
    Ok(())
}

fn no_route(
    engine: &crate::rules::Engine,
    miss: Miss,
    host: &str,
    path: &str,
    method: &str,
) -> EdgeAnswer<'static> {
    let body = match miss {
        Miss::NoRouteForPath => format!(
            "no route for host \"{}\" and path \"{}\"",
            Quoted(strip_port(host)),
            Quoted(path)
        ),
        Miss::MethodNotAccepted { route } => format!(
            "route \"{}\" does not accept method {method}",
            engine.route(route).name
        ),
        Miss::ProtocolNotAccepted { route } => format!(
            "route \"{}\" is not served over this protocol",
            engine.route(route).name
        ),
        Miss::BadHost => format!("host \"{}\" is not a valid host name", Quoted(host)),
    };
    let status = if miss == Miss::BadHost { 400 } else { 404 };
    EdgeAnswer {
        status,
        error: "no-route",
        body,
        location: None,
    }
}

/// `Location` for a redirect: the rule's parts, else the request's.
fn redirect_location(
    engine: &crate::rules::Engine,
    target: &RedirectTarget,
    facts: &RequestFacts<'_>,
) -> String {
    let redirect = engine.redirect(target);
    let scheme = match (target, redirect.map(|r| r.protocol)) {
        (RedirectTarget::Https, _) | (_, Some(RedirectProtocol::Https)) => Scheme::Https,
        (_, Some(RedirectProtocol::Http)) => Scheme::Http,
        _ => facts.scheme,
    };
    let host = match redirect.and_then(|r| r.host.as_deref()) {
        Some(host) => host,
        // A scheme change drops the port, which belonged to the other scheme's listener.
        None if scheme != facts.scheme => facts.host_name(),
        None => facts.host,
    };
    let path = redirect
        .and_then(|r| r.path.as_deref())
        .unwrap_or(facts.path);
    let query = match redirect.and_then(|r| r.query.as_deref()) {
        Some(query) => Some(query).filter(|q| !q.is_empty()),
        None => facts.query,
    };
    match query {
        Some(query) => format!("{}://{host}{path}?{query}", scheme.as_str()),
        None => format!("{}://{host}{path}", scheme.as_str()),
    }
}
