//! `cache_hit_head`: a plain cache hit's head written straight from the stored header's text
//! (a marked pingora-proxy patch asks for it, `vendor/README.md`).
//!
//! Pingora answers a hit by cloning the stored header (two header maps), inserting `Age`,
//! running the not-modified and range filters, the `response_filter` hook (which inserts
//! `X-Portico-Ref` and `X-Cache`) and the downstream modules on it, inserting `Date` (when
//! missing) and `Connection`, and only then serialising it; each insert may grow both maps,
//! and the clone is dropped afterwards. For a request none of those filters would change (a
//! `GET` with no conditional, no range, no upgrade, on a route that edits no response
//! header), the same bytes are written here in one pass over the stored text: the status
//! line, the stored fields in their order and case (the stored `Date`, the origin's, kept)
//! with `Age` and `Accept-Ranges` replaced in place, then `Age` and (on a `200`, from
//! Pingora's range filter) `Accept-Ranges` when the origin sent none, `X-Portico-Ref`,
//! `X-Cache` and `Date` (when the stored header has none), as `response_filter` and Pingora
//! would have added them; Pingora adds `Connection`. Tag headers are left out when the
//! node strips them. Anything else (`HEAD`, a stale or
//! revalidated hit, a header this cannot reproduce) goes Pingora's way. `tests/cache.rs`
//! checks both ways give the same bytes.
//!
//! The body of such a hit, when the store holds it in one piece (most objects), follows
//! in one write, straight from the object (`body_unfiltered`, another marked patch):
//! Portico filters no response body (no `response_body_filter`, no downstream module), so
//! nothing would change it on the way.

use bytes::BytesMut;
use http::header;
use pingora_cache::CachePhase;
use pingora_proxy::{HitHead, Session};

use crate::cache::header::write_field;
use crate::cache::store::hit_object;
use crate::config::model::Action;

use super::{caching, headers, RequestCtx};

/// Request fields that make a hit something other than the stored response as it is.
static FILTERED_BY: [header::HeaderName; 4] = [
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::UPGRADE,
];

/// The head of this hit, when it can be written from the stored text (see the module doc).
pub fn serialize(session: &mut Session, ctx: &mut RequestCtx) -> Option<HitHead> {
    if !ctx.caching || session.cache.phase() != CachePhase::Hit {
        return None;
    }
    let request = session.req_header();
    if request.method != http::Method::GET || headers::has_any_field(&request.headers, &FILTERED_BY)
    {
        return None;
    }
    let (snapshot, decision) = (ctx.snapshot.as_ref()?, ctx.decision.as_ref()?);
    let edits_response = snapshot
        .engine
        .fired_actions(decision)
        .any(|action| matches!(action, Action::ModifyResponseHeader(_)));
    if edits_response {
        return None;
    }
    // The fields the edge adds itself, and the tag headers, as `caching::strip_tag_headers`
    // strips them on Pingora's way (in order, too).
    let refused = [headers::REQUEST_ID, headers::X_CACHE];
    let stripped = caching::stripped_tag_headers(ctx);

    let object = hit_object(session.cache.hit_handler())?;
    let age = session.cache.cache_meta().age().as_secs();
    let mut age_text = [0u8; 20];
    let age = write_decimal(age, &mut age_text);
    let meta = object.meta();
    let stored = object.header(&meta);
    // Room for the stored lines, the status line, the fields added below, and Pingora's
    // `Connection` and blank line.
    let room = stored.text_len() + 224;
    let mut head = BytesMut::with_capacity(room);
    let fields = stored.write_hit_head(&mut head, age, &refused, stripped)?;

    let cache_status = caching::settle_cache_status(session, ctx);
    if !fields.age {
        write_field(&mut head, b"Age", age);
    }
    if !fields.accept_ranges && stored.status() == http::StatusCode::OK {
        write_field(&mut head, b"Accept-Ranges", b"bytes");
    }
    write_field(
        &mut head,
        headers::REQUEST_ID.as_bytes(),
        ctx.request_id.as_bytes(),
    );
    write_field(
        &mut head,
        headers::X_CACHE.as_bytes(),
        cache_status.as_bytes(),
    );
    if !fields.date {
        let date = pingora_core::protocols::http::date::get_cached_date();
        write_field(&mut head, b"Date", date.as_bytes());
    }
    // What `response_filter` records on its way.
    ctx.withheld.clear();
    ctx.response_status = Some(stored.status().as_u16());
    Some(HitHead {
        head,
        status: stored.status(),
        content_length: fields.content_length,
        // Portico has no response body filter, and no downstream module.
        body_unfiltered: true,
    })
}

