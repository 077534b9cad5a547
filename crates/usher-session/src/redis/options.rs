//! [`RedisOptions`] and the URL forms (documented on [`RedisOptions::url`]) that choose a single
//! node, a Redis Cluster or a Sentinel deployment. Parsing is ours only for the cluster and
//! Sentinel forms, which list several hosts; single-node URLs go to redis-rs unchanged.

use std::time::Duration;

/// Connection settings of a [`RedisStore`](super::RedisStore).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Where Redis is. The scheme picks the deployment:
    ///
    /// * `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS), `redis+unix://…` —
    ///   one node, in redis-rs' own URL syntax.
    /// * `redis+cluster://[[user]:password@]host:port[,host:port…]` — a Redis Cluster; the
    ///   hosts are seeds (one reachable seed is enough), the topology is discovered. No `db`: a
    ///   cluster only has database 0.
    /// * `redis+sentinel://[[user]:password@]host:port[,host:port…]/master-name[/db]` — the
    ///   master the Sentinels at those addresses report for `master-name`.
    ///
    /// `rediss+cluster://` and `rediss+sentinel://` use TLS to the data nodes. Credentials are
    /// for the data nodes (Sentinels are asked without authentication) and may be
    /// percent-encoded. Ports default to 6379 for cluster seeds and 26379 for Sentinels.
    pub url: String,
    /// Prefix of every key the store writes; default `usher:`. Must not contain `{` or `}`,
    /// which would change the keys' cluster hash tags.
    pub prefix: String,
    /// Timeout of one connection attempt; default 1 s.
    pub connection_timeout: Duration,
    /// Timeout of one command's response; default 2 s. An operation that times out is
    /// [`StoreError::Unavailable`](crate::StoreError::Unavailable).
    pub response_timeout: Duration,
    /// Connection attempts after the first when reconnecting; default 2 (with a short
    /// exponential backoff), so a request fails fast while Redis is down.
    pub reconnect_retries: usize,
}

impl RedisOptions {
    /// Default options for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "usher:".to_owned(),
            connection_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            reconnect_retries: 2,
        }
    }

    /// The same options with another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

/// Why [`RedisOptions`] were refused (the source of the
/// [`StoreError::Unavailable`](crate::StoreError::Unavailable) that `connect` returns).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRedisOptions {
    /// The URL's scheme is none of the supported ones.
    #[error(
        "unsupported Redis URL scheme in {0:?} (want redis, rediss, redis+unix, redis+cluster or redis+sentinel)"
    )]
    Scheme(String),
    /// A cluster or Sentinel URL without any host.
    #[error("the Redis URL names no host")]
    NoHosts,
    /// A host entry that is not `host[:port]`.
    #[error("invalid host {0:?} in the Redis URL")]
    Host(String),
    /// A Sentinel URL without the master's name.
    #[error(
        "a redis+sentinel URL needs the master name as its path: redis+sentinel://host:port/mymaster"
    )]
    MasterName,
    /// A database number that is not one.
    #[error("invalid database {0:?} in the Redis URL")]
    Database(String),
    /// A cluster URL with a path (a cluster only has database 0).
    #[error("a redis+cluster URL takes no path or database (got {0:?})")]
    ClusterPath(String),
    /// The key prefix contains a hash-tag brace.
    #[error("the key prefix {0:?} must not contain '{{' or '}}'")]
    Prefix(String),
    /// Credentials that are not valid percent-encoded UTF-8.
    #[error("the credentials in the Redis URL are not valid percent-encoded UTF-8")]
    Credentials,
}

/// Where the store connects, parsed from [`RedisOptions::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A single node: the URL as redis-rs parses it.
    Single(String),
    /// Redis Cluster seed nodes.
    Cluster(Nodes),
    /// Sentinels and the master's name and database.
    Sentinel {
        sentinels: Nodes,
        master: String,
        db: i64,
    },
}

/// Hosts with the credentials and TLS choice for the data nodes.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Nodes {
    pub hosts: Vec<(String, u16)>,
    pub tls: bool,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("hosts", &self.hosts)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Target {
    /// Parses `url` (see the module docs).
    pub(super) fn parse(url: &str) -> Result<Self, InvalidRedisOptions> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(InvalidRedisOptions::Scheme(url.to_owned()));
        };
        let (tls, kind) = match scheme.to_ascii_lowercase().as_str() {
            "redis" | "rediss" | "redis+unix" | "unix" => return Ok(Self::Single(url.to_owned())),
            "redis+cluster" => (false, "cluster"),
            "rediss+cluster" => (true, "cluster"),
            "redis+sentinel" => (false, "sentinel"),
            "rediss+sentinel" => (true, "sentinel"),
            _ => return Err(InvalidRedisOptions::Scheme(scheme.to_owned())),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, password) = match u.split_once(':') {
                    Some((user, pw)) => (user, Some(pw)),
                    None => (u, None),
                };
                let user = Some(decode(user)?).filter(|u| !u.is_empty());
                (user, password.map(decode).transpose()?)
            }
        };
        let default_port = if kind == "cluster" { 6379 } else { 26379 };
        let hosts = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| host(h, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        if hosts.is_empty() {
            return Err(InvalidRedisOptions::NoHosts);
        }
        let nodes = Nodes {
            hosts,
            tls,
            user,
            password,
        };
        if kind == "cluster" {
            if !path.is_empty() {
                return Err(InvalidRedisOptions::ClusterPath(path.to_owned()));
            }
            return Ok(Self::Cluster(nodes));
        }
        let path = path.trim_end_matches('/');
        let (master, db) = path.split_once('/').unwrap_or((path, "0"));
        if master.is_empty() {
            return Err(InvalidRedisOptions::MasterName);
        }
        let db = db
            .parse()
            .map_err(|_| InvalidRedisOptions::Database(db.to_owned()))?;
        Ok(Self::Sentinel {
            sentinels: nodes,
            master: master.to_owned(),
            db,
        })
    }
}

