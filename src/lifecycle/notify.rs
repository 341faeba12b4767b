//! systemd's readiness protocol (`sd_notify`), for `Type=notify` units: `READY=1` once the
//! node serves, `STOPPING=1` when it starts to drain, and `MAINPID=` from a process that
//! took the listeners over in a binary upgrade, so that systemd follows the new process
//! (the unit needs `NotifyAccess=all`). Without `NOTIFY_SOCKET` nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=value` lines) to systemd, if it is listening.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path.to_string_lossy(), state) {
        log::warn!("cannot notify systemd ({state:?}): {e}");
    }
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        // An abstract socket name.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// What a process that starts serving tells systemd: after an upgrade it is the unit's
/// new main process.
pub fn ready_state(upgraded: bool) -> String {
    if upgraded {
        format!("MAINPID={}\nREADY=1", std::process::id())
    } else {
        "READY=1".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_reach_a_listening_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), &ready_state(true)).unwrap();
        let mut buf = [0u8; 128];
        let n = listener.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(got, format!("MAINPID={}\nREADY=1", std::process::id()));
        assert_eq!(ready_state(false), "READY=1");
    }
}
