//! The architectures the lab compares: how the load balancer routes and where sessions live.

use std::fmt;
use std::str::FromStr;

/// One way to run a web tier on several servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Architecture {
    /// Round robin, sessions in each shop's memory: the broken baseline.
    RrMemory,
    /// Sealed affinity cookie, sessions in memory.
    StickyCookieMemory,
    /// Source-IP consistent hashing, sessions in memory.
    StickyIpMemory,
    /// Least-connections, sessions in the shared store.
    Shared,
    /// Round robin, signed tokens; carts in the database.
    Jwt,
    /// Sealed affinity cookie in front of the shared store.
    Hybrid,
}

impl Architecture {
    /// Every architecture, in report order.
    pub const ALL: [Self; 6] = [
        Self::RrMemory,
        Self::StickyCookieMemory,
        Self::StickyIpMemory,
        Self::Shared,
        Self::Jwt,
        Self::Hybrid,
    ];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RrMemory => "rr-memory",
            Self::StickyCookieMemory => "sticky-cookie-memory",
            Self::StickyIpMemory => "sticky-ip-memory",
            Self::Shared => "shared",
            Self::Jwt => "jwt",
            Self::Hybrid => "hybrid",
        }
    }

    /// Whether session state lives in each shop's own memory (lost with the shop).
    pub fn memory_sessions(self) -> bool {
        matches!(
            self,
            Self::RrMemory | Self::StickyCookieMemory | Self::StickyIpMemory
        )
    }

    /// Whether the load balancer pins clients to a shop.
    pub fn sticky(self) -> bool {
        matches!(
            self,
            Self::StickyCookieMemory | Self::StickyIpMemory | Self::Hybrid
        )
    }

    /// `usher lb` flags for this architecture (backends, ports and logging are added elsewhere).
    pub fn lb_args(self) -> Vec<String> {
        let args: &[&str] = match self {
            Self::RrMemory | Self::Jwt => &["--policy", "round-robin", "--affinity", "none"],
            Self::StickyCookieMemory | Self::Hybrid => {
                &["--policy", "least-conn", "--affinity", "cookie"]
            }
            // Pure consistent hashing: with the default bounded-load cap, the NAT hot spot's
            // overflow would go to shops that do not hold those users' in-memory sessions.
            Self::StickyIpMemory => &[
                "--policy",
                "maglev",
                "--affinity",
                "source-ip",
                "--balance-factor",
                "100",
            ],
            Self::Shared => &["--policy", "least-conn", "--affinity", "none"],
        };
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    /// `usher shop` flags that choose sessions and authentication. `shared_store` is the
    /// `--sessions` value of the shared store; `dir` is the run's directory, where the token
    /// architecture keeps the signing keys every shop shares (the first shop creates the file).
    pub fn shop_args(self, shared_store: &str, dir: &std::path::Path) -> Vec<String> {
        let mut args = vec!["--sessions".to_owned()];
        if self.memory_sessions() {
            args.push("memory".to_owned());
        } else {
            args.push(shared_store.to_owned());
        }
        if self == Self::Jwt {
            let keys = dir.join("jwt-keys.json").display().to_string();
            args.extend(["--auth".into(), "jwt".into(), "--jwt-keys".into(), keys]);
        }
        args
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Architecture {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "unknown architecture {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Parses `a,b,c` into architectures, rejecting unknown names and duplicates.
pub fn parse_list(s: &str) -> Result<Vec<Architecture>, String> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let a: Architecture = name.parse()?;
        if out.contains(&a) {
            return Err(format!("architecture {name:?} listed twice"));
        }
        out.push(a);
    }
    if out.is_empty() {
        return Err("no architecture given".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Architecture::ALL {
            assert_eq!(a.as_str().parse::<Architecture>().unwrap(), a);
        }
        assert!(
            "nope"
                .parse::<Architecture>()
                .unwrap_err()
                .contains("rr-memory")
        );
    }

    #[test]
    fn lists() {
        assert_eq!(
            parse_list("shared, rr-memory").unwrap(),
            [Architecture::Shared, Architecture::RrMemory]
        );
        assert!(parse_list("shared,shared").is_err());
        assert!(parse_list("").is_err());
    }

    #[test]
    fn memory_architectures_never_get_the_shared_store() {
        for a in Architecture::ALL {
            let args = a.shop_args("sqlite:/x.db", std::path::Path::new("/run"));
            assert_eq!(args[1] == "memory", a.memory_sessions(), "{a}");
        }
    }
}
