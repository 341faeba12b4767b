//! One health probe against one origin, as its group's `health_probe` describes it.
//!
//! - `http`: a fresh connection, `method path HTTP/1.1` with the probe's `Host` (the
//!   origin's `host_header` unless `host` is set) and `User-Agent: Portico-Health-Probe`;
//!   passes when the status is in one of the `expect_status` ranges.
//! - `tcp`: passes when a connection opens.
//! - `websocket`: a real RFC 6455 upgrade handshake on `path`; passes on a valid `101`
//!   (the `Sec-WebSocket-Accept` is checked), whatever `expect_status` says.
//!
//! With `use_tls`, every kind runs over TLS to the origin's `https_port`, and the
//! certificate is verified (the group's `ca_file`, else the system roots) for the origin's
//! `host_header`: a probe that cannot verify the origin fails, as traffic would.
//!
//! Each probe opens its own connection, so a listener that died is never hidden by a
//! connection kept alive from before. `timeout` bounds the whole probe.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite;

use crate::config::model::{HealthProbe, Origin, ProbeProtocol};
use crate::observability::records::now_ms;

use super::health::ProbeOutcome;

/// The `User-Agent` of every probe, so origins can tell probes from traffic.
pub const USER_AGENT: &str = "Portico-Health-Probe";

/// How much of an HTTP answer is read looking for the status line.
const STATUS_LINE_LIMIT: usize = 8 * 1024;

/// Probes `origin` once; with `tls`, over TLS to its `https_address` (the certificate is
/// verified for the origin's `host_header`, as for traffic).
pub async fn probe(
    probe: &HealthProbe,
    origin: &Origin,
    tls: Option<&TlsConnector>,
) -> ProbeOutcome {
    let time_ms = now_ms();
    let started = Instant::now();
    let host = probe.host.as_deref().unwrap_or(&origin.host_header);
    let attempt = async {
        let Some(tls) = tls else {
            let stream = connect(origin.address).await?;
            return run(probe, stream, origin.address, host).await;
        };
        let tcp = connect(origin.https_address).await?;
        let name = ServerName::try_from(origin.host_header.clone()).map_err(|_| {
            Failure::new(format!("{:?} is not a TLS server name", origin.host_header))
        })?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| Failure::new(format!("TLS with {}: {e}", origin.https_address)))?;
        run(probe, stream, origin.https_address, host).await
    };
    let (status, error) = match tokio::time::timeout(probe.timeout, attempt).await {
        Err(_) => (None, Some(format!("timed out after {:?}", probe.timeout))),
        Ok(Err(failure)) => (failure.status, Some(failure.reason)),
        Ok(Ok(status)) => (status, None),
    };
    ProbeOutcome {
        time_ms,
        latency: started.elapsed(),
        status,
        error,
    }
}

/// The probe's exchange once connected (TLS already done when asked for).
async fn run<S>(
    probe: &HealthProbe,
    stream: S,
    addr: SocketAddr,
    host: &str,
) -> Result<Option<u16>, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match probe.protocol {
        ProbeProtocol::Tcp => Ok(None),
        ProbeProtocol::Http => http(probe, stream, host).await.map(Some),
        ProbeProtocol::Websocket => websocket(probe, stream, addr, host).await.map(Some),
    }
}

/// Why a probe failed, with the status when one was received.
struct Failure {
    status: Option<u16>,
    reason: String,
}

impl Failure {
    fn new(reason: impl Into<String>) -> Failure {
        Failure {
            status: None,
            reason: reason.into(),
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::new(format!("connect to {addr}: {e}")))
}

async fn http<S>(probe: &HealthProbe, mut stream: S, host: &str) -> Result<u16, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        probe.method, probe.path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| Failure::new(format!("send: {e}")))?;
    let status = read_status(&mut stream).await?;
    if probe
        .expect_status
        .iter()
        .any(|&(low, high)| (low..=high).contains(&status))
    {
        Ok(status)
    } else {
        Err(Failure {
            status: Some(status),
            reason: format!(
                "status {status} is not in {}",
                describe_ranges(&probe.expect_status)
            ),
        })
    }
}

/// Reads up to the end of the status line and parses `HTTP/1.x NNN`.
async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> Result<u16, Failure> {
    let mut buffer = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buffer.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&buffer[..end])
                .ok_or_else(|| Failure::new("the answer is not HTTP/1.x"));
        }
        if buffer.len() > STATUS_LINE_LIMIT {
            return Err(Failure::new("no status line in the first 8 KiB"));
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Failure::new(format!("read: {e}")))?;
        if read == 0 {
            return Err(Failure::new(
                "the origin closed the connection without answering",
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn describe_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(low, high)| {
            if low == high {
                low.to_string()
            } else {
                format!("{low}-{high}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn websocket<S>(
    probe: &HealthProbe,
    stream: S,
    addr: SocketAddr,
    host: &str,
) -> Result<u16, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{}", probe.path)
        .into_client_request()
        .map_err(|e| Failure::new(format!("bad probe request: {e}")))?;
    let headers = request.headers_mut();
    let host = http::HeaderValue::from_str(host)
        .map_err(|_| Failure::new(format!("bad probe host {host:?}")))?;
    headers.insert(http::header::HOST, host);
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    );
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((mut socket, response)) => {
            // A polite close, off the probe's clock: the verdict does not wait for it.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
            });
            Ok(response.status().as_u16())
        }
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            Err(Failure {
                status: Some(status),
                reason: format!("upgrade refused: status {status}, expected 101"),
            })
        }
        Err(e) => Err(Failure::new(format!("upgrade failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 x"), None);
    }

    #[test]
    fn ranges_read_like_the_config() {
        assert_eq!(describe_ranges(&[(200, 399), (404, 404)]), "200-399, 404");
    }
}
