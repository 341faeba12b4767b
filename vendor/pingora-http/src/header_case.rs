// PORTICO PATCH (case map only when needed): this whole file.
//
// A header built to keep its names' case (`RequestHeader::build`, `ResponseHeader::build`,
// every HTTP/1 head Pingora parses) kept a second header map beside the values, the case of
// each name: every field hashed and inserted twice, both maps cloned with the header. Most
// heads name every field in its customary case (`Host`, `Content-Type`, `ETag`, ...) or, for
// a name outside the standard set, in lower case, so the case map says nothing the name
// does not. It is now made only when a name arrives in another case, from the names held
// so far, and is then kept exactly as before.

use bytes::Bytes;
use http::header::{self, HeaderName};
use pingora_error::{ErrorType::InvalidHTTPHeader, OrErr, Result};

use crate::case_header_name::CaseHeaderName;
use crate::{CaseMap, HMap, IntoCaseHeaderName};

/// How a header keeps its names' case.
#[derive(Debug, Clone)]
pub(crate) enum HeaderCase {
    /// Not kept (`build_no_case`, or made from `Parts`): names are written titled or in
    /// lower case (`titled_header_name_str`).
    NotKept,
    /// Kept, and every name so far is in its [`written_form`]: nothing stored.
    Customary,
    /// Kept, with some name in another case: each name's case, in step with the values.
    Map(CaseMap),
}

impl HeaderCase {
    pub(crate) fn is_kept(&self) -> bool {
        !matches!(self, HeaderCase::NotKept)
    }

    /// Records the case of a name about to be appended (or, with `replace`, inserted) into
    /// `values`, which still holds only the fields before it.
    pub(crate) fn note<T>(
        &mut self,
        name: &HeaderName,
        case: CaseHeaderName,
        values: &HMap<T>,
        replace: bool,
    ) -> Result<()> {
        if let HeaderCase::Customary = self {
            if written_form(name).as_bytes() == case.as_slice() {
                return Ok(());
            }
            *self = HeaderCase::Map(case_map_of(values)?);
        }
        if let HeaderCase::Map(map) = self {
            if replace {
                map.insert(name.clone(), case);
            } else {
                // Non-panicking, as for the values (see `append_header_value`).
                map.try_append(name.clone(), case)
                    .or_err(InvalidHTTPHeader, "header name map size overflows MAX_SIZE")?;
            }
        }
        Ok(())
    }

    /// Forgets the case of a name removed from the values.
    pub(crate) fn remove<'a, N: ?Sized>(&mut self, name: &'a N)
    where
        &'a N: 'a + header::AsHeaderName,
    {
        if let HeaderCase::Map(map) = self {
            map.remove(name);
        }
    }

    pub(crate) fn map(&self) -> Option<&CaseMap> {
        match self {
            HeaderCase::Map(map) => Some(map),
            _ => None,
        }
    }
}

/// Appends a field of a received head (`name` a slice of `head`). A name in its customary
/// case is known without a parse and needs no case recorded; any other goes the way of
/// `append_header`, its case a view of `head`.
pub(crate) fn append_received<T>(
    case: &mut HeaderCase,
    values: &mut HMap<T>,
    head: &Bytes,
    name: &[u8],
    value: T,
) -> Result<bool> {
    if !matches!(case, HeaderCase::Map(_)) {
        if let Some(header_name) = customary_name(name) {
            return values.try_append(header_name, value).or_err(
                InvalidHTTPHeader,
                "header value map size overflows MAX_SIZE",
            );
        }
    }
    crate::append_header_value(case, values, head.slice_ref(name), value)
}

/// A name as the header will write it: its stored case, or its [`written_form`].
#[derive(Debug, Clone, Copy)]
pub struct CaseName<'a> {
    name: &'a HeaderName,
    stored: Option<&'a CaseHeaderName>,
}

impl<'a> CaseName<'a> {
    pub(crate) fn new(name: &'a HeaderName, stored: Option<&'a CaseHeaderName>) -> Self {
        CaseName { name, stored }
    }

    pub fn as_slice(&self) -> &'a [u8] {
        match self.stored {
            Some(stored) => stored.as_slice(),
            None => written_form(self.name).as_bytes(),
        }
    }
}

