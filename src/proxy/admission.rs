//! The first decision on a request: refuse what must not be forwarded, route it, run its
//! rule sets, and answer at the edge when the answer does not need an origin
//! (no route, redirect, rejected upgrade, loop).

use pingora_error::Result;
use pingora_proxy::Session;

use crate::config::model::RedirectProtocol;
use crate::rules::request::strip_port;
use crate::rules::{Miss, RedirectTarget, RequestFacts, Scheme, UpgradeHandling};
use crate::tunnel::TunnelState;

use super::ctx::RequestCtx;
use super::respond::EdgeAnswer;
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
    let request = session.req_header();
    let host = request_host(request);
    let path = request.uri.path();
    let facts = RequestFacts {
        method: request.method.as_str(),
        host,
        path,
        query: request.uri.query(),
        headers: &request.headers,
        client_ip: ctx.client_ip,
        scheme: ctx.scheme,
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

/// The host a request is for: the authority of an absolute-form URI (RFC 9112 §3.2.2
/// says it wins over `Host`), else the `Host` header.
pub fn request_host(request: &pingora_http::RequestHeader) -> &str {
    request
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            request
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("")
}

/// Requests refused before routing: an HTTP/1.1 request without `Host` (RFC 9112 §3.2: a
/// proxy that guessed would route it somewhere the client never named; Pingora already
/// refuses a second `Host` line), loops, CONNECT, and paths with dot segments (which an
/// origin could resolve outside the pattern the route matched).
fn refusal(session: &Session, node: &str) -> Option<EdgeAnswer<'static>> {
    let request = session.req_header();
    let no_host = !request.headers.contains_key(http::header::HOST)
        && request.version == http::Version::HTTP_11
        && request.uri.authority().is_none();
    if no_host {
        return Some(EdgeAnswer {
            status: 400,
            error: "bad-host",
            body: "an HTTP/1.1 request needs a Host header".into(),
            location: None,
        });
    }
    let looped = request.headers.get_all("cdn-loop").iter().any(|value| {
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
    if request.method == http::Method::CONNECT {
        return Some(EdgeAnswer {
            status: 405,
            error: "connect-refused",
            body: "CONNECT is not served by this edge".into(),
            location: None,
        });
    }
    let path = request.uri.path();
    let dotted = path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
        || contains_ignore_ascii_case(path, "%2e%2e")
        || contains_ignore_ascii_case(path, "/%2e/");
    if dotted || !path.starts_with('/') {
        return Some(EdgeAnswer {
            status: 400,
            error: "bad-path",
            body: format!("path \"{path}\" is not allowed (dot segments or not absolute)"),
            location: None,
        });
    }
    None
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
            "no route for host \"{}\" and path \"{path}\"",
            strip_port(host)
        ),
        Miss::MethodNotAccepted { route } => format!(
            "route \"{}\" does not accept method {method}",
            engine.route(route).name
        ),
        Miss::ProtocolNotAccepted { route } => format!(
            "route \"{}\" is not served over this protocol",
            engine.route(route).name
        ),
        Miss::BadHost => format!("host \"{host}\" is not a valid host name"),
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

/// `haystack` contains `needle` (lower-case ASCII), ignoring ASCII case, without allocating.
fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}
