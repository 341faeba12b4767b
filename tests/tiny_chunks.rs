//! Chunked bodies in tiny chunks, both ways: the edge passes on what it has read in one
//! piece, not one chunk (one write onward) per chunk. A request body of one-byte chunks
//! cost the edge about 300 times the CPU per byte that 64 KiB chunks do, and a client
//! could send as many as `max_request_body` allows.

mod common;

use std::net::SocketAddr;

use common::edge::TestEdge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BYTES: usize = 1 << 16;

/// `n` one-byte chunks (`a` to `z` over and over) and the last chunk.
fn one_byte_chunks(n: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(n * 6 + 5);
    for i in 0..n {
        body.extend_from_slice(b"1\r\n");
        body.push(b'a' + (i % 26) as u8);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// Reads a chunked body from `stream` (after `already`, bytes read past the head) to its
/// last chunk: the payload and how many chunks carried it.
async fn read_chunked(stream: &mut TcpStream, mut already: Vec<u8>) -> (Vec<u8>, usize) {
    let (mut payload, mut chunks, mut at) = (Vec::new(), 0, 0);
    let mut buf = [0u8; 16384];
    loop {
        // Parse every complete chunk in what has arrived.
        while let Some(line_end) = already[at..].windows(2).position(|w| w == b"\r\n") {
            let size_text = std::str::from_utf8(&already[at..at + line_end]).unwrap();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap(), 16).unwrap();
            let data = at + line_end + 2;
            if size == 0 {
                return (payload, chunks);
            }
            if already.len() < data + size + 2 {
                break;
            }
            payload.extend_from_slice(&already[data..data + size]);
            chunks += 1;
            at = data + size + 2;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the body ended before its last chunk");
        already.extend_from_slice(&buf[..n]);
    }
}

/// What follows the head in `raw` (which holds the whole head).
fn after_head(raw: &[u8]) -> Vec<u8> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    raw[end..].to_vec()
}

fn rules(origin: SocketAddr) -> String {
    format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: false }}\norigin_groups:\n  - name: web\n    max_retries: 0\n    origins:\n      - address: {origin}\n"
    )
}

fn expected_payload() -> Vec<u8> {
    (0..BYTES).map(|i| b'a' + (i % 26) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_in_one_byte_chunks_reaches_the_origin_in_few_pieces() {
    // The origin answers with the chunk count it received and checks the payload.
    let (origin, _) = common::counting_origin(|mut stream| async move {
        let head = common::read_request_head(&mut stream).await.unwrap();
        let (payload, chunks) = read_chunked(&mut stream, after_head(&head)).await;
        let verdict = format!("{chunks} {}", payload == expected_payload());
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{verdict}",
            verdict.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
    })
    .await;
    let edge = TestEdge::with_routes("", &rules(origin)).await;

    let mut client = TcpStream::connect(edge.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nHost: t.example\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&one_byte_chunks(BYTES)).await.unwrap();
    let answer = common::read_to_close(&mut client).await;
    let verdict = answer.rsplit("\r\n\r\n").next().unwrap();
    let (chunks, intact) = verdict.split_once(' ').unwrap();
    assert_eq!(intact, "true", "{answer}");
    let chunks: usize = chunks.parse().unwrap();
    assert!(
        chunks <= BYTES / 256,
        "{chunks} chunks reached the origin for {BYTES} one-byte chunks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_in_one_byte_chunks_reaches_the_client_in_few_pieces() {
    let (origin, _) = common::counting_origin(|mut stream| async move {
        while common::read_request_head(&mut stream).await.is_some() {
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            let mut answer = head.as_bytes().to_vec();
            answer.extend_from_slice(&one_byte_chunks(BYTES));
            if stream.write_all(&answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let edge = TestEdge::with_routes("", &rules(origin)).await;

    let mut client = TcpStream::connect(edge.addr).await.unwrap();
    let request = "GET /chunks HTTP/1.1\r\nHost: t.example\r\n\r\n";
    client.write_all(request.as_bytes()).await.unwrap();
    let head = common::read_request_head(&mut client).await.unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let (payload, chunks) = read_chunked(&mut client, after_head(&head)).await;
    assert_eq!(payload, expected_payload());
    assert!(
        chunks <= BYTES / 256,
        "{chunks} chunks reached the client for {BYTES} one-byte chunks"
    );
}
