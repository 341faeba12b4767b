//! How many writes a small response takes to an HTTP/2 client. Each write of the h2
//! connection is one TLS record (the edge's TLS layer seals each write on its own), so the
//! records that reach the client count the edge's writes. A small response, hit or
//! pass-through, leaves in one: its HEADERS frame, its DATA frame and the END_STREAM flag
//! on that frame. (A hit's END_STREAM came in an empty frame of its own, and a
//! pass-through response's HEADERS before its body: two records, two system calls and two
//! wake-ups of the client a response; see `vendor/README.md`, *HTTP/2 head with its body*
//! and *Hit body ends with its last chunk*.) Small responses asked for at once on one
//! connection share writes (h2 wrote each DATA frame on its own: *Small DATA frames
//! batched*). A small hit's body is one DATA frame, which ends the stream. And the
//! fields hits repeat go as indexes into the connection's HPACK table, which a value new
//! on every response must not crowd (the request id).

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::h2::{H2Edge, WWW};
use common::origin::TestOrigin;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client's stream that reads length-prefixed units (TLS records, h2 frames): a header
/// of `N` bytes, then as many bytes as `on_header` (shown each header) says.
struct Tap<S, const N: usize, F> {
    inner: S,
    on_header: F,
    /// The unit header being read, and how much of it has come.
    header: [u8; N],
    header_read: usize,
    /// Bytes of the current unit still to come.
    payload_left: usize,
}

impl<S, const N: usize, F: FnMut(&[u8; N]) -> usize> Tap<S, N, F> {
    fn new(inner: S, on_header: F) -> Tap<S, N, F> {
        Tap {
            inner,
            on_header,
            header: [0; N],
            header_read: 0,
            payload_left: 0,
        }
    }

    fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len());
                self.payload_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            self.header[self.header_read] = bytes[0];
            self.header_read += 1;
            bytes = &bytes[1..];
            if self.header_read == N {
                self.header_read = 0;
                self.payload_left = (self.on_header)(&self.header);
            }
        }
    }
}

impl<S, const N: usize, F> AsyncRead for Tap<S, N, F>
where
    S: AsyncRead + Unpin,
    F: FnMut(&[u8; N]) -> usize + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut me.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = buf.filled()[before..].to_vec();
            me.saw(&new);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin, const N: usize, F: Unpin> AsyncWrite for Tap<S, N, F> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A client's TCP stream that counts the TLS application-data records it reads (content
/// type 23, what TLS 1.3 calls every record after the handshake's first).
fn count_records(inner: TcpStream) -> (impl AsyncRead + AsyncWrite + Unpin, Arc<AtomicUsize>) {
    let records = Arc::new(AtomicUsize::new(0));
    let counted = records.clone();
    let tap = Tap::new(inner, move |header: &[u8; 5]| {
        if header[0] == 23 {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        usize::from(u16::from_be_bytes([header[3], header[4]]))
    });
    (tap, records)
}

/// A frame a client read: its type, flags, stream and payload length.
#[derive(Clone, Copy, Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    length: usize,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const END_STREAM: u8 = 1;

/// A client's h2 connection (under TLS, over the plain h2 bytes) that logs each frame it
/// reads.
fn log_frames<S: AsyncRead + AsyncWrite + Unpin>(
    inner: S,
) -> (
    impl AsyncRead + AsyncWrite + Unpin,
    Arc<std::sync::Mutex<Vec<Frame>>>,
) {
    let frames = Arc::new(std::sync::Mutex::new(Vec::new()));
    let logged = frames.clone();
    let tap = Tap::new(inner, move |header: &[u8; 9]| {
        let [a, b, c, kind, flags, s0, s1, s2, s3] = *header;
        let length = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
        logged.lock().unwrap().push(Frame {
            kind,
            flags,
            stream,
            length,
        });
        length
    });
    (tap, frames)
}

/// The body every response of the test origin has: 1 KiB, as a small static object.
fn body() -> Vec<u8> {
    (0..1024).map(|i| b'a' + (i % 26) as u8).collect()
}

/// An origin that answers every GET with [`body`] and `cache-control: cache_control`.
async fn origin(cache_control: &'static str) -> TestOrigin {
    TestOrigin::start(Arc::new(move |_| {
        let mut response = http::Response::new(Bytes::from(body()));
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static(cache_control),
        );
        response
    }))
    .await
}

