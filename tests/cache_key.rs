//! The cache key cannot be poisoned (issue 15, section 1): each way one client could put its
//! variant under everyone's key, end to end with a real client, the edge in-process and
//! origins that build their answers from what they receive (as origins that build links
//! from `X-Forwarded-Host` do). Each case failed on the key of host + path + query. Input
//! the key does not cover (overrides, content, a client's claims) never reaches the store.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::edge::{client, group_yaml, node_yaml, TestEdge};
use common::origin::{Recorded, TestOrigin};
use common::tls::{tls_node_yaml, HttpsOrigin, TestPki};
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An origin named `name` whose cacheable answer says who answered, for which target, and
/// which host it would link to.
async fn linking_origin(name: &'static str) -> TestOrigin {
    TestOrigin::start(Arc::new(move |req: &Recorded| {
        let host = req
            .headers
            .get("x-forwarded-host")
            .map_or("-", |v| v.to_str().unwrap());
        let mut response = Response::new(Bytes::from(format!(
            "{name} {} link http://{host}/next",
            req.uri
        )));
        response
            .headers_mut()
            .insert("cache-control", "max-age=600".parse().unwrap());
        response
    }))
    .await
}

/// Routes `/*` to group `web` with caching on, plus `rules` (a rule set `tweaks` on the route
/// when not empty) and `groups` besides `web`.
fn cached_site(web: SocketAddr, rules: &str, groups: &str) -> String {
    let sets = if rules.is_empty() {
        "rule_sets: []\n".to_string()
    } else {
        format!("rule_sets:\n  - name: tweaks\n    rules:\n{rules}")
    };
    format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\n    rule_sets: [{}]\n{sets}origin_groups:\n{}{groups}",
        if rules.is_empty() { "" } else { "tweaks" },
        group_yaml("web", web),
    )
}

struct Fetched {
    x_cache: String,
    body: String,
}

