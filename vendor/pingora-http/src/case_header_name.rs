// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;
use http::header::InvalidHeaderName; // PORTICO PATCH (header names without a parse or a copy)

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    // PORTICO PATCH (header names without a parse or a copy): both names a header map
    // insert needs. By default the case-sensitive name is parsed into a `HeaderName`
    // (which copies a non-standard name to the heap); a `HeaderName` gives itself, and a
    // lower-case `&'static str` a `HeaderName` over its own static bytes.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), InvalidHeaderName>
    where
        Self: Sized,
    {
        let case_header_name = self.into_case_header_name();
        let header_name = HeaderName::from_bytes(case_header_name.as_slice())?;
        Ok((header_name, case_header_name))
    }
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }

    // PORTICO PATCH (header names without a parse or a copy): a lower-case static name
    // becomes a `HeaderName` that points at the same static bytes (`from_static`), where
    // `from_bytes` would copy a non-standard one to the heap.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), InvalidHeaderName> {
        let lower_token = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let header_name =
            if !self.is_empty() && self.len() < 64 && self.bytes().all(|b| lower_token(&b)) {
                HeaderName::from_static(self) // valid by the check above: cannot panic
            } else {
                HeaderName::from_bytes(self.as_bytes())?
            };
        Ok((
            header_name,
            CaseHeaderName(Bytes::from_static(self.as_bytes())),
        ))
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    // PORTICO PATCH (header names without a parse or a copy): see the trait.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), InvalidHeaderName> {
        let case_header_name = CaseHeaderName(titled_header_name(&self));
        Ok((self, case_header_name))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    // PORTICO PATCH (header names without a parse or a copy): see the trait.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), InvalidHeaderName> {
        Ok((self.clone(), CaseHeaderName(titled_header_name(self))))
    }
}

// PORTICO PATCH (header names without a parse or a copy): a name known ahead of time with
// the case it is written in. A `&'static str` name is checked byte by byte on every insert
// (`HeaderName::from_static` at run time); this one was checked once, when it was made
// (at compile time in a `const`), and an insert only clones two static views.
#[derive(Debug, Clone)]
pub struct KnownHeaderName {
    name: HeaderName,
    case: &'static str,
}

impl KnownHeaderName {
    /// A lower-case header name, written as given. Panics (at compile time in a `const`)
    /// if `name` is not a valid lower-case header name.
    pub const fn lower(name: &'static str) -> KnownHeaderName {
        KnownHeaderName {
            name: HeaderName::from_static(name),
            case: name,
        }
    }

    /// The name, for lookups.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The name as it is written.
    pub fn case(&self) -> &'static str {
        self.case
    }
}

impl IntoCaseHeaderName for &KnownHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(Bytes::from_static(self.case.as_bytes()))
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), InvalidHeaderName> {
        Ok((self.name.clone(), self.into_case_header_name()))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }

    // PORTICO PATCH (header names without a parse or a copy)
    #[test]
    fn test_known_header_name() {
        static VIA: KnownHeaderName = KnownHeaderName::lower("via");
        static EDGE: KnownHeaderName = KnownHeaderName::lower("x-edge-ref");
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.insert_header(&EDGE, "a").unwrap();
        request.append_header(&VIA, "1.1 x").unwrap();
        assert_eq!(request.headers[EDGE.name()], "a");
        assert_eq!(request.headers["x-edge-ref"], "a");
        assert_eq!(request.headers[header::VIA], "1.1 x");
        let mut wire = Vec::new();
        request.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"x-edge-ref: a\r\nvia: 1.1 x\r\n");
    }
}
