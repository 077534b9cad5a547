//! [`Claims`] (what a token says) and [`VerifyOptions`] (what a verifier demands of them).
//!
//! Claim checks are done here rather than by `jsonwebtoken`'s `Validation` for two reasons: the
//! clock is the caller's (`now`, like the store contract), and each failure needs its own
//! [`Rejection`] — "`exp` missing" and "`exp` is a string" are different log lines.

use serde_json::{Map, Value};

use super::error::Rejection;

/// Leeway applied to `exp`, `nbf` and `iat` unless configured otherwise: clocks of different
/// servers disagree by a few seconds, not minutes.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The registered claims Usher uses, plus any others in [`Claims::extra`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims {
    /// Subject: the user.
    pub sub: Option<String>,
    /// Issuer.
    pub iss: Option<String>,
    /// Audiences (serialized as a string when there is one).
    pub aud: Vec<String>,
    /// Expiry, Unix seconds. Always present on a verified token.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds.
    pub iat: Option<u64>,
    /// Token id.
    pub jti: Option<String>,
    /// The refresh family this access token belongs to (see `TokenService`).
    pub sid: Option<String>,
    /// Every other claim.
    pub extra: Map<String, Value>,
}

const REGISTERED: [&str; 8] = ["sub", "iss", "aud", "exp", "nbf", "iat", "jti", "sid"];

impl Claims {
    /// Claims for `sub`, issued at `now`, expiring `ttl_secs` later.
    pub fn new(sub: impl Into<String>, now: u64, ttl_secs: u64) -> Self {
        Self {
            sub: Some(sub.into()),
            exp: now.saturating_add(ttl_secs),
            iat: Some(now),
            ..Self::default()
        }
    }

    /// The JSON object that is signed. Registered claims win over same-named `extra` entries.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m: Map<String, Value> = self
            .extra
            .iter()
            .filter(|(k, _)| !REGISTERED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put("sub", self.sub.clone().map(Value::from));
        put("iss", self.iss.clone().map(Value::from));
        put(
            "aud",
            match self.aud.as_slice() {
                [] => None,
                [one] => Some(Value::from(one.clone())),
                many => Some(Value::from(many.to_vec())),
            },
        );
        put("exp", Some(Value::from(self.exp)));
        put("nbf", self.nbf.map(Value::from));
        put("iat", self.iat.map(Value::from));
        put("jti", self.jti.clone().map(Value::from));
        put("sid", self.sid.clone().map(Value::from));
        m
    }

    /// Reads and checks a verified token's payload against `opts` at `now`.
    pub(crate) fn check(
        mut m: Map<String, Value>,
        opts: &VerifyOptions,
        now: u64,
    ) -> Result<Self, Rejection> {
        let exp = match m.remove("exp") {
            None => return Err(Rejection::MissingExp),
            Some(v) => numeric_date(&v).ok_or(Rejection::ExpNotANumber)?,
        };
        let time = |v: Option<Value>| match v {
            None => Ok(None),
            Some(v) => numeric_date(&v)
                .map(Some)
                .ok_or(Rejection::TimeClaimNotANumber),
        };
        let nbf = time(m.remove("nbf"))?;
        let iat = time(m.remove("iat"))?;
        // RFC 7519 §4.1.4: not acceptable "on or after" exp.
        if now >= exp.saturating_add(opts.leeway_secs) {
            return Err(Rejection::Expired);
        }
        let future = |t: Option<u64>| t.is_some_and(|t| t > now.saturating_add(opts.leeway_secs));
        if future(nbf) || future(iat) {
            return Err(Rejection::NotYetValid);
        }
        let string = |v: Option<Value>| match v {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Rejection::Malformed),
        };
        let iss = string(m.remove("iss"))?;
        if !opts.issuers.is_empty() && !iss.as_ref().is_some_and(|i| opts.issuers.contains(i)) {
            return Err(Rejection::WrongIssuer);
        }
        let aud = match m.remove("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(Rejection::Malformed),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(Rejection::Malformed),
        };
        let aud_ok = if opts.audiences.is_empty() {
            aud.is_empty()
        } else {
            aud.iter().any(|a| opts.audiences.contains(a))
        };
        if !aud_ok {
            return Err(Rejection::WrongAudience);
        }
        Ok(Self {
            sub: string(m.remove("sub"))?,
            iss,
            aud,
            exp,
            nbf,
            iat,
            jti: string(m.remove("jti"))?,
            sid: string(m.remove("sid"))?,
            extra: m,
        })
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds, possibly fractional. Negative values
/// clamp to 0 (long expired); anything that is not a finite number is `None`.
fn numeric_date(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    if !f.is_finite() {
        return None;
    }
    // `as` saturates for floats out of range, which is the wanted clamping.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(f.max(0.0).floor() as u64)
}

/// What a verifier demands beyond a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accepted `iss` values; empty accepts any (or none).
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty means the token must carry no `aud`.
    pub audiences: Vec<String>,
    /// Clock-skew allowance for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Longer tokens are [`Rejection::Malformed`] before any parsing.
    pub max_token_len: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_len: 8 * 1024,
        }
    }
}