async fn get(edge: &TestEdge, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let mut request = client().get(edge.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request through the edge");
    assert_eq!(response.status(), 200, "{path} {headers:?}");
    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
    let body = response.text().await.unwrap();
    Fetched { x_cache, body }
}

/// Sends `request` on a new connection and reads the whole answer (the request says
/// `Connection: close`).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_or_case_in_the_host_cannot_poison_the_key() {
    let origin = linking_origin("web").await;
    let edge = TestEdge::with_routes("", &cached_site(origin.addr(), "", "")).await;
    // The attacker goes first, with spellings the key folds away.
    for (path, attacker_host) in [("/port", "t.example:9999"), ("/case", "T.EXAMPLE")] {
        let first = get(&edge, path, &[("host", attacker_host)]).await;
        assert_eq!(first.x_cache, "TCP_MISS");
        let victim = get(&edge, path, &[("host", "t.example")]).await;
        assert_eq!(victim.x_cache, "TCP_HIT", "{path}: one object for the host");
        // What the origin linked to is the host the key used, for both of them.
        assert_eq!(
            victim.body,
            format!("web {path} link http://t.example/next"),
            "{path}: the attacker's Host {attacker_host} reached the origin"
        );
    }
    for seen in origin.requests() {
        assert_eq!(seen.headers["x-forwarded-host"], "t.example", "{seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_or_empty_hosts_are_refused_before_routing() {
    let origin = linking_origin("web").await;
    let edge = TestEdge::with_routes("", &cached_site(origin.addr(), "", "")).await;
    for (host, reason) in [
        ("", "the Host is empty"),
        ("t.example:99999", "port is not a number from 1 to 65535"),
        ("t.example:", "port is not a number"),
        ("t..example", "is not a host name"),
        ("t.example/evil", "is not a host name"),
        ("evil host", "not visible ASCII"),
        ("[nope]:80", "not an IPv6 address"),
    ] {
        let request = format!("GET /fresh HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = exchange(edge.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{host:?}: {answer}");
        let lower = answer.to_ascii_lowercase();
        assert!(
            lower.contains("x-portico-error: bad-host"),
            "{host:?}: {answer}"
        );
        assert!(answer.contains(reason), "{host:?}: {answer}");
    }
    assert_eq!(origin.count(), 0, "a refused host reached the origin");

    // HTTP/1.0 may name no host: its key has none, and neither has what is forwarded (a
    // client's own X-Forwarded-Host does not pass).
    let forged = exchange(
        edge.addr,
        b"GET /nohost HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    )
    .await;
    assert!(forged.contains("link http://-/next"), "{forged}");
    let again = exchange(edge.addr, b"GET /nohost HTTP/1.0\r\n\r\n").await;
    assert!(again.contains("link http://-/next"), "{again}");
    assert!(!origin.requests()[0]
        .headers
        .contains_key("x-forwarded-host"));
}

/// An origin on a raw socket that records each request line and, like many, refuses an
/// absolute-form target with a cacheable 404.
async fn strict_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // Keep-alive: one request head after another on the connection.
                let mut buffer = Vec::new();
                loop {
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                    buffer.drain(..end);
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let target = line.split(' ').nth(1).unwrap_or_default().to_string();
                    seen.lock().unwrap().push(line);
                    let (status, body) = if target.starts_with('/') {
                        ("200 OK", format!("page {target}"))
                    } else {
                        ("404 Not Found", "no such page".to_string())
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nCache-Control: max-age=600\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_reach_the_origin_in_origin_form() {
    let (origin, lines) = strict_origin().await;
    let edge = TestEdge::with_routes("", &cached_site(origin, "", "")).await;
    let answer = exchange(
        edge.addr,
        b"GET http://t.example/abs?x=1 HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("page /abs?x=1"), "{answer}");
    // Over HTTP/1.0, with no Host header, the target's authority names the host (HTTP/1.1
    // needs the header all the same: RFC 9112 §3.2, `tests/bad_input.rs`).
    let bare = exchange(edge.addr, b"GET http://T.example/abs2 HTTP/1.0\r\n\r\n").await;
    assert!(bare.ends_with("page /abs2"), "{bare}");
    assert_eq!(
        *lines.lock().unwrap(),
        ["GET /abs?x=1 HTTP/1.1", "GET /abs2 HTTP/1.1"]
    );
    // The normal URL is served the page, from the cache.
    let normal = get(&edge, "/abs?x=1", &[("host", "t.example")]).await;
    assert_eq!(
        (normal.x_cache.as_str(), normal.body.as_str()),
        ("TCP_HIT", "page /abs?x=1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_conditioned_route_override_gets_its_own_key() {
    let web = linking_origin("web").await;
    let beta = linking_origin("beta").await;
    let rules = "      - name: beta-testers\n        conditions:\n          - {match: request_header, selector: X-Variant, values: [beta]}\n        actions:\n          - {type: route_override, origin_group: beta}\n";
    let edge = TestEdge::with_routes(
        "",
        &cached_site(web.addr(), rules, &group_yaml("beta", beta.addr())),
    )
    .await;
    let host = ("host", "t.example");
    let first = get(&edge, "/home", &[host, ("x-variant", "beta")]).await;
    assert!(first.body.starts_with("beta /home"), "{}", first.body);
    let everyone = get(&edge, "/home", &[host]).await;
    assert_eq!(
        everyone.x_cache, "TCP_MISS",
        "the beta object was served to everyone"
    );
    assert!(everyone.body.starts_with("web /home"), "{}", everyone.body);
    // Each variant is cached under its own key.
    assert_eq!(get(&edge, "/home", &[host]).await.x_cache, "TCP_HIT");
    let beta_again = get(&edge, "/home", &[host, ("x-variant", "beta")]).await;
    assert_eq!(beta_again.x_cache, "TCP_HIT");
    assert!(beta_again.body.starts_with("beta /home"));
    assert_eq!((web.count(), beta.count()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_conditioned_url_rewrite_gets_its_own_key() {
    let web = linking_origin("web").await;
    let rules = "      - name: legacy-clients\n        conditions:\n          - {match: request_header, selector: X-Legacy, operator: any}\n        actions:\n          - {type: url_rewrite, source_pattern: /app/, destination: /legacy/}\n";
    let edge = TestEdge::with_routes("", &cached_site(web.addr(), rules, "")).await;
    let host = ("host", "t.example");
    let legacy = get(&edge, "/app/x", &[host, ("x-legacy", "1")]).await;
    assert!(legacy.body.starts_with("web /legacy/x"), "{}", legacy.body);
    let modern = get(&edge, "/app/x", &[host]).await;
    assert_eq!(
        modern.x_cache, "TCP_MISS",
        "the rewritten object was served to everyone"
    );
    assert!(modern.body.starts_with("web /app/x"), "{}", modern.body);
    // A rewrite lands on the object of its upstream path: the legacy view of `/app/x` is
    // the object clients of `/legacy/x` get.
    let direct = get(&edge, "/legacy/x", &[host]).await;
    assert_eq!(direct.x_cache, "TCP_HIT");
    assert!(direct.body.starts_with("web /legacy/x"), "{}", direct.body);
    assert_eq!(web.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_https_to_different_origin_ports_get_different_keys() {
    const WWW: &str = "www.example.test";
    let pki = TestPki::new();
    let cert = pki.issue("www", &[WWW]);
    let origin_cert = pki.issue("origin", &["origin.internal"]);
    let plain = TestOrigin::ok(&[]).await;
    let secure = HttpsOrigin::start(&origin_cert).await;
    // `match_request`: http goes to the origin's address, https to its https_port.
    let rules = format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: both\n    forwarding_protocol: match_request\n    cache: {{ enabled: true, behavior: override_always, duration: 10m }}\norigin_groups:\n  - name: both\n    ca_file: {}\n    origins:\n      - address: {}\n        https_port: {}\n        host_header: origin.internal\n",
        pki.ca_path().display(),
        plain.addr(),
        secure.addr.port()
    );
    let edge = TestEdge::start(&tls_node_yaml(&[&cert], ""), &rules).await;
    let https = pki.https_client(&[WWW], edge.tls_addr.unwrap());
    let over_tls = https
        .get(format!("https://{WWW}/s/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(over_tls.headers()["x-cache"], "TCP_MISS");
    assert_eq!(over_tls.text().await.unwrap(), "tls origin /s/a");
    let over_http = get(&edge, "/s/a", &[("host", WWW)]).await;
    assert_eq!(
        over_http.x_cache, "TCP_MISS",
        "the https object was served over http"
    );
    assert_eq!(over_http.body, "origin /s/a");
    assert_eq!(
        get(&edge, "/s/a", &[("host", WWW)]).await.x_cache,
        "TCP_HIT"
    );
    assert_eq!((plain.count(), secure.count()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_serve_different_sites_each_with_its_own_key() {
    let (a, b) = (
        linking_origin("site-a").await,
        linking_origin("site-b").await,
    );
    let node = node_yaml("").replace(
        "listeners:\n  - address: 127.0.0.1:1\n",
        "listeners:\n  - address: 127.0.0.1:1\n    name: front-a\n  - address: 127.0.0.1:2\n    name: front-b\n",
    );
    let rules = format!(
        "routes:\n  - name: a\n    patterns: [\"/*\"]\n    listeners: [front-a]\n    origin_group: a\n    cache: {{ enabled: true }}\n  - name: b\n    patterns: [\"/*\"]\n    listeners: [front-b]\n    origin_group: b\n    cache: {{ enabled: true }}\norigin_groups:\n{}{}",
        group_yaml("a", a.addr()),
        group_yaml("b", b.addr())
    );
    let edge = TestEdge::start(&node, &rules).await;
    let url = |i: usize| format!("http://{}/page", edge.addrs[i]);
    for round in ["TCP_MISS", "TCP_HIT"] {
        for (i, site) in [(0, "site-a"), (1, "site-b")] {
            let response = client()
                .get(url(i))
                .header("host", "shop.example")
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()["x-cache"], round, "{site}");
            let body = response.text().await.unwrap();
            assert!(body.starts_with(&format!("{site} /page")), "{site}: {body}");
        }
    }
    assert_eq!((a.count(), b.count()), (1, 1));
}

/// An origin that answers by what frameworks read besides the key: a method or target
/// override, the request's content, the scheme and port a client claims. Cacheable.
async fn obliging_origin() -> TestOrigin {
    TestOrigin::start(Arc::new(|req: &Recorded| {
        let field = |name: &str| {
            req.headers
                .get(name)
                .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
        };
        let overrides: Vec<String> = [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-url",
            "x-rewrite-url",
        ]
        .iter()
        .filter(|name| req.headers.contains_key(**name))
        .map(|name| field(name))
        .collect();
        let mut response = Response::new(Bytes::from(format!(
            "{} as [{}] over {}:{} with {} bytes",
            req.uri,
            overrides.join(","),
            field("x-forwarded-scheme"),
            field("x-forwarded-port"),
            req.body.len()
        )));
        response
            .headers_mut()
            .insert("cache-control", "max-age=600".parse().unwrap());
        response
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_the_key_does_not_cover_never_reaches_the_store() {
    let origin = obliging_origin().await;
    let edge = TestEdge::with_routes("", &cached_site(origin.addr(), "", "")).await;
    let plain = "/p as [] over -:- with 0 bytes";
    // Overrides and content: the attacker's request goes to the origin as it came, and its
    // answer is not stored; the victim's is.
    for (path, override_field) in [
        ("/p", ("x-http-method-override", "DELETE")),
        ("/p", ("X-HTTP-Method", "PUT")),
        ("/p", ("x-method-override", "DELETE")),
        ("/p", ("x-original-url", "/admin")),
        ("/p", ("x-rewrite-url", "/admin")),
    ] {
        let attack = get(&edge, path, &[override_field]).await;
        assert_eq!(attack.x_cache, "UNCACHEABLE", "{override_field:?}");
        assert_ne!(attack.body, plain, "{override_field:?} reached the origin");
    }
    let fat = client()
        .get(edge.url("/p"))
        .body("q=attacker")
        .send()
        .await
        .unwrap();
    assert_eq!(fat.headers()["x-cache"], "UNCACHEABLE");
    assert!(fat.text().await.unwrap().ends_with("with 10 bytes"));
    let victim = get(&edge, "/p", &[]).await;
    assert_eq!(
        (victim.x_cache.as_str(), victim.body.as_str()),
        ("TCP_MISS", plain)
    );
    assert_eq!(get(&edge, "/p", &[]).await.x_cache, "TCP_HIT");
    // Claims about the connection are not passed on from an untrusted client: its request
    // is answered as anyone's, and may be stored.
    let claims = [
        ("x-forwarded-scheme", "http"),
        ("x-forwarded-port", "8080"),
        ("x-forwarded-protocol", "http"),
        ("front-end-https", "on"),
        // CGI-style origins read `_` as `-`.
        ("x_forwarded_host", "evil.example"),
        ("x_http_method_override", "DELETE"),
    ];
    let claimed = get(&edge, "/q", &claims).await;
    assert_eq!(
        (claimed.x_cache.as_str(), claimed.body.as_str()),
        ("TCP_MISS", "/q as [] over -:- with 0 bytes")
    );
    for seen in origin.requests() {
        for name in [
            "x-forwarded-scheme",
            "x-forwarded-port",
            "x-forwarded-protocol",
            "front-end-https",
            "x_forwarded_host",
            "x_http_method_override",
        ] {
            assert!(
                !seen.headers.contains_key(name),
                "{name} reached the origin: {seen:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_cannot_hide_from_the_key_in_another_spelling() {
    let origin = linking_origin("web").await;
    let with_mode = |mode: &str| {
        cached_site(origin.addr(), "", "").replace(
            "cache: { enabled: true }",
            &format!("cache: {{ enabled: true, {mode} }}"),
        )
    };
    for (mode, attack, victim) in [
        // Rack reads `callback` in the excluded pair; PHP reads `utm` = "1;callback=x".
        (
            "query_string: exclude, query_params: [utm]",
            "/p?utm=1;callback=x",
            "/p?utm=2",
        ),
        // Every framework decodes `%61` to `a`; ASP.NET reads `A` as `a`.
        ("query_string: include, query_params: [a]", "/p?%61=x", "/p"),
        ("query_string: include, query_params: [a]", "/p?A=x", "/p"),
    ] {
        let edge = TestEdge::with_routes("", &with_mode(mode)).await;
        assert_eq!(get(&edge, attack, &[]).await.x_cache, "TCP_MISS", "{mode}");
        let answer = get(&edge, victim, &[]).await;
        assert_eq!(
            answer.x_cache, "TCP_MISS",
            "{mode}: {attack} was stored for {victim}"
        );
        assert!(!answer.body.contains("=x"), "{mode}: {}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origins_error_about_one_request_is_not_stored_for_everyone() {
    // An origin with a smaller header limit than the edge's, whose errors say `max-age`
    // (as many frameworks' defaults do).
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let oversized = req.headers.iter().any(|(_, v)| v.len() > 8192);
        let mut response = Response::new(Bytes::from(if oversized { "too big" } else { "page" }));
        if oversized {
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
        }
        response
            .headers_mut()
            .insert("cache-control", "public, max-age=600".parse().unwrap());
        response
    }))
    .await;
    let edge = TestEdge::with_routes("", &cached_site(origin.addr(), "", "")).await;
    let junk = "x".repeat(10_000);
    let attack = client()
        .get(edge.url("/page"))
        .header("x-junk", junk.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(attack.status(), 400);
    assert_eq!(attack.headers()["x-cache"], "UNCACHEABLE");
    // The victim gets the page, and the page is stored (the key was not marked
    // uncacheable by the error).
    let victim = get(&edge, "/page", &[]).await;
    assert_eq!(
        (victim.x_cache.as_str(), victim.body.as_str()),
        ("TCP_MISS", "page")
    );
    assert_eq!(get(&edge, "/page", &[]).await.x_cache, "TCP_HIT");
}

/// Web cache deception: a victim lured to `/account/avatar.css` gets their account page
/// (the origin ignores the suffix), and a rule that caches `.css` for an hour must not
/// store it for the attacker to read. The page's `Content-Type` gives it away; a real
/// stylesheet is still cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_page_under_a_static_files_name_is_not_stored() {
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let (content_type, body) = if req.path().starts_with("/static/") {
            ("text/css", "body{}".to_string())
        } else {
            let cookie = req
                .headers
                .get("cookie")
                .map_or("-", |v| v.to_str().unwrap());
            ("text/html; charset=utf-8", format!("account of {cookie}"))
        };
        let mut response = Response::new(Bytes::from(body));
        response
            .headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        response
    }))
    .await;
    let assets = "      - name: assets\n        conditions:\n          - {match: file_extension, values: [css, png]}\n        actions:\n          - type: cache_expiration\n            behavior: override_always\n            duration: 1h\n";
    let edge = TestEdge::with_routes("", &cached_site(origin.addr(), assets, "")).await;
    for path in ["/account/avatar.css", "/account;x.css", "/account%2Fx.png"] {
        let victim = get(&edge, path, &[("cookie", "session=victim")]).await;
        assert_eq!(victim.body, "account of session=victim", "{path}");
        assert_eq!(victim.x_cache, "UNCACHEABLE", "{path}");
        let attacker = get(&edge, path, &[]).await;
        assert_eq!(attacker.body, "account of -", "{path}");
    }
    assert_eq!(
        get(&edge, "/static/site.css", &[]).await.x_cache,
        "TCP_MISS"
    );
    let again = get(&edge, "/static/site.css", &[]).await;
    assert_eq!(
        (again.x_cache.as_str(), again.body.as_str()),
        ("TCP_HIT", "body{}")
    );
}