impl IntoCaseHeaderName for CaseName<'_> {
    fn into_case_header_name(self) -> CaseHeaderName {
        match self.stored {
            Some(stored) => stored.clone(),
            None => written_bytes(self.name).into_case_header_name(),
        }
    }

    fn into_header_names(
        self,
    ) -> std::result::Result<(HeaderName, CaseHeaderName), header::InvalidHeaderName> {
        Ok((self.name.clone(), self.into_case_header_name()))
    }
}

/// The case map a header with these values would have had all along: each name in its
/// [`written_form`], in the values' order (so the two maps iterate in step).
fn case_map_of<T>(values: &HMap<T>) -> Result<CaseMap> {
    let mut map = CaseMap::with_capacity(values.capacity());
    for (name, _) in values.iter() {
        map.try_append(name.clone(), written_bytes(name).into_case_header_name())
            .or_err(InvalidHTTPHeader, "header name map size overflows MAX_SIZE")?;
    }
    Ok(map)
}

fn written_bytes(name: &HeaderName) -> Bytes {
    match customary_case(name) {
        Some(case) => Bytes::from_static(case.as_bytes()),
        None => Bytes::copy_from_slice(name.as_str().as_bytes()),
    }
}

/// How a header with no case map writes `name`: a standard name in its customary case,
/// any other in lower case (as `HeaderName` holds it).
pub(crate) fn written_form(name: &HeaderName) -> &str {
    customary_case(name).unwrap_or(name.as_str())
}

macro_rules! customary_cases {
    ($($len:literal => [$($name:ident => $case:literal,)*],)*) => {
        /// The case a standard field name is customarily written in (RFC 9110 and the
        /// registries' spelling).
        fn customary_case(name: &HeaderName) -> Option<&'static str> {
            Some(match *name {
                $($(header::$name => $case,)*)*
                _ => return None,
            })
        }

        /// The standard name `raw` is when written in its customary case: a match on the
        /// length, then a few fixed-length compares, where `HeaderName::from_bytes` lowers
        /// and hashes every byte.
        pub(crate) fn customary_name(raw: &[u8]) -> Option<HeaderName> {
            match raw.len() {
                $($len => {
                    $(if raw == $case.as_bytes() {
                        return Some(header::$name);
                    })*
                })*
                _ => {}
            }
            None
        }

        #[cfg(test)]
        const CUSTOMARY_CASES: &[(usize, HeaderName, &str)] = &[$($(($len, header::$name, $case),)*)*];
    };
}

