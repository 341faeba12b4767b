//! The fields an HTTP/2 response may not carry. RFC 9113 §8.2.2 forbids those specific to an
//! HTTP/1 connection (`Connection`, `Transfer-Encoding`, `Upgrade`, `Keep-Alive`,
//! `Proxy-Connection`, and `TE` with any value but `trailers`). Pingora's HTTP/2 writer
//! removes them from a response head (an HTTP/1 origin's head has them), and the h2
//! library refuses to send a head that still has one. Both look for them in one walk over
//! the head's names (`vendor/README.md`, *Connection-specific fields found in one pass*), so
//! each layer is tested here on its own, over real connections on loopback: a field at the
//! end of a head with others before it, each forbidden name, and the allowed `TE`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use pingora_core::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::Digest;
use pingora_http::ResponseHeader;
use tokio::net::{TcpListener, TcpStream};

/// The forbidden fields, as an HTTP/1 origin might send them.
const CONNECTION_SPECIFIC: [(&str, &str); 6] = [
    ("connection", "close"),
    ("transfer-encoding", "chunked"),
    ("upgrade", "h2c"),
    ("keep-alive", "timeout=5"),
    ("proxy-connection", "keep-alive"),
    ("te", "gzip"),
];

/// Ordinary fields, put before the one under test.
const ORDINARY: [(&str, &str); 4] = [
    ("server", "origin"),
    ("cache-control", "max-age=60"),
    ("x-one", "1"),
    ("x-two", "2"),
];

/// Both ends of a TCP connection on loopback: the client's, the server's.
async fn connected() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

/// The fields of the response an h2 client gets for one GET, or the stream's error.
async fn fields_received(io: TcpStream) -> Result<HeaderMap, h2::Error> {
    let (mut client, connection) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("https://example.test/")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    Ok(response.await?.into_parts().0.headers)
}

/// The ordinary fields, then `extra`.
fn fields(extra: &[(&'static str, &'static str)]) -> Vec<(HeaderName, HeaderValue)> {
    ORDINARY
        .iter()
        .chain(extra)
        .map(|&(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}

/// Whether the h2 library sends a response head with the ordinary fields and `extra`,
/// and what its client got (checked to agree).
async fn h2_library_sends(extra: Option<(&'static str, &'static str)>) -> bool {
    let (client_io, server_io) = connected().await;
    let client = tokio::spawn(fields_received(client_io));
    let mut server = h2::server::handshake(server_io).await.unwrap();
    let (request, mut respond) = server.accept().await.unwrap().unwrap();
    let mut response = Response::new(());
    response.headers_mut().extend(fields(extra.as_slice()));
    let sent = respond.send_response(response, true).is_ok();
    // A stream no handle refers to any more, and not answered, is reset.
    drop((request, respond));
    tokio::spawn(async move { while server.accept().await.is_some() {} });
    let received = client.await.unwrap();
    assert_eq!(received.is_ok(), sent, "{extra:?}: {received:?}");
    if let Ok(received) = received {
        assert_eq!(
            received.len(),
            ORDINARY.len() + usize::from(extra.is_some())
        );
    }
    sent
}

#[tokio::test]
async fn the_h2_library_refuses_to_send_a_connection_specific_field() {
    assert!(h2_library_sends(None).await);
    for field in CONNECTION_SPECIFIC {
        assert!(!h2_library_sends(Some(field)).await, "{field:?} was sent");
    }
    assert!(h2_library_sends(Some(("te", "trailers"))).await);
}

/// The fields a client gets when pingora-core's HTTP/2 session writes a head with the
/// ordinary fields and `extra`, then a body.
async fn pingora_writes(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let (client_io, server_io) = connected().await;
    let client = tokio::spawn(fields_received(client_io));
    let mut connection = handshake(Box::new(Stream::from(server_io)), None)
        .await
        .unwrap();
    let digest = Arc::new(Digest::default());
    let Ok(Some(H2Accept::Session(mut session))) =
        HttpSession::from_h2_conn(&mut connection, digest.clone()).await
    else {
        panic!("no request stream");
    };
    tokio::spawn(async move {
        while let Ok(Some(_)) = HttpSession::from_h2_conn(&mut connection, digest.clone()).await {}
    });
    let mut head = ResponseHeader::build(200, None).unwrap();
    for (name, value) in fields(extra) {
        head.append_header(name, value).unwrap();
    }
    session
        .write_response_header(Box::new(head), false)
        .unwrap();
    session
        .write_body(Bytes::from_static(b"body"), true)
        .await
        .unwrap();
    client.await.unwrap().expect("the response")
}

#[tokio::test]
async fn pingoras_http2_writer_removes_the_http1_connection_fields() {
    let plain = pingora_writes(&[]).await;
    for (name, value) in ORDINARY {
        assert_eq!(plain[name], value);
    }
    // Each alone, at the end of the head; then all of them.
    for field in &CONNECTION_SPECIFIC[..5] {
        let got = pingora_writes(std::slice::from_ref(field)).await;
        assert!(!got.contains_key(field.0), "{field:?} reached the client");
        assert!(ORDINARY.iter().all(|(name, _)| got.contains_key(*name)));
    }
    let got = pingora_writes(&CONNECTION_SPECIFIC[..5]).await;
    let names: Vec<_> = got.keys().map(HeaderName::as_str).collect();
    assert!(
        CONNECTION_SPECIFIC[..5]
            .iter()
            .all(|(name, _)| !got.contains_key(*name)),
        "{names:?}"
    );
    // `TE: trailers` is allowed, and kept.
    let got = pingora_writes(&[("te", "trailers")]).await;
    assert_eq!(got["te"], "trailers");
}
