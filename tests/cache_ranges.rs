//! Ranges on cache misses (`cache::range_miss`): the origin is asked for the part the client
//! asked for, never the whole object (RangeAmp's small-byte-range amplification), and a
//! request for all of the object stores it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::edge::{client, group_yaml, TestEdge};
use common::origin::{Recorded, TestOrigin};
use http::{Response, StatusCode};

const SIZE: usize = 1 << 20;

/// An origin with one cacheable 1 MiB object at every path, which honours a single
/// `first-last` range (and `If-Range` with its ETag) as a `206`, and counts the body bytes
/// it sends.
async fn range_origin(sent: Arc<AtomicUsize>) -> TestOrigin {
    TestOrigin::start(Arc::new(move |request: &Recorded| {
        let body: Vec<u8> = (0..SIZE).map(|i| b'a' + (i % 26) as u8).collect();
        let if_range_holds = request
            .headers
            .get("if-range")
            .is_none_or(|validator| validator == "\"v1\"");
        let part = request
            .headers
            .get("range")
            .and_then(|r| r.to_str().ok()?.strip_prefix("bytes="))
            .and_then(|spec| {
                let (first, last) = spec.split_once('-')?;
                Some((first.parse::<usize>().ok()?, last.parse::<usize>().ok()?))
            })
            .filter(|&(first, last)| if_range_holds && first <= last && last < SIZE);
        let mut response = match part {
            Some((first, last)) => {
                let mut response = Response::new(Bytes::copy_from_slice(&body[first..=last]));
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let range = format!("bytes {first}-{last}/{SIZE}");
                response
                    .headers_mut()
                    .insert("content-range", range.parse().unwrap());
                response
            }
            None => Response::new(Bytes::from(body)),
        };
        sent.fetch_add(response.body().len(), Ordering::Relaxed);
        let headers = response.headers_mut();
        let cache_control = match request.path() {
            "/swr" => "max-age=0, stale-while-revalidate=600",
            _ => "max-age=600",
        };
        headers.insert("cache-control", cache_control.parse().unwrap());
        headers.insert("etag", "\"v1\"".parse().unwrap());
        headers.insert("accept-ranges", "bytes".parse().unwrap());
        response
    }))
    .await
}

fn routes(origin: std::net::SocketAddr) -> String {
    format!(
        "routes:\n  - name: files\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true, query_string: use_all }}\norigin_groups:\n{}",
        group_yaml("web", origin)
    )
}

struct Answer {
    status: u16,
    x_cache: String,
    content_range: String,
    body: Bytes,
}

