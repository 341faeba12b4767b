//! Stage 2 for the node's `admin` block: where the admin endpoints listen and, when that is
//! not loopback, the bearer token they require (SPEC §6). Purges and the node's whole
//! routing table must not be open to whoever can reach the port.

use std::path::Path;

use super::diagnostics::{FileId, Report};
use super::file::FileAdmin;
use super::model::{AdminSettings, AdminToken};
use super::node::socket_addr;

/// Shorter tokens are refused: a token is the only thing between the network and `/purge`.
const MIN_TOKEN_LEN: usize = 16;

pub fn build_admin(
    report: &mut Report,
    file: FileId,
    conf_dir: &Path,
    raw: Option<&FileAdmin>,
) -> Option<AdminSettings> {
    let raw = raw?;
    let token = raw
        .token_file
        .as_deref()
        .and_then(|path| read_token(report, file, &conf_dir.join(path)));
    let address = socket_addr(report, file, "admin.address", &raw.address)?;
    if !address.ip().is_loopback() && raw.token_file.is_none() {
        report.error(
            file,
            "admin.address",
            format!("the admin listener on {address} is reachable beyond this machine: set admin.token_file (a bearer token) or listen on 127.0.0.1"),
        );
    }
    Some(AdminSettings { address, token })
}

/// The token in `path`: one line of at least [`MIN_TOKEN_LEN`] visible ASCII characters.
fn read_token(report: &mut Report, file: FileId, path: &Path) -> Option<AdminToken> {
    let at = "admin.token_file";
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            report.error(file, at, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        report.error(
            file,
            at,
            format!(
                "{} must hold one token of at least {MIN_TOKEN_LEN} visible ASCII characters",
                path.display()
            ),
        );
        return None;
    }
    Some(AdminToken::new(token))
}

#[cfg(test)]
mod tests {
    use super::AdminToken;

    #[test]
    fn a_token_admits_only_its_own_bearer_header_and_never_prints() {
        let token = AdminToken::new("0123456789abcdef");
        assert!(token.admits(b"Bearer 0123456789abcdef"));
        assert!(token.admits(b"bearer 0123456789abcdef"));
        for refused in [
            &b"Bearer 0123456789abcdeF"[..],
            b"Bearer 0123456789abcde",
            b"Bearer 0123456789abcdef0",
            b"Basic 0123456789abcdef",
            b"0123456789abcdef",
            b"",
        ] {
            assert!(
                !token.admits(refused),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
    }
}