/// `host[:port]` or `[v6]:port`.
fn host(s: &str, default_port: u16) -> Result<(String, u16), InvalidRedisOptions> {
    let bad = || InvalidRedisOptions::Host(s.to_owned());
    let (name, port) = if let Some(v6) = s.strip_prefix('[') {
        let (name, after) = v6.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (name, None),
            p => (name, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (s, None),
        }
    };
    if name.is_empty() || name.contains(['/', '@', ' ']) {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse().ok().filter(|&p| p != 0).ok_or_else(bad)?,
    };
    Ok((name.to_owned(), port))
}

/// Percent-decodes URL credentials.
fn decode(s: &str) -> Result<String, InvalidRedisOptions> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or(InvalidRedisOptions::Credentials)?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| InvalidRedisOptions::Credentials)?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| InvalidRedisOptions::Credentials)
}

/// Checks the prefix: braces would move the keys' hash tags.
pub(super) fn check_prefix(prefix: &str) -> Result<(), InvalidRedisOptions> {
    if prefix.contains(['{', '}']) {
        return Err(InvalidRedisOptions::Prefix(prefix.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(hosts: &[(&str, u16)]) -> Nodes {
        Nodes {
            hosts: hosts.iter().map(|(h, p)| ((*h).to_owned(), *p)).collect(),
            tls: false,
            user: None,
            password: None,
        }
    }

    #[test]
    fn single_node_urls_pass_through() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "rediss://h:1/",
            "redis+unix:///tmp/r.sock",
        ] {
            assert_eq!(Target::parse(url).unwrap(), Target::Single(url.to_owned()));
        }
    }

    #[test]
    fn cluster_urls() {
        assert_eq!(
            Target::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap(),
            Target::Cluster(nodes(&[("127.0.0.1", 7000), ("127.0.0.1", 7001)]))
        );
        let Target::Cluster(n) =
            Target::parse("rediss+cluster://bob:p%40ss@h,[::1]:7002/").unwrap()
        else {
            panic!("not a cluster");
        };
        assert!(n.tls);
        assert_eq!(n.user.as_deref(), Some("bob"));
        assert_eq!(n.password.as_deref(), Some("p@ss"));
        assert_eq!(n.hosts, [("h".to_owned(), 6379), ("::1".to_owned(), 7002)]);
        assert!(!format!("{n:?}").contains("p@ss"), "password redacted");
    }

    #[test]
    fn sentinel_urls() {
        assert_eq!(
            Target::parse("redis+sentinel://127.0.0.1,127.0.0.1:26380/mymaster/3").unwrap(),
            Target::Sentinel {
                sentinels: nodes(&[("127.0.0.1", 26379), ("127.0.0.1", 26380)]),
                master: "mymaster".to_owned(),
                db: 3,
            }
        );
        let Target::Sentinel { sentinels, db, .. } =
            Target::parse("redis+sentinel://:secret@h:1/m").unwrap()
        else {
            panic!("not a sentinel");
        };
        assert_eq!(
            (sentinels.user, sentinels.password, db),
            (None, Some("secret".into()), 0)
        );
    }

    #[test]
    fn bad_urls_are_clear_errors() {
        let cases = [
            ("http://x", "scheme"),
            ("no-scheme", "scheme"),
            ("redis+cluster://", "no host"),
            ("redis+cluster://h:0", "invalid host"),
            ("redis+cluster://h:70000", "invalid host"),
            ("redis+cluster://h:x", "invalid host"),
            ("redis+cluster://[::1", "invalid host"),
            ("redis+cluster://h:1/2", "no path"),
            ("redis+sentinel://h:1", "master name"),
            ("redis+sentinel://h:1/m/x", "invalid database"),
            ("redis+sentinel://%zz@h:1/m", "credentials"),
            ("redis+sentinel://%ff@h:1/m", "credentials"),
        ];
        for (url, want) in cases {
            let err = Target::parse(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn braces_in_the_prefix_are_refused() {
        assert!(check_prefix("usher:").is_ok());
        assert!(check_prefix("a{b").is_err());
        assert!(check_prefix("a}").is_err());
    }
}