async fn fetch(edge: &TestEdge, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = client().get(edge.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("a response through the edge");
    let field = |name: &str| {
        response
            .headers()
            .get(name)
            .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
    };
    let (status, x_cache, content_range) = (
        response.status().as_u16(),
        field("x-cache"),
        field("content-range"),
    );
    let body = response.bytes().await.expect("the body");
    Answer {
        status,
        x_cache,
        content_range,
        body,
    }
}

/// What the origin was asked for `uri`, by its `Range` fields, in order.
fn ranges_asked(origin: &TestOrigin, uri: &str) -> Vec<Option<String>> {
    origin
        .requests()
        .iter()
        .filter(|r| r.uri == uri)
        .map(|r| {
            r.headers
                .get("range")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_miss_asks_the_origin_for_its_part_and_a_whole_request_stores() {
    let sent = Arc::new(AtomicUsize::new(0));
    let origin = range_origin(sent.clone()).await;
    let edge = TestEdge::with_routes("", &routes(origin.addr())).await;

    // Forty one-byte requests with keys of their own cost the origin forty bytes, not
    // forty megabytes.
    for n in 0..40 {
        let part = fetch(&edge, &format!("/big?n={n}"), &[("range", "bytes=0-0")]).await;
        assert_eq!(
            (part.status, part.x_cache.as_str(), &part.body[..]),
            (206, "TCP_MISS", &b"a"[..])
        );
        assert_eq!(part.content_range, format!("bytes 0-0/{SIZE}"));
    }
    assert_eq!(
        sent.load(Ordering::Relaxed),
        40,
        "body bytes the origin sent"
    );
    assert_eq!(
        ranges_asked(&origin, "/big?n=7"),
        [Some("bytes=0-0".into())]
    );

    // A part is not stored: the same part again goes to the origin, for that part.
    let again = fetch(&edge, "/big?n=7", &[("range", "bytes=1-2")]).await;
    assert_eq!(
        (again.x_cache.as_str(), &again.body[..]),
        ("TCP_MISS", &b"bc"[..])
    );
    // The whole object is fetched whole and stored; its parts then come from the cache.
    let whole = fetch(&edge, "/big?n=7", &[]).await;
    assert_eq!((whole.status, whole.x_cache.as_str()), (200, "TCP_MISS"));
    assert_eq!(whole.body.len(), SIZE);
    let hit = fetch(&edge, "/big?n=7", &[("range", "bytes=26-27")]).await;
    assert_eq!(
        (hit.status, hit.x_cache.as_str(), &hit.body[..]),
        (206, "TCP_HIT", &b"ab"[..])
    );
    assert_eq!(
        ranges_asked(&origin, "/big?n=7"),
        [Some("bytes=0-0".into()), Some("bytes=1-2".into()), None]
    );

    // `bytes=0-` asks for all of it: fetched whole, stored, and answered whole.
    let from_start = fetch(&edge, "/big?all", &[("range", "bytes=0-")]).await;
    assert_eq!(from_start.body.len(), SIZE);
    assert_eq!(ranges_asked(&origin, "/big?all"), [None]);
    assert_eq!(fetch(&edge, "/big?all", &[]).await.x_cache, "TCP_HIT");
}

/// `If-Range` guards the part: forwarded without it, a resumed download would splice a part
/// of a changed object onto the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_range_goes_with_the_range_and_a_changed_object_comes_whole() {
    let origin = range_origin(Arc::new(AtomicUsize::new(0))).await;
    let edge = TestEdge::with_routes("", &routes(origin.addr())).await;

    let current = fetch(
        &edge,
        "/big?r=1",
        &[("range", "bytes=2-3"), ("if-range", "\"v1\"")],
    )
    .await;
    assert_eq!((current.status, &current.body[..]), (206, &b"cd"[..]));
    let changed = fetch(
        &edge,
        "/big?r=2",
        &[("range", "bytes=2-3"), ("if-range", "\"v0\"")],
    )
    .await;
    assert_eq!((changed.status, changed.body.len()), (200, SIZE));
    let asked = origin.requests();
    let if_range = |uri: &str| {
        asked
            .iter()
            .find(|r| r.uri == uri)
            .and_then(|r| r.headers.get("if-range").cloned())
    };
    assert_eq!(if_range("/big?r=1").unwrap(), "\"v1\"");
    assert_eq!(if_range("/big?r=2").unwrap(), "\"v0\"");
    // The whole answer to the changed object was stored.
    assert_eq!(fetch(&edge, "/big?r=2", &[]).await.x_cache, "TCP_HIT");
}

/// A part of a stored object that has gone stale is served stale within
/// `stale-while-revalidate`, as a whole request is: the object is refreshed behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_of_a_stale_object_is_served_stale_within_stale_while_revalidate() {
    let origin = range_origin(Arc::new(AtomicUsize::new(0))).await;
    let edge = TestEdge::with_routes("", &routes(origin.addr())).await;

    assert_eq!(fetch(&edge, "/swr", &[]).await.x_cache, "TCP_MISS");
    let part = fetch(&edge, "/swr", &[("range", "bytes=0-1")]).await;
    assert_eq!(
        (part.status, part.x_cache.as_str(), &part.body[..]),
        (206, "TCP_EXPIRED_HIT", &b"ab"[..])
    );
}
