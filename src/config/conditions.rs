//! Stage 2 for rule conditions: regexes compiled, address blocks parsed, values lower-cased
//! unless the condition is case-sensitive.

use super::diagnostics::{FileId, Report};
use super::file::{FileCondition, MatchVariable, Operator};
use super::model::{Condition, IpNetwork, MethodSet};

pub(super) fn build_condition(
    report: &mut Report,
    file: FileId,
    at: &str,
    raw: &FileCondition,
) -> Option<Condition> {
    let errors_before = report.items.len();
    let needs_selector = matches!(
        raw.variable,
        MatchVariable::RequestHeader | MatchVariable::QueryParam
    );
    match (&raw.selector, needs_selector) {
        (None, true) => report.error(
            file,
            at,
            "this condition needs a `selector` (the header or parameter name)",
        ),
        (Some(_), false) => report.error(
            file,
            &format!("{at}.selector"),
            "`selector` only applies to request_header and query_param",
        ),
        _ => {}
    }
    let operator = raw.operator.unwrap_or(Operator::Equals);
    if operator == Operator::Any {
        if !raw.values.is_empty() {
            report.error(
                file,
                &format!("{at}.values"),
                "operator `any` takes no values",
            );
        }
    } else if raw.values.is_empty() {
        report.error(file, at, "this condition needs at least one value");
    }
    if (operator == Operator::IpMatch) != (raw.variable == MatchVariable::ClientAddress)
        && operator != Operator::Any
    {
        report.error(file, &format!("{at}.operator"), "client_address is matched with `ip_match`, and `ip_match` only applies to client_address");
    }
    let mut regexes = Vec::new();
    let mut networks = Vec::new();
    for (v, value) in raw.values.iter().enumerate() {
        let path = format!("{at}.values[{v}]");
        match operator {
            Operator::Regex => {
                let pattern = if raw.case_sensitive {
                    value.clone()
                } else {
                    format!("(?i){value}")
                };
                match regex::Regex::new(&pattern) {
                    Ok(regex) => regexes.push(regex),
                    Err(e) => report.error(file, &path, format!("bad regex: {e}")),
                }
            }
            Operator::IpMatch => match parse_network(value) {
                Some(network) => networks.push(network),
                None => report.error(
                    file,
                    &path,
                    format!("\"{value}\" is not an address or CIDR block"),
                ),
            },
            _ => {}
        }
        if raw.variable == MatchVariable::RequestMethod && MethodSet::bit(value).is_none() {
            report.error(file, &path, format!("unknown method \"{value}\""));
        }
        if raw.variable == MatchVariable::RequestProtocol
            && !matches!(value.to_ascii_lowercase().as_str(), "http" | "https")
        {
            report.error(
                file,
                &path,
                format!("protocol \"{value}\" must be http or https"),
            );
        }
    }
    if report.items.len() > errors_before {
        return None;
    }
    let values = if raw.case_sensitive {
        raw.values.clone()
    } else {
        raw.values.iter().map(|v| v.to_ascii_lowercase()).collect()
    };
    Some(Condition {
        variable: raw.variable,
        selector: raw.selector.as_ref().map(|s| {
            if raw.variable == MatchVariable::RequestHeader {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        }),
        operator,
        values,
        regexes,
        networks,
        negate: raw.negate,
        case_sensitive: raw.case_sensitive,
    })
}

pub(super) fn parse_network(text: &str) -> Option<IpNetwork> {
    let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
    let addr: std::net::IpAddr = addr.trim().parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = if prefix.is_empty() {
        max
    } else {
        prefix.trim().parse().ok()?
    };
    (prefix_len <= max).then_some(IpNetwork { addr, prefix_len })
}

#[cfg(test)]
mod tests {
    use super::parse_network;

    #[test]
    fn networks() {
        let net = parse_network("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(parse_network("::1")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(parse_network("10.0.0.0/33").is_none());
        assert!(parse_network("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }
}
