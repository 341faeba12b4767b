//! Which fields a stored copy keeps: hop-by-hop fields removed (RFC 9110 §7.6.1), the
//! fields withheld from it given back to the miss's client, and a `304`'s fields merged
//! into it (RFC 9111 §4.3.4).

use http::header::{self, HeaderName};
use pingora_http::ResponseHeader;

/// Removes hop-by-hop fields (RFC 9110 §7.6.1): `Connection` and the fields it lists,
/// `Keep-Alive`, `Proxy-Connection`, `TE` and `Upgrade` (a `101` is left alone); with
/// `framing`, also `Transfer-Encoding` (a stored copy is reframed when it is served).
pub fn strip_hop_by_hop(response: &mut ResponseHeader, framing: bool) {
    if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return; // the upgrade's own fields: the tunnel needs them
    }
    // Removing a name costs a hashed lookup: remove only the names present, found (with
    // what `Connection` lists) in one pass over the header's fields.
    let mut present: smallvec::SmallVec<[HeaderName; 4]> = smallvec::SmallVec::new();
    for (name, value) in response.headers.iter() {
        if !is_hop_by_hop(name) || (!framing && name == header::TRANSFER_ENCODING) {
            continue;
        }
        if name == header::CONNECTION {
            // A listed framing field is the connection's business: the body reader needs it.
            let listed = listed_names(value).filter(|name| framing || !is_framing(name));
            present.extend(listed);
        }
        if !present.contains(name) {
            present.push(name.clone());
        }
    }
    for name in &present {
        response.remove_header(name);
    }
}

/// Hop-by-hop whatever `Connection` says (`Transfer-Encoding` is framing: see callers),
/// told apart by length first: this runs over every response's names.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    match name.as_str().len() {
        2 => name == header::TE,
        7 => name == header::UPGRADE,
        10 => name == header::CONNECTION || name.as_str() == "keep-alive",
        16 => name.as_str() == "proxy-connection",
        17 => name == header::TRANSFER_ENCODING,
        _ => false,
    }
}

/// The fields `Connection` names, in all its lines.
fn connection_listed(response: &ResponseHeader) -> smallvec::SmallVec<[HeaderName; 2]> {
    response
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(listed_names)
        .collect()
}

/// The field names one `Connection` line lists. The usual options, `keep-alive` and
/// `close`, are skipped before a parse: `close` is no field, `Keep-Alive` is hop-by-hop
/// anyway, and parsing an unknown name copies it (on every response from an origin that
/// says `keep-alive`).
fn listed_names(value: &http::HeaderValue) -> impl Iterator<Item = HeaderName> + '_ {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|name| {
            !name.eq_ignore_ascii_case(b"keep-alive") && !name.eq_ignore_ascii_case(b"close")
        })
        .filter_map(|name| HeaderName::from_bytes(name).ok())
}

fn is_framing(name: &HeaderName) -> bool {
    name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH
}

/// The end-to-end fields of `response` that its stored copy lacks (`private=`/`no-cache=`
/// fields, `Set-Cookie` so named, an upstream `Age`): pingora sends a miss's client the
/// stored header, and these go back on it, so the client that caused the miss gets the
/// origin's response whole.
pub fn withheld(
    response: &ResponseHeader,
    stored: &ResponseHeader,
) -> Vec<(HeaderName, http::HeaderValue)> {
    let listed = connection_listed(response);
    response
        .headers
        .iter()
        .filter(|(name, _)| {
            !stored.headers.contains_key(*name) && !is_hop_by_hop(name) && !listed.contains(name)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The stored header updated by a `304` (RFC 9111 §3.2, §4.3.4): each field the `304`
/// carries replaces the stored one's lines, except hop-by-hop fields and the framing the
/// stored body depends on (`Content-Length`, `Transfer-Encoding`).
pub fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &ResponseHeader,
) -> ResponseHeader {
    let mut update = not_modified.clone();
    strip_hop_by_hop(&mut update, true);
    update.remove_header(&header::CONTENT_LENGTH);
    let mut merged = stored.clone();
    for name in update.headers.keys() {
        merged.remove_header(name);
    }
    for (name, value) in update.headers.iter() {
        let _ = merged.append_header(name.clone(), value.clone());
    }
    merged
}
