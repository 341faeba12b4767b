//! HTTP/2 rapid reset in its proxy form (CVE-2023-44487): a client that opens a stream,
//! waits until the edge has sent its request to the origin, resets it and goes on, makes
//! the origin work at its rate. Past a budget of resets (and more than half of its
//! streams), the edge closes the client's connection, with a GOAWAY that says why; a client
//! that cancels a few requests keeps its connection.

mod common;

use std::time::{Duration, Instant};

use common::gated::{Answer, Body, GatedOrigin};
use common::h2::{H2Edge, WWW};

/// The edge's budget (`connection::h2_resets::RESET_BUDGET`).
const RESET_BUDGET: usize = 100;

/// Sends `GET path` on `client` and waits until the origin has `arrived` requests in all;
/// then resets the stream. `false` once the connection is gone.
async fn open_and_reset(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    origin: &GatedOrigin,
    path: &str,
    arrived: usize,
) -> bool {
    let Ok(ready) = client.clone().ready().await else {
        return false;
    };
    *client = ready;
    let request = http::Request::get(format!("https://{WWW}{path}"))
        .body(())
        .unwrap();
    let Ok((_, mut stream)) = client.send_request(request, true) else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.arrived() < arrived {
        if Instant::now() > deadline {
            return false; // not forwarded: the edge no longer reads this connection
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stream.send_reset(h2::Reason::CANCEL);
    true
}

/// An origin that answers `200 ok` once its gate opens (closed to begin with), and an
/// HTTP/2 edge in front of it.
async fn held_origin_and_edge() -> (GatedOrigin, H2Edge) {
    let origin = GatedOrigin::start(std::sync::Arc::new(|_, _| Answer {
        status: 200,
        headers: vec![],
        body: Body::full("ok"),
    }))
    .await;
    origin.close_gate();
    let h2 = H2Edge::start(origin.addr, "max_headers: 100").await;
    (origin, h2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_resets_most_of_its_streams_loses_its_connection() {
    // Every response waits: each stream is still open when the client resets it.
    let (origin, h2) = held_origin_and_edge().await;
    let (mut client, connection) = h2.client().await;

    // Some cancels, then a request that completes: the connection stays.
    for n in 1..=RESET_BUDGET / 2 {
        assert!(open_and_reset(&mut client, &origin, &format!("/cancel/{n}"), n).await);
    }
    origin.open_gate();
    let mut ready = client.clone().ready().await.unwrap();
    let request = http::Request::get(format!("https://{WWW}/kept"))
        .body(())
        .unwrap();
    let (response, _) = ready.send_request(request, true).unwrap();
    let mut body = response.await.unwrap();
    assert_eq!(body.status(), 200);
    // Read to its end, so that dropping it resets nothing.
    while let Some(chunk) = body.body_mut().data().await {
        chunk.unwrap();
    }
    origin.close_gate();

    // Resets go on, each once the origin has the request, up to the budget (of 101 streams
    // opened, 100 reset); the client then stops, so that the connection's end is the
    // edge's doing (a request written as the edge closes would end it with a broken pipe).
    for n in 1..=RESET_BUDGET / 2 {
        let sent = RESET_BUDGET / 2 + n;
        let path = format!("/reset/{sent}");
        let reset = open_and_reset(&mut client, &origin, &path, sent + 1).await;
        let resets = RESET_BUDGET / 2 + n - 1;
        assert!(reset, "the connection ended after {resets} resets");
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    let error = ended
        .expect("the connection's task did not end")
        .expect("the connection's task panicked")
        .expect_err("the connection ended without an error");
    // The client was told why (RFC 9113 §5.4.1).
    assert!(error.is_go_away(), "{error:?}");
    assert_eq!(error.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM));
    assert!(
        origin.arrived() <= RESET_BUDGET + 10,
        "the origin got {} requests",
        origin.arrived()
    );

    // Another connection is served.
    origin.open_gate();
    let (client, _connection) = h2.client().await;
    let request = http::Request::get(format!("https://{WWW}/after"))
        .body(())
        .unwrap();
    let (response, _) = client
        .ready()
        .await
        .unwrap()
        .send_request(request, true)
        .unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
}

/// A stream the client resets before its answer ends its request: the edge notices the
/// reset while it waits for the origin, and the request is not sent to an origin again.
/// Its log line says no response went out (status 0, as for an HTTP/1 client that closes
/// its connection), not that the client sent a bad request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_before_its_answer_is_not_retried() {
    let (origin, h2) = held_origin_and_edge().await;
    let (mut client, _connection) = h2.client().await;
    assert!(open_and_reset(&mut client, &origin, "/cancelled", 1).await);
    // The origin still holds its answer: the request ends on the reset alone.
    let lines = h2
        .edge
        .wait_for_log(|lines| lines.iter().any(|l| l["path"] == "/cancelled"))
        .await;
    let line = lines.iter().find(|l| l["path"] == "/cancelled").unwrap();
    assert_eq!(line["attempts"], 1, "{line}");
    assert_eq!(line["status"], 0, "{line}");
    origin.open_gate();
    assert_eq!(origin.arrived(), 1);
}