/// An origin whose answers may be stored for ten minutes, and an edge that caches them.
async fn caching_edge() -> (TestOrigin, H2Edge) {
    let origin = origin("max-age=600").await;
    let edge =
        H2Edge::start_with_cache(origin.addr(), "max_headers: 100", "{ enabled: true }").await;
    (origin, edge)
}

/// GETs `path` on `client` and reads the whole response: its status and body.
async fn get(client: &h2::client::SendRequest<Bytes>, path: &str) -> (u16, Vec<u8>) {
    let request = http::Request::get(format!("https://{WWW}{path}"))
        .body(())
        .unwrap();
    let (response, _) = client
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(request, true)
        .unwrap();
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    (status, bytes)
}

/// A client on a new connection to `edge`, whose TLS records are counted.
async fn counted_client(edge: &H2Edge) -> (h2::client::SendRequest<Bytes>, Arc<AtomicUsize>) {
    let tcp = TcpStream::connect(edge.edge.tls_addr.unwrap())
        .await
        .unwrap();
    let (counted, records) = count_records(tcp);
    let tls = edge.connect_over(counted).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    (client, records)
}

/// The records the second of two GETs of `path` on one connection took (the first takes
/// the connection's own frames with it: settings and their acknowledgements).
async fn records_of_second_response(edge: &H2Edge, path: &str) -> usize {
    let (client, records) = counted_client(edge).await;
    assert_eq!(get(&client, path).await, (200, body()));
    let before = records.load(Ordering::SeqCst);
    assert_eq!(get(&client, path).await, (200, body()));
    records.load(Ordering::SeqCst) - before
}

#[tokio::test]
async fn a_small_hit_reaches_an_http2_client_in_one_write() {
    let (origin, edge) = caching_edge().await;
    // The first GET stores it, the second is the hit.
    assert_eq!(records_of_second_response(&edge, "/hit").await, 1);
    assert_eq!(origin.count_path("/hit"), 1, "the second GET was a hit");
}

#[tokio::test]
async fn a_small_pass_through_response_reaches_an_http2_client_in_one_write() {
    let origin = origin("no-store").await;
    let edge = H2Edge::start(origin.addr(), "max_headers: 100").await;
    assert_eq!(records_of_second_response(&edge, "/pass").await, 1);
    assert_eq!(
        origin.count_path("/pass"),
        2,
        "both GETs went to the origin"
    );
}

/// Ten hits asked for at once on one connection come back in a few writes, not one each
/// (`vendor/README.md`, *Small DATA frames batched*: every DATA frame of 256 bytes or more
/// left in a write of its own).
#[tokio::test]
async fn ten_small_hits_asked_at_once_share_the_edges_writes() {
    let (origin, edge) = caching_edge().await;
    let (client, records) = counted_client(&edge).await;
    assert_eq!(get(&client, "/ten").await, (200, body()));
    let before = records.load(Ordering::SeqCst);
    let gets: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, "/ten").await })
        })
        .collect();
    for got in gets {
        assert_eq!(got.await.unwrap(), (200, body()));
    }
    let took = records.load(Ordering::SeqCst) - before;
    assert!(took <= 4, "ten hits took {took} records");
    assert_eq!(origin.count_path("/ten"), 1, "nine of them were hits");
}

