//! The new process's side: it listens beside Pingora's upgrade socket, takes each tunnel
//! the old process sends (its sockets, state and held bytes) and relays it on.

use super::*;

/// What adopted tunnels need from the new node.
pub struct Adoption {
    pub drain: &'static Drain,
    pub access_log: AccessLog,
    pub metrics: Arc<Metrics>,
}

/// Binds the socket the old process hands its tunnels over (before Pingora takes the
/// listeners over, so it is there by the time the old process looks for it).
pub fn listen(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Takes the old process's tunnels (one connection), until the node stops.
pub async fn adopt(listener: std::os::unix::net::UnixListener, path: PathBuf, node: Adoption) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            log::warn!("tunnel handover: cannot listen: {e}");
            return;
        }
    };
    let mut stop = node.drain.tunnel_close_signal();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((conn, _)) = accepted else { continue };
                if !same_user(&conn) {
                    continue;
                }
                let (adopted, refused) = receive(conn, &node).await;
                log::info!("tunnel handover: {adopted} tunnel(s) adopted, {refused} refused");
                break;
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Serves one old process: its hello, then its tunnels. Returns (adopted, refused).
async fn receive(mut conn: UnixStream, node: &Adoption) -> (usize, usize) {
    let (mut adopted, mut refused) = (0, 0);
    let Ok((hello, _)) = step(read_frame(&mut conn, 64)).await else {
        return (0, 0);
    };
    let theirs = hello
        .strip_prefix(MAGIC.as_slice())
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map(u32::from_le_bytes);
    if theirs != Some(version()) {
        log::warn!(
            "tunnel handover refused: the old process sends format {theirs:?}, this one reads {}; its tunnels drain there",
            version()
        );
        let _ = step(conn.write_all(&[0])).await;
        return (0, 0);
    }
    if step(conn.write_all(&[1])).await.is_err() {
        return (0, 0);
    }
    loop {
        let frame = match step(read_frame(&mut conn, 4 + MAX_STATE + 2 * MAX_HELD)).await {
            Ok((frame, _)) if frame.is_empty() => break,
            Ok(frame) => frame,
            Err(_) => break,
        };
        match take_tunnel(frame) {
            Ok((relay, meta, limits)) => {
                if step(conn.write_all(&[1])).await.is_err() {
                    break;
                }
                // Only the old process's commit makes it ours: it stops then.
                match step(read_byte(&mut conn)).await {
                    Ok(1) => {
                        adopted += 1;
                        node.metrics.tunnel_adopted();
                        let log = TunnelLog::new(
                            node.access_log.clone(),
                            node.metrics.clone(),
                            &meta.request_id,
                            &meta.route,
                            meta.client,
                            meta.origin.as_deref(),
                        );
                        let guard = node.drain.tunnel(log.route(), log.client);
                        crate::tunnel::spawn_relay(relay, limits, log, guard);
                    }
                    // Dropped without a shutdown: the old process still relays it.
                    _ => break,
                }
            }
            Err(reason) => {
                log::warn!("tunnel handover: a tunnel refused: {reason}");
                refused += 1;
                if step(conn.write_all(&[0])).await.is_err() {
                    break;
                }
            }
        }
    }
    (adopted, refused)
}

