//! `POST /tunnels/close`: closes open tunnels as a maintenance event would, and says how
//! many it told to close.
//!
//! ```json
//! {"all": true, "how": "fin"}
//! {"fraction": 0.25, "how": "rst"}
//! {"route": "chat", "how": "close", "code": 1001}
//! {"client": "192.0.2.7", "route": "chat", "fraction": 0.5}
//! ```
//!
//! `route` and `client` narrow the choice, `fraction` takes that share of what is left (at
//! random); `all` takes every open tunnel and goes alone. `how` is `fin` (the default),
//! `rst`, `close` (a WebSocket Close frame with `code`, default 1001) or `close_<code>`.
//! The answer is `{"closed": N, "how": "..."}`; each tunnel's record, written as it
//! closes, says `closed_by: admin`.

use std::net::IpAddr;

use hyper::Request;
use serde::Deserialize;

use crate::config::model::CloseHow;
use crate::lifecycle::drain::Drain;
use crate::lifecycle::tunnels::Selection;
use crate::tunnel::ClosedBy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    fraction: Option<f64>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    how: Option<String>,
    #[serde(default)]
    code: Option<u16>,
}

/// Which tunnels, and how, from a request body; or why the body is refused.
pub fn parse(body: &[u8]) -> Result<(Selection, CloseHow), String> {
    let request: CloseRequest = serde_json::from_slice(body).map_err(|e| {
        format!("not a close request ({e}); send e.g. {{\"all\": true, \"how\": \"close\"}}")
    })?;
    let narrowed =
        request.fraction.is_some() || request.route.is_some() || request.client.is_some();
    if request.all == narrowed {
        return Err(if request.all {
            "\"all\" takes every tunnel; leave out fraction, route and client".into()
        } else {
            "say which tunnels: \"all\": true, or a \"fraction\", \"route\" or \"client\"".into()
        });
    }
    let fraction = request.fraction.unwrap_or(1.0);
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(format!("fraction {fraction} must be above 0 and at most 1"));
    }
    let client = match request.client.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<IpAddr>()
                .map_err(|_| format!("client \"{text}\" is not an IP address"))?,
        ),
    };
    let how = CloseHow::parse(request.how.as_deref().unwrap_or("fin"), request.code)?;
    let selection = Selection {
        route: request.route,
        client: client.map(canonical),
        fraction,
    };
    Ok((selection, how))
}

/// An IPv4 client on a dual-stack listener is its IPv4 address, as in the logs.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub async fn answer(
    request: Request<hyper::body::Incoming>,
    drain: &'static Drain,
    body_timeout: std::time::Duration,
) -> (u16, String) {
    let body = match super::purge::read_body(request, body_timeout, "close").await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let (selection, how) = match parse(&body) {
        Ok(parsed) => parsed,
        Err(reason) => return (400, format!("{reason}\n")),
    };
    let closed = drain.registry.close(&selection, ClosedBy::Admin, how);
    log::info!("admin: {closed} tunnel(s) told to close ({})", how.name());
    let reply = serde_json::json!({ "closed": closed, "how": how.name() });
    (200, reply.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_selector_and_how_parses() {
        let (all, how) = parse(br#"{"all": true}"#).unwrap();
        assert_eq!((all, how), (Selection::all(), CloseHow::Fin));
        let (some, how) = parse(br#"{"fraction": 0.5, "how": "rst"}"#).unwrap();
        assert_eq!((some.fraction, how), (0.5, CloseHow::Rst));
        let (route, how) = parse(br#"{"route": "chat", "how": "close"}"#).unwrap();
        assert_eq!(route.route.as_deref(), Some("chat"));
        assert_eq!(how, CloseHow::WebSocket(1001));
        let (client, how) =
            parse(br#"{"client": "::ffff:10.0.0.1", "how": "close", "code": 4000}"#).unwrap();
        assert_eq!(client.client, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(how, CloseHow::WebSocket(4000));
    }

    #[test]
    fn unclear_requests_are_refused_with_a_reason() {
        for body in [
            &br#"{}"#[..],
            br#"{"all": true, "route": "chat"}"#,
            br#"{"fraction": 1.5}"#,
            br#"{"client": "nobody"}"#,
            br#"{"all": true, "how": "close_1005"}"#,
            br#"{"all": true, "how": "fin", "code": 1001}"#,
            br#"{"all": true, "who": "me"}"#,
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
