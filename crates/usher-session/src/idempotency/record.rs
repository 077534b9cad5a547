//! What an idempotency record holds, and its encoding in a [`SessionData`].
//!
//! One record per (principal, key): `state` (`running`, `done` or `released`), the request
//! fingerprint, the running request's lease expiry, and once done the response — status, headers
//! (values base64, they need not be UTF-8) and body (base64). Anything that does not decode is
//! treated as corrupt and answered like a store failure, never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::data::SessionData;

/// A stored response, replayed byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// The state of one key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    /// A request holds the key until `lease_until` (Unix seconds).
    Running {
        fingerprint: String,
        lease_until: u64,
    },
    /// The request completed; replay this.
    Done {
        fingerprint: String,
        response: Stored,
    },
    /// The request ended in a way that must not be replayed (a 5xx); the next one may run.
    Released { fingerprint: String },
}

impl State {
    pub(crate) fn fingerprint(&self) -> &str {
        match self {
            Self::Running { fingerprint, .. }
            | Self::Done { fingerprint, .. }
            | Self::Released { fingerprint } => fingerprint,
        }
    }

    pub(crate) fn encode(&self) -> SessionData {
        let mut d = SessionData::new();
        match self {
            Self::Running {
                fingerprint,
                lease_until,
            } => {
                d.insert("state", json!("running"));
                d.insert("fp", json!(fingerprint));
                d.insert("lease", json!(lease_until));
            }
            Self::Released { fingerprint } => {
                d.insert("state", json!("released"));
                d.insert("fp", json!(fingerprint));
            }
            Self::Done {
                fingerprint,
                response,
            } => {
                d.insert("state", json!("done"));
                d.insert("fp", json!(fingerprint));
                d.insert("status", json!(response.status.as_u16()));
                let headers: Vec<Value> = response
                    .headers
                    .iter()
                    .map(|(n, v)| json!([n.as_str(), STANDARD.encode(v.as_bytes())]))
                    .collect();
                d.insert("headers", Value::Array(headers));
                d.insert("body", json!(STANDARD.encode(&response.body)));
            }
        }
        d
    }

    pub(crate) fn decode(d: &SessionData) -> Option<Self> {
        let fingerprint = d.get("fp")?.as_str()?.to_owned();
        match d.get("state")?.as_str()? {
            "running" => Some(Self::Running {
                fingerprint,
                lease_until: d.get("lease")?.as_u64()?,
            }),
            "released" => Some(Self::Released { fingerprint }),
            "done" => {
                let status = u16::try_from(d.get("status")?.as_u64()?).ok()?;
                let status = StatusCode::from_u16(status).ok()?;
                let mut headers = HeaderMap::new();
                for h in d.get("headers")?.as_array()? {
                    let pair = h.as_array()?;
                    let name = HeaderName::from_bytes(pair.first()?.as_str()?.as_bytes()).ok()?;
                    let value = STANDARD.decode(pair.get(1)?.as_str()?).ok()?;
                    headers.append(name, HeaderValue::from_bytes(&value).ok()?);
                }
                let body = Bytes::from(STANDARD.decode(d.get("body")?.as_str()?).ok()?);
                Some(Self::Done {
                    fingerprint,
                    response: Stored {
                        status,
                        headers,
                        body,
                    },
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-bin", HeaderValue::from_bytes(b"\xfe\xff").unwrap());
        for s in [
            State::Running {
                fingerprint: "f".into(),
                lease_until: 42,
            },
            State::Released {
                fingerprint: "f".into(),
            },
            State::Done {
                fingerprint: "f".into(),
                response: Stored {
                    status: StatusCode::CREATED,
                    headers,
                    body: Bytes::from_static(b"\x00body\xff"),
                },
            },
        ] {
            let back = State::decode(&s.encode()).unwrap();
            assert_eq!(back, s);
            let bytes = s.encode().encode().unwrap();
            assert_eq!(
                State::decode(&SessionData::decode(&bytes).unwrap()).unwrap(),
                s
            );
        }
    }

    #[test]
    fn junk_does_not_decode() {
        let mut d = SessionData::new();
        assert_eq!(State::decode(&d), None);
        d.insert("fp", json!("f"));
        d.insert("state", json!("bogus"));
        assert_eq!(State::decode(&d), None);
        d.insert("state", json!("done"));
        d.insert("status", json!(99_999));
        assert_eq!(State::decode(&d), None);
        d.insert("state", json!("running"));
        d.insert("lease", json!("soon"));
        assert_eq!(State::decode(&d), None);
    }
}
