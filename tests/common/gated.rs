//! An origin whose answers the test can hold: before the response starts (`gate`) and in
//! the middle of a body (`Body::pause_after`). It counts requests as they arrive, before any
//! gate, so a test can tell "the origin was asked" from "the origin answered".

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Response};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the origin answers to its `n`th request (counting from 1).
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

pub struct Body {
    pub chunks: Vec<Bytes>,
    /// After this many chunks, wait for a permit of `GatedOrigin::resume` before the rest.
    pub pause_after: Option<usize>,
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body {
            chunks: vec![bytes.into()],
            pause_after: None,
        }
    }
}

/// Permits of an open gate: more than any test sends.
const OPEN: usize = 1 << 20;

pub type Script = Arc<dyn Fn(usize, &HeaderMap) -> Answer + Send + Sync>;

pub struct GatedOrigin {
    pub addr: SocketAddr,
    arrived: Arc<AtomicUsize>,
    /// Each response takes one permit before it starts.
    pub gate: Arc<Semaphore>,
    /// A body paused by `pause_after` takes one permit to go on.
    pub resume: Arc<Semaphore>,
}

impl GatedOrigin {
    /// Starts on `127.0.0.1:0` with an open gate.
    pub async fn start(script: Script) -> GatedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let origin = GatedOrigin {
            addr: listener.local_addr().expect("addr"),
            arrived: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Semaphore::new(OPEN)),
            resume: Arc::new(Semaphore::new(0)),
        };
        let (arrived, gate, resume) = (
            origin.arrived.clone(),
            origin.gate.clone(),
            origin.resume.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, arrived, gate, resume) = (
                    script.clone(),
                    arrived.clone(),
                    gate.clone(),
                    resume.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let n = arrived.fetch_add(1, Ordering::SeqCst) + 1;
                        let answer = script(n, request.headers());
                        let (gate, resume) = (gate.clone(), resume.clone());
                        async move {
                            gate.acquire().await.expect("gate").forget();
                            Ok::<_, Infallible>(respond(answer, resume))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        origin
    }

    /// Requests that reached the origin, answered or not.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Closes the gate: responses wait until `open_gate`.
    pub fn close_gate(&self) {
        self.gate.forget_permits(usize::MAX);
    }

    pub fn open_gate(&self) {
        self.gate.add_permits(OPEN);
    }
}

type Frames = StreamBody<
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>,
>;

fn respond(answer: Answer, resume: Arc<Semaphore>) -> Response<Frames> {
    let pause_after = answer.body.pause_after;
    let chunks = answer.body.chunks.into_iter().enumerate();
    let frames = stream::unfold((chunks, resume), move |(mut chunks, resume)| async move {
        let (index, chunk) = chunks.next()?;
        if Some(index) == pause_after {
            resume.acquire().await.expect("resume").forget();
        }
        Some((Ok(Frame::data(chunk)), (chunks, resume)))
    });
    let mut response = Response::new(StreamBody::new(Box::pin(frames) as _));
    *response.status_mut() = http::StatusCode::from_u16(answer.status).expect("status");
    for (name, value) in answer.headers {
        response
            .headers_mut()
            .append(name, value.parse().expect("header value"));
    }
    response
}