impl VerifyOptions {
    /// Accept only tokens with `iss` = `issuer`.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accept only tokens whose `aud` includes `audience`.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The clock-skew allowance.
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn time_claims() {
        let o = VerifyOptions::default().with_leeway(10);
        let ok = Claims::check(obj(json!({"exp": 1000})), &o, 500).unwrap();
        assert_eq!(ok.exp, 1000);
        assert_eq!(ok.sub, None);
        assert_eq!(
            Claims::check(obj(json!({})), &o, 0),
            Err(Rejection::MissingExp)
        );
        for bad in [json!("2000000000"), json!(null), json!(true), json!([1])] {
            assert_eq!(
                Claims::check(obj(json!({ "exp": bad })), &o, 0),
                Err(Rejection::ExpNotANumber)
            );
        }
        assert_eq!(
            Claims::check(obj(json!({"exp": 1000, "nbf": "1"})), &o, 0),
            Err(Rejection::TimeClaimNotANumber)
        );
        // Leeway both ways.
        assert!(Claims::check(obj(json!({"exp": 1000})), &o, 1009).is_ok());
        assert_eq!(
            Claims::check(obj(json!({"exp": 1000})), &o, 1010),
            Err(Rejection::Expired)
        );
        assert!(Claims::check(obj(json!({"exp": 9000, "nbf": 510})), &o, 500).is_ok());
        assert_eq!(
            Claims::check(obj(json!({"exp": 9000, "nbf": 511})), &o, 500),
            Err(Rejection::NotYetValid)
        );
        assert_eq!(
            Claims::check(obj(json!({"exp": 9000, "iat": 600})), &o, 500),
            Err(Rejection::NotYetValid)
        );
        // Fractional and negative NumericDates.
        assert_eq!(
            Claims::check(obj(json!({"exp": 1000.7})), &o, 0)
                .unwrap()
                .exp,
            1000
        );
        assert_eq!(
            Claims::check(obj(json!({"exp": -5})), &o, 100),
            Err(Rejection::Expired)
        );
    }

    #[test]
    fn issuer_and_audience() {
        let o = VerifyOptions::default()
            .with_issuer("usher")
            .with_audience("shop");
        let good = json!({"exp": 100, "iss": "usher", "aud": ["x", "shop"]});
        assert!(Claims::check(obj(good), &o, 0).is_ok());
        assert_eq!(
            Claims::check(obj(json!({"exp": 100, "aud": "shop"})), &o, 0),
            Err(Rejection::WrongIssuer)
        );
        assert_eq!(
            Claims::check(
                obj(json!({"exp": 100, "iss": "evil", "aud": "shop"})),
                &o,
                0
            ),
            Err(Rejection::WrongIssuer)
        );
        assert_eq!(
            Claims::check(
                obj(json!({"exp": 100, "iss": "usher", "aud": "bank"})),
                &o,
                0
            ),
            Err(Rejection::WrongAudience)
        );
        assert_eq!(
            Claims::check(obj(json!({"exp": 100, "iss": "usher"})), &o, 0),
            Err(Rejection::WrongAudience)
        );
        // No audience expected: a token addressed to someone is not for us.
        let none = VerifyOptions::default();
        assert_eq!(
            Claims::check(obj(json!({"exp": 100, "aud": "shop"})), &none, 0),
            Err(Rejection::WrongAudience)
        );
        assert_eq!(
            Claims::check(obj(json!({"exp": 100, "iss": "usher", "aud": 5})), &o, 0),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            Claims::check(obj(json!({"exp": 100, "sub": 5})), &none, 0),
            Err(Rejection::Malformed)
        );
    }

    #[test]
    fn json_round_trip_keeps_extra_and_registered_win() {
        let mut c = Claims::new("alice", 100, 300);
        c.iss = Some("usher".into());
        c.aud = vec!["shop".into()];
        c.sid = Some("fam".into());
        c.extra.insert("role".into(), json!("admin"));
        c.extra.insert("sub".into(), json!("mallory"));
        let m = c.to_json();
        assert_eq!(m["sub"], json!("alice"));
        assert_eq!(m["aud"], json!("shop"));
        let o = VerifyOptions::default()
            .with_issuer("usher")
            .with_audience("shop");
        let back = Claims::check(m, &o, 100).unwrap();
        c.extra.remove("sub");
        assert_eq!(back, c);
    }
}