/// Builds a relay from a tunnel's frame and descriptors.
fn take_tunnel(
    (frame, fds): (Vec<u8>, Vec<OwnedFd>),
) -> Result<(Relay, TunnelMeta, TunnelLimits), String> {
    let [down, up]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|fds: Vec<OwnedFd>| format!("{} descriptors, not 2", fds.len()))?;
    let json_len = frame
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or("a short frame")?;
    let json = frame.get(4..4 + json_len).ok_or("a short frame")?;
    let state: WireTunnel = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    if state.version != version() {
        return Err(format!("format version {}", state.version));
    }
    let held = &frame[4 + json_len..];
    if held.len() != state.held_client_to_origin + state.held_origin_to_client {
        return Err("held bytes do not add up".into());
    }
    let (c2o, o2c) = held.split_at(state.held_client_to_origin);
    let stream = |fd: OwnedFd| -> Result<Stream, String> {
        let std = std::net::TcpStream::from(fd);
        std.set_nonblocking(true).map_err(|e| e.to_string())?;
        let tokio = tokio::net::TcpStream::from_std(std).map_err(|e| e.to_string())?;
        Ok(Box::new(L4Stream::from(tokio)))
    };
    let limits = TunnelLimits {
        idle_timeout: Duration::from_millis(state.idle_timeout_ms),
        max_lifetime: Duration::from_millis(state.max_lifetime_ms),
        linger: Duration::from_millis(state.linger_ms),
    };
    let now = Instant::now();
    let relay = Relay::adopted(
        stream(down)?,
        stream(up)?,
        c2o.to_vec(),
        o2c.to_vec(),
        crate::tunnel::relay::Clocks {
            started: now
                .checked_sub(Duration::from_millis(state.age_ms))
                .unwrap_or(now),
            deadline: now + Duration::from_millis(state.lifetime_left_ms),
            last_moved: now
                .checked_sub(Duration::from_millis(state.quiet_ms))
                .unwrap_or(now),
        },
        (state.bytes_client_to_origin, state.bytes_origin_to_client),
    );
    Ok((relay, state.meta, limits))
}

/// Reads a frame (its descriptors come with its length), refusing one over `max` bytes.
async fn read_frame(conn: &mut UnixStream, max: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    // Only recvmsg(2) receives descriptors, and they come with the frame's first byte; the
    // length is read exactly, so no read ever runs into the next frame's descriptors.
    while got == 0 {
        conn.readable().await?;
        let result = conn.try_io(Interest::READABLE, || {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                &*conn,
                &mut [io::IoSliceMut::new(&mut len)],
                &mut control,
                rustix::net::RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            for message in control.drain() {
                if let rustix::net::RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            Ok(received.bytes)
        });
        match result {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    conn.read_exact(&mut len[got..]).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    Ok((body, fds))
}

/// Runs a relay (a new tunnel's, or an adopted one) to its end: it may be handed over,
/// otherwise it writes the tunnel's record.
///
/// A plain function around an `async move` block, not an `async fn`: an `async fn` moves
/// its arguments into locals of its own, and the task then holds each twice (560 bytes of
/// an idle tunnel's ~2 KiB), where the block uses what it captured in place.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn run_relay(
    mut relay: Relay,
    limits: TunnelLimits,
    log: TunnelLog,
    guard: TunnelGuard,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let eligible = eligible(&relay.downstream, &relay.upstream);
        let mut ticket = Ticket::new(guard.handover(), eligible);
        guard.relaying();
        let ended_by = loop {
            let step = {
                // One wait for the three signals (the drain, a close order, the handover):
                // a waiter each took 160 to 280 bytes of every idle tunnel's task.
                let asked = || ticket.asked();
                let signal = pin!(guard.closing_or(asked));
                relay.run(&limits, signal, asked).await
            };
            match step {
                Step::Ended(ended_by) => break ended_by,
                // Boxed, as the closes below: each tunnel's task is as large as its largest
                // state, and these run once at most, where an idle tunnel waits in `run`.
                Step::Paused => match Box::pin(ticket.offer(relay, &log, limits)).await {
                    Some(kept) => relay = kept,
                    None => {
                        log.metrics.tunnel_handed_over();
                        return; // the new process writes its record
                    }
                },
            }
        };
        // An order of its own (admin, chaos) says how; the drain's close is a FIN.
        let outcome = match guard.order() {
            Some((by, how)) if ended_by == crate::tunnel::ClosedBy::Shutdown => {
                Box::pin(relay.close_as(by, how, limits.linger)).await
            }
            _ => Box::pin(relay.finish(ended_by)).await,
        };
        log.write(&outcome);
        // The node may exit once the last tunnel's record is written.
        drop(guard);
    }
}
