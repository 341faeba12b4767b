//! Rule conditions: the values inside one condition are ORed, `negate` inverts the result.
//! Comparisons avoid allocating: case-insensitive ones compare ASCII without lower-casing.

use crate::config::model::{Condition, MatchVariable, Operator};

use super::request::RequestFacts;

impl Condition {
    /// Whether the condition holds for `request`.
    pub fn holds(&self, request: &RequestFacts<'_>) -> bool {
        self.evaluate(request) != self.negate
    }

    fn evaluate(&self, request: &RequestFacts<'_>) -> bool {
        match self.variable {
            MatchVariable::ClientAddress => {
                let Some(ip) = request.client_ip else {
                    return false;
                };
                let ip = ip.to_canonical();
                self.operator == Operator::Any || self.networks.iter().any(|net| net.contains(ip))
            }
            MatchVariable::RequestHeader => {
                let name = self.selector.as_deref().unwrap_or("");
                let mut values = request.headers.get_all(name).iter().peekable();
                if values.peek().is_none() {
                    return false;
                }
                values.any(|value| value.to_str().is_ok_and(|text| self.compare(text)))
            }
            MatchVariable::QueryParam => {
                let name = self.selector.as_deref().unwrap_or("");
                request
                    .query_param(name)
                    .is_some_and(|value| self.compare(value))
            }
            MatchVariable::QueryString => self.compare(request.query.unwrap_or("")),
            MatchVariable::RequestMethod => self.compare(request.method),
            MatchVariable::RequestPath => self.compare(request.path),
            MatchVariable::Host => self.compare(request.host_name()),
            MatchVariable::RequestProtocol => self.compare(request.scheme.as_str()),
            MatchVariable::FileExtension => {
                let last = request.path.rsplit('/').next().unwrap_or("");
                match last.rsplit_once('.') {
                    Some((_, extension)) => self.compare(extension),
                    None => false,
                }
            }
        }
    }

    fn compare(&self, subject: &str) -> bool {
        if self.operator == Operator::Any {
            return true;
        }
        if self.operator == Operator::Regex {
            return self.regexes.iter().any(|regex| regex.is_match(subject));
        }
        self.values.iter().any(|value| {
            let (s, v) = (subject.as_bytes(), value.as_bytes());
            match self.operator {
                Operator::Equals => s.len() == v.len() && self.bytes_equal(s, v),
                Operator::BeginsWith => s.len() >= v.len() && self.bytes_equal(&s[..v.len()], v),
                Operator::EndsWith => {
                    s.len() >= v.len() && self.bytes_equal(&s[s.len() - v.len()..], v)
                }
                Operator::Contains => {
                    v.is_empty() || s.windows(v.len()).any(|w| self.bytes_equal(w, v))
                }
                Operator::Any | Operator::Regex | Operator::IpMatch => false,
            }
        })
    }

    /// `value` is already lower-case unless the condition is case-sensitive.
    fn bytes_equal(&self, subject: &[u8], value: &[u8]) -> bool {
        if self.case_sensitive {
            subject == value
        } else {
            subject
                .iter()
                .zip(value)
                .all(|(s, v)| s.to_ascii_lowercase() == *v)
        }
    }
}