/// A connection that has had no stream in flight long enough for the edge to free its
/// buffers (`RELEASE_BUFFERS_AFTER`; `vendor/README.md`, *Idle HTTP/2 buffers released*)
/// serves as before: a hit in one write, then ten at once in a few. The wait is the idle
/// time under test, not a synchronisation.
#[tokio::test]
async fn a_connection_idle_past_its_buffers_release_serves_as_before() {
    use pingora_core::protocols::http::v2::server::RELEASE_BUFFERS_AFTER;
    let deadline = std::time::Duration::from_secs(10);
    let (origin, edge) = caching_edge().await;
    let (client, records) = counted_client(&edge).await;
    assert_eq!(get(&client, "/idle").await, (200, body()));
    tokio::time::sleep(RELEASE_BUFFERS_AFTER * 2).await;
    let before = records.load(Ordering::SeqCst);
    let got = tokio::time::timeout(deadline, get(&client, "/idle")).await;
    assert_eq!(got.expect("an answer after the release"), (200, body()));
    assert_eq!(records.load(Ordering::SeqCst) - before, 1);
    tokio::time::sleep(RELEASE_BUFFERS_AFTER * 2).await;
    let gets: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { tokio::time::timeout(deadline, get(&client, "/idle")).await })
        })
        .collect();
    for got in gets {
        assert_eq!(got.await.unwrap().expect("an answer"), (200, body()));
    }
    assert_eq!(origin.count_path("/idle"), 1, "the rest were hits");
}

/// A client on a new connection to `edge`, whose frames are logged.
async fn logged_client(
    edge: &H2Edge,
) -> (
    h2::client::SendRequest<Bytes>,
    Arc<std::sync::Mutex<Vec<Frame>>>,
) {
    let tcp = TcpStream::connect(edge.edge.tls_addr.unwrap())
        .await
        .unwrap();
    let (logged, frames) = log_frames(edge.connect_over(tcp).await);
    let (client, connection) = h2::client::handshake(logged).await.unwrap();
    tokio::spawn(connection);
    (client, frames)
}

/// The frames of type `kind` logged so far, in the order read.
fn frames_of_kind(frames: &std::sync::Mutex<Vec<Frame>>, kind: u8) -> impl Iterator<Item = Frame> {
    let logged = frames.lock().unwrap().clone();
    logged.into_iter().filter(move |frame| frame.kind == kind)
}

/// A small hit's body is one DATA frame that ends the stream, not that frame and then an
/// empty one to end it (`vendor/README.md`, *Hit body ends with its last chunk*: the chunk
/// that completes the head's `Content-Length` ends the body).
#[tokio::test]
async fn a_small_hits_body_ends_its_stream_in_its_one_data_frame() {
    let (origin, edge) = caching_edge().await;
    let (client, frames) = logged_client(&edge).await;
    assert_eq!(get(&client, "/one").await, (200, body()));
    assert_eq!(get(&client, "/one").await, (200, body()));
    assert_eq!(origin.count_path("/one"), 1, "the second GET was a hit");
    // The client's streams are 1 and 3: the hit is stream 3.
    let data: Vec<Frame> = frames_of_kind(&frames, DATA)
        .filter(|frame| frame.stream == 3)
        .collect();
    assert!(
        data.len() == 1 && data[0].flags & END_STREAM != 0 && data[0].length == body().len(),
        "the hit's DATA frames: {data:?}"
    );
}

/// The fields a hit repeats stay in the connection's HPACK table, so every hit after the
/// first sends them as one-byte indexes and its HEADERS frame keeps one size. The request
/// id (`x-portico-ref`) is new on every response: indexed, each would take a place in the
/// table (about 70 of its 4,096 bytes), and every sixty responses or so the repeated
/// fields, pushed out, would go in full again.
#[tokio::test]
async fn fields_a_hit_repeats_stay_in_the_http2_table_over_many_hits() {
    let (origin, edge) = caching_edge().await;
    let (client, frames) = logged_client(&edge).await;
    for _ in 0..200 {
        assert_eq!(get(&client, "/many").await, (200, body()));
    }
    assert_eq!(origin.count_path("/many"), 1, "all but the first were hits");
    let lengths: Vec<usize> = frames_of_kind(&frames, HEADERS)
        .map(|frame| frame.length)
        .collect();
    assert_eq!(lengths.len(), 200);
    // The first response (the miss) and the first hit put the repeated fields in the table.
    let hits = &lengths[2..];
    let (least, most) = (hits.iter().min().unwrap(), hits.iter().max().unwrap());
    assert!(
        most - least <= 4,
        "HEADERS frames of hits from {least} to {most} bytes: {lengths:?}"
    );
}