// Grouped by length, for `customary_name`.
customary_cases! {
    2 => [
        TE => "TE",
    ],
    3 => [
        AGE => "Age",
        DNT => "DNT",
        VIA => "Via",
    ],
    4 => [
        DATE => "Date",
        ETAG => "ETag",
        FROM => "From",
        HOST => "Host",
        LINK => "Link",
        VARY => "Vary",
    ],
    5 => [
        ALLOW => "Allow",
        RANGE => "Range",
    ],
    6 => [
        ACCEPT => "Accept",
        COOKIE => "Cookie",
        EXPECT => "Expect",
        ORIGIN => "Origin",
        PRAGMA => "Pragma",
        SERVER => "Server",
    ],
    7 => [
        ALT_SVC => "Alt-Svc",
        EXPIRES => "Expires",
        REFERER => "Referer",
        REFRESH => "Refresh",
        TRAILER => "Trailer",
        UPGRADE => "Upgrade",
        WARNING => "Warning",
    ],
    8 => [
        IF_MATCH => "If-Match",
        IF_RANGE => "If-Range",
        LOCATION => "Location",
    ],
    9 => [
        FORWARDED => "Forwarded",
    ],
    10 => [
        CONNECTION => "Connection",
        SET_COOKIE => "Set-Cookie",
        USER_AGENT => "User-Agent",
    ],
    11 => [
        RETRY_AFTER => "Retry-After",
    ],
    12 => [
        CACHE_STATUS => "Cache-Status",
        CONTENT_TYPE => "Content-Type",
        MAX_FORWARDS => "Max-Forwards",
    ],
    13 => [
        ACCEPT_RANGES => "Accept-Ranges",
        AUTHORIZATION => "Authorization",
        CACHE_CONTROL => "Cache-Control",
        CONTENT_RANGE => "Content-Range",
        IF_NONE_MATCH => "If-None-Match",
        LAST_MODIFIED => "Last-Modified",
    ],
    14 => [
        ACCEPT_CHARSET => "Accept-Charset",
        CONTENT_LENGTH => "Content-Length",
    ],
    15 => [
        ACCEPT_ENCODING => "Accept-Encoding",
        ACCEPT_LANGUAGE => "Accept-Language",
        REFERRER_POLICY => "Referrer-Policy",
        X_FRAME_OPTIONS => "X-Frame-Options",
    ],
    16 => [
        CONTENT_ENCODING => "Content-Encoding",
        CONTENT_LANGUAGE => "Content-Language",
        CONTENT_LOCATION => "Content-Location",
        WWW_AUTHENTICATE => "WWW-Authenticate",
        X_XSS_PROTECTION => "X-XSS-Protection",
    ],
    17 => [
        CDN_CACHE_CONTROL => "CDN-Cache-Control",
        IF_MODIFIED_SINCE => "If-Modified-Since",
        SEC_WEBSOCKET_KEY => "Sec-WebSocket-Key",
        TRANSFER_ENCODING => "Transfer-Encoding",
    ],
    18 => [
        PROXY_AUTHENTICATE => "Proxy-Authenticate",
    ],
    19 => [
        CONTENT_DISPOSITION => "Content-Disposition",
        IF_UNMODIFIED_SINCE => "If-Unmodified-Since",
        PROXY_AUTHORIZATION => "Proxy-Authorization",
    ],
    20 => [
        SEC_WEBSOCKET_ACCEPT => "Sec-WebSocket-Accept",
    ],
    21 => [
        SEC_WEBSOCKET_VERSION => "Sec-WebSocket-Version",
    ],
    22 => [
        ACCESS_CONTROL_MAX_AGE => "Access-Control-Max-Age",
        SEC_WEBSOCKET_PROTOCOL => "Sec-WebSocket-Protocol",
        X_CONTENT_TYPE_OPTIONS => "X-Content-Type-Options",
        X_DNS_PREFETCH_CONTROL => "X-DNS-Prefetch-Control",
    ],
    23 => [
        CONTENT_SECURITY_POLICY => "Content-Security-Policy",
    ],
    24 => [
        SEC_WEBSOCKET_EXTENSIONS => "Sec-WebSocket-Extensions",
    ],
    25 => [
        STRICT_TRANSPORT_SECURITY => "Strict-Transport-Security",
        UPGRADE_INSECURE_REQUESTS => "Upgrade-Insecure-Requests",
    ],
    27 => [
        ACCESS_CONTROL_ALLOW_ORIGIN => "Access-Control-Allow-Origin",
    ],
    28 => [
        ACCESS_CONTROL_ALLOW_HEADERS => "Access-Control-Allow-Headers",
        ACCESS_CONTROL_ALLOW_METHODS => "Access-Control-Allow-Methods",
    ],
    29 => [
        ACCESS_CONTROL_EXPOSE_HEADERS => "Access-Control-Expose-Headers",
        ACCESS_CONTROL_REQUEST_METHOD => "Access-Control-Request-Method",
    ],
    30 => [
        ACCESS_CONTROL_REQUEST_HEADERS => "Access-Control-Request-Headers",
    ],
    32 => [
        ACCESS_CONTROL_ALLOW_CREDENTIALS => "Access-Control-Allow-Credentials",
    ],
    35 => [
        CONTENT_SECURITY_POLICY_REPORT_ONLY => "Content-Security-Policy-Report-Only",
    ],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RequestHeader, ResponseHeader};

    fn wire(response: &ResponseHeader) -> String {
        let mut buf = Vec::new();
        response.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    fn names(response: &ResponseHeader) -> Vec<String> {
        response
            .case_header_iter()
            .map(|(name, _)| String::from_utf8(name.as_slice().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn every_customary_case_is_its_name_in_another_case_and_found_by_it() {
        for (len, name, case) in CUSTOMARY_CASES {
            assert!(case.eq_ignore_ascii_case(name.as_str()), "{case}");
            assert_eq!(*len, case.len(), "{case}");
            assert_eq!(customary_name(case.as_bytes()).as_ref(), Some(name));
            assert_eq!(customary_name(name.as_str().as_bytes()), None, "{case}");
        }
        assert_eq!(customary_name(b"X-Custom"), None);
        assert_eq!(customary_name(b""), None);
    }

    #[test]
    fn customary_names_keep_no_map_and_are_written_as_received() {
        let mut response = ResponseHeader::build(200, None).unwrap();
        for (name, value) in [
            ("Server", "o"),
            ("ETag", "\"a\""),
            ("x-cache", "HIT"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Content-Length", "0"),
        ] {
            response.append_header(name, value).unwrap();
        }
        assert!(response.has_case());
        assert!(matches!(response.header_case, HeaderCase::Customary));
        let expected = "Server: o\r\nETag: \"a\"\r\nx-cache: HIT\r\nSet-Cookie: a=1\r\n\
                        Set-Cookie: b=2\r\nContent-Length: 0\r\n";
        assert_eq!(wire(&response), expected);
        assert_eq!(
            names(&response),
            [
                "Server",
                "ETag",
                "x-cache",
                "Set-Cookie",
                "Set-Cookie",
                "Content-Length"
            ]
        );
    }

    #[test]
    fn a_name_in_another_case_makes_the_map_of_every_name() {
        for odd in ["X-Cache", "etag", "SERVER"] {
            let mut response = ResponseHeader::build(200, None).unwrap();
            response.append_header("Server", "o").unwrap();
            response.append_header("Set-Cookie", "a=1").unwrap();
            response.append_header("x-b", "1").unwrap();
            assert!(matches!(response.header_case, HeaderCase::Customary));
            response.append_header(odd, "v").unwrap();
            assert!(matches!(response.header_case, HeaderCase::Map(_)), "{odd}");
            response.append_header("Set-Cookie", "b=2").unwrap();
            response.remove_header("x-b");
            response.append_header("Date", "d").unwrap();
            // `remove_header` moves the last name into the gap, in both maps.
            let expected = match odd {
                "SERVER" => {
                    "Server: o\r\nSERVER: v\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nDate: d\r\n"
                        .to_string()
                }
                _ => format!(
                    "Server: o\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n{odd}: v\r\nDate: d\r\n"
                ),
            };
            assert_eq!(wire(&response), expected, "{odd}");
            // A clone and a copy by names give the same head.
            assert_eq!(wire(&response.clone()), expected);
            let mut copy = ResponseHeader::build(200, None).unwrap();
            for ((name, _), (_, value)) in response.case_header_iter().zip(response.headers.iter())
            {
                copy.append_header(name, value.clone()).unwrap();
            }
            assert_eq!(wire(&copy), expected);
        }
    }

    #[test]
    fn received_fields_are_written_in_the_case_they_came_in() {
        let head = Bytes::from_static(b"HostETagX-Oddetagx-low");
        let fields = [
            (0..4, "1"),
            (4..8, "2"),
            (8..13, "3"),
            (13..17, "4"),
            (17..22, "5"),
        ];
        let mut response = ResponseHeader::build(200, None).unwrap();
        for (at, value) in fields.clone() {
            let value = http::HeaderValue::from_static(value);
            response
                .append_received_header(&head, &head[at], value)
                .unwrap();
        }
        // Repeated names are written together, as `HeaderMap` keeps them.
        let expected = "Host: 1\r\nETag: 2\r\netag: 4\r\nX-Odd: 3\r\nx-low: 5\r\n";
        assert_eq!(wire(&response), expected);
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        for (at, value) in fields {
            let value = http::HeaderValue::from_static(value);
            request
                .append_received_header(&head, &head[at], value)
                .unwrap();
        }
        let mut buf = Vec::new();
        request.header_to_h1_wire(&mut buf);
        assert_eq!(String::from_utf8(buf).unwrap(), expected);
    }

    #[test]
    fn without_case_names_are_written_as_before() {
        let mut response = ResponseHeader::build_no_case(200, None).unwrap();
        response.append_header("ETag", "\"a\"").unwrap();
        response.append_header("Server", "o").unwrap();
        assert!(!response.has_case());
        assert_eq!(wire(&response), "etag: \"a\"\r\nServer: o\r\n");
        assert_eq!(response.case_header_iter().count(), 0);
    }

    #[test]
    fn a_request_keeps_its_case_the_same_way() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.append_header("Host", "a").unwrap();
        request.append_header("User-Agent", "u").unwrap();
        request.append_header("accept", "*/*").unwrap();
        request.insert_header("sec-ch-ua", "x").unwrap();
        let mut buf = Vec::new();
        request.header_to_h1_wire(&mut buf);
        assert_eq!(
            buf,
            b"Host: a\r\nUser-Agent: u\r\naccept: */*\r\nsec-ch-ua: x\r\n".to_vec()
        );
    }
}
