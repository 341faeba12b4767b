//! The old process's side: it connects to the new process, and hands over each relay that
//! offers itself, one at a time, committing each once the new process has it.

use super::*;

/// Hands every plain-TCP tunnel to the new process listening at `path`; the rest, and any
/// that fails, stay and drain here.
pub async fn hand_over(drain: &'static Drain, path: &Path) -> HandoverReport {
    let handover = &drain.handover;
    let mut report = HandoverReport::default();
    let Some(mut conn) = connect(path).await else {
        log::warn!(
            "tunnel handover: no new process at {}; tunnels drain here",
            path.display()
        );
        return report;
    };
    match hello(&mut conn).await {
        Ok(true) => {}
        Ok(false) => {
            log::warn!("tunnel handover refused: the new process does not read format version {}; tunnels drain here", version());
            return report;
        }
        Err(e) => {
            log::warn!("tunnel handover: the new process did not answer ({e}); tunnels drain here");
            return report;
        }
    }
    let (sender, mut offers) = mpsc::unbounded_channel();
    *handover.offers.lock() = Some(sender);
    handover.asked.store(true, Ordering::Release);
    drain.registry.wake_all();
    let budget = tokio::time::Instant::now() + HANDOVER_BUDGET;
    let mut broken = false;
    loop {
        if handover.waiting.load(Ordering::Acquire) == 0 && offers.is_empty() {
            break;
        }
        // Re-checked now and then: a relay that ends instead of offering itself leaves
        // the count too.
        let next = tokio::time::timeout(Duration::from_millis(50), offers.recv());
        let offer = match tokio::time::timeout_at(budget, next).await {
            Err(_) => break,
            Ok(Err(_)) => continue,
            Ok(Ok(None)) => break,
            Ok(Ok(Some(offer))) => offer,
        };
        let held = offer.relay.to_origin.held_len() + offer.relay.to_client.held_len();
        let verdict = if broken {
            Verdict::Kept(offer.relay)
        } else {
            match send_tunnel(&mut conn, offer.relay, &offer.state, &offer.limits).await {
                Ok(verdict) => verdict,
                Err((relay, e)) => {
                    log::warn!("tunnel handover: {e}; the remaining tunnels drain here");
                    broken = true;
                    Verdict::Kept(relay)
                }
            }
        };
        match verdict {
            Verdict::HandedOver => {
                report.handed_over += 1;
                report.held_bytes += held;
            }
            Verdict::Kept(_) => report.kept += 1,
        }
        let _ = offer.reply.send(verdict);
    }
    // Late offers (the budget is spent, or a relay raced the end) go back to their relays.
    handover.offers.lock().take();
    offers.close();
    while let Ok(offer) = offers.try_recv() {
        report.kept += 1;
        let _ = offer.reply.send(Verdict::Kept(offer.relay));
    }
    if !broken {
        let _ = tokio::time::timeout(STEP_TIMEOUT, write_frame(&mut conn, &[], None)).await;
    }
    report
}

async fn connect(path: &Path) -> Option<UnixStream> {
    let until = Instant::now() + CONNECT_WAIT;
    loop {
        match UnixStream::connect(path).await {
            Ok(conn) if same_user(&conn) => return Some(conn),
            Ok(_) => {
                log::warn!(
                    "tunnel handover: {} belongs to another user",
                    path.display()
                );
                return None;
            }
            Err(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return None,
        }
    }
}

async fn hello(conn: &mut UnixStream) -> io::Result<bool> {
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&version().to_le_bytes());
    step(write_frame(conn, &hello, None)).await?;
    Ok(step(read_byte(conn)).await? == 1)
}

/// Sends one tunnel and commits it once the new process has it. Before the commit any
/// failure gives the relay back; an error of the connection also ends the handover.
async fn send_tunnel(
    conn: &mut UnixStream,
    relay: Box<Relay>,
    meta: &TunnelMeta,
    limits: &TunnelLimits,
) -> Result<Verdict, (Box<Relay>, io::Error)> {
    let Some((down, up)) = handover_fds(&relay.downstream, &relay.upstream) else {
        return Ok(Verdict::Kept(relay));
    };
    let (held_c2o, held_o2c) = (relay.to_origin.held(), relay.to_client.held());
    let now = Instant::now();
    let state = WireTunnel {
        version: version(),
        meta: meta.clone(),
        age_ms: millis(now.saturating_duration_since(relay.started)),
        lifetime_left_ms: millis(relay.deadline.saturating_duration_since(now)),
        quiet_ms: millis(now.saturating_duration_since(relay.last_moved)),
        idle_timeout_ms: millis(limits.idle_timeout),
        max_lifetime_ms: millis(limits.max_lifetime),
        linger_ms: millis(limits.linger),
        bytes_client_to_origin: relay.to_origin.bytes,
        bytes_origin_to_client: relay.to_client.bytes,
        held_client_to_origin: held_c2o.len(),
        held_origin_to_client: held_o2c.len(),
    };
    let json = serde_json::to_vec(&state).expect("the state serialises");
    let mut frame = Vec::with_capacity(4 + json.len() + held_c2o.len() + held_o2c.len());
    frame.extend_from_slice(&(json.len() as u32).to_le_bytes());
    frame.extend_from_slice(&json);
    frame.extend_from_slice(&held_c2o);
    frame.extend_from_slice(&held_o2c);
    let exchange = async {
        step(write_frame(conn, &frame, Some([down.as_fd(), up.as_fd()]))).await?;
        if step(read_byte(conn)).await? != 1 {
            return Ok(false);
        }
        step(conn.write_all(&[1])).await?;
        Ok(true)
    };
    match exchange.await {
        // The new process relays it now. This copy is dropped without a shutdown, so
        // the connections stay open.
        Ok(true) => Ok(Verdict::HandedOver),
        Ok(false) => Ok(Verdict::Kept(relay)),
        Err(e) => Err((relay, e)),
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// A frame: its length (4 bytes, carrying the descriptors if any), then its bytes.
async fn write_frame(
    conn: &mut UnixStream,
    body: &[u8],
    fds: Option<[std::os::fd::BorrowedFd<'_>; 2]>,
) -> io::Result<()> {
    let len = (body.len() as u32).to_le_bytes();
    let mut sent = 0;
    while sent == 0 {
        conn.writable().await?;
        let result = conn.try_io(Interest::WRITABLE, || {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            if let Some(fds) = &fds {
                control.push(rustix::net::SendAncillaryMessage::ScmRights(fds));
            }
            rustix::net::sendmsg(
                &*conn,
                &[io::IoSlice::new(&len)],
                &mut control,
                rustix::net::SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        });
        match result {
            Ok(n) => sent = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    conn.write_all(&len[sent..]).await?;
    conn.write_all(body).await
}