/// `n` in decimal, in `buf`.
fn write_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `per_call` bytes a call, across the slices of a vectored
    /// write as a socket does, and counts its calls.
    #[derive(Default)]
    struct Trickle {
        taken: Vec<u8>,
        per_call: usize,
        calls: usize,
    }

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.per_call);
            self.taken.extend_from_slice(&buf[..n]);
            self.calls += 1;
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.per_call - n);
                self.taken.extend_from_slice(&buf[..take]);
                n += take;
            }
            self.calls += 1;
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// The write a plain hit's head and whole body go out in (a marked pingora-core patch)
    /// puts them on the wire in order however the socket splits it, a body in one piece
    /// or in chunks (empty ones among them, and more than one call's 64 slices), and counts
    /// what it wrote, also when the socket stops taking it.
    #[tokio::test]
    async fn a_head_and_body_written_together_arrive_whole_in_any_split() {
        use bytes::Bytes;
        use pingora_core::protocols::http::v1::server::write_all_parts;
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        let body = b"0123456789";
        let many: Vec<Bytes> = (0..150u8)
            .map(|i| Bytes::from(vec![b'a' + i % 26; usize::from(i % 3)]))
            .collect();
        let bodies: [&[&[u8]]; 3] = [&[body], &[b"", body, b"", b"x"], &[]];
        for per_call in [1, 3, 7, head.len(), head.len() + 1, 1000] {
            for parts in bodies {
                let mut writer = Trickle {
                    per_call,
                    ..Trickle::default()
                };
                let mut written = 0;
                write_all_parts(&mut writer, head, parts, &mut written)
                    .await
                    .unwrap();
                let expected = [&head[..], &parts.concat()].concat();
                assert_eq!(writer.taken, expected, "{per_call}");
                assert_eq!(written, expected.len());
            }
            let mut writer = Trickle {
                per_call,
                ..Trickle::default()
            };
            let mut written = 0;
            write_all_parts(&mut writer, head, &many, &mut written)
                .await
                .unwrap();
            let expected = [&head[..], &many.concat()].concat();
            assert_eq!(writer.taken, expected, "{per_call}, chunks");
            assert_eq!(written, expected.len());
        }
        let mut stuck = Trickle::default();
        let mut written = 0;
        let error = write_all_parts(&mut stuck, head, &[body], &mut written)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::WriteZero);
        assert_eq!(written, 0);
    }

    /// The connection's write buffer (a marked pingora-core patch) sends what it holds with
    /// a write too large to be held beside it, in one call, not two; in order however the
    /// socket splits it; and holds what fits, as tokio's `BufWriter` does.
    #[tokio::test]
    async fn held_bytes_leave_with_the_next_write_too_large_to_join_them() {
        use pingora_core::protocols::l4::join_writer::JoinWriter;
        use tokio::io::AsyncWriteExt;
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n";
        let body = b"0123456789abcdefghijklmnopqrstuvwxyzABCD";
        // A socket that takes everything: the head is held, then leaves with the body.
        let mut writer = JoinWriter::with_capacity(
            64,
            Trickle {
                per_call: usize::MAX,
                ..Trickle::default()
            },
        );
        writer.write_all(head).await.unwrap();
        assert_eq!(
            (writer.get_ref().calls, writer.buffer().len()),
            (0, head.len())
        );
        writer.write_all(body).await.unwrap();
        writer.flush().await.unwrap();
        assert_eq!(
            writer.get_ref().calls,
            1,
            "one call for the head and the body"
        );
        assert_eq!(writer.get_ref().taken, [&head[..], &body[..]].concat());
        // Small writes are held and leave together at the flush.
        writer.write_all(b"5\r\n").await.unwrap();
        writer.write_all(b"hello\r\n").await.unwrap();
        writer.flush().await.unwrap();
        assert_eq!(writer.get_ref().calls, 2);
        // However a socket splits the joined write, the bytes go out in order.
        for per_call in [1, 3, 7, head.len(), head.len() + 1] {
            let mut writer = JoinWriter::with_capacity(
                64,
                Trickle {
                    per_call,
                    ..Trickle::default()
                },
            );
            writer.write_all(head).await.unwrap();
            writer.write_all(body).await.unwrap();
            // A vectored write too, taken in part: the rest follows as a plain write.
            let tail = [&b"tail, "[..], &body[..]].concat();
            let parts = [
                std::io::IoSlice::new(b"tail, "),
                std::io::IoSlice::new(body),
            ];
            let n = writer.write_vectored(&parts).await.unwrap();
            assert!(n > 0);
            writer.write_all(&tail[n..]).await.unwrap();
            writer.flush().await.unwrap();
            let expected = [&head[..], &body[..], b"tail, ", &body[..]].concat();
            assert_eq!(writer.get_ref().taken, expected, "{per_call}");
        }
        // No capacity: every write goes straight through.
        let mut writer = JoinWriter::with_capacity(
            0,
            Trickle {
                per_call: usize::MAX,
                ..Trickle::default()
            },
        );
        writer.write_all(head).await.unwrap();
        assert_eq!(writer.get_ref().calls, 1);
    }

    #[test]
    fn decimals_are_written_without_fmt() {
        let mut buf = [0u8; 20];
        assert_eq!(write_decimal(0, &mut buf), b"0");
        assert_eq!(write_decimal(7, &mut buf), b"7");
        assert_eq!(write_decimal(3600, &mut buf), b"3600");
        assert_eq!(
            write_decimal(u64::MAX, &mut buf),
            u64::MAX.to_string().as_bytes()
        );
    }
}
