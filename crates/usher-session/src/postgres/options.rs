//! [`PostgresOptions`]: where a [`super::PostgresStore`] connects and which table it owns.

use std::fmt;
use std::time::Duration;

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); longer ones are silently truncated,
/// which could make two stores share a table by accident, so they are refused instead.
const MAX_IDENTIFIER: usize = 63;

/// Suffix of the user index's name (`<table>_user`); the table name leaves room for it.
pub(super) const USER_INDEX_SUFFIX: &str = "_user";

/// Suffix of the purge index's name (`<table>_dead`): as long as [`USER_INDEX_SUFFIX`], so the
/// same table-name limit covers both.
pub(super) const PURGE_INDEX_SUFFIX: &str = "_dead";

/// Connection and layout settings of a [`super::PostgresStore`].
///
/// The table (and schema) are options so that several applications, or several tests, can share
/// one database without seeing each other's sessions.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A libpq-style URL or key/value string, e.g. `postgres://user@127.0.0.1:5432/shop`.
    pub url: String,
    /// Schema holding the table, created if missing; `None` (default) uses the connection's
    /// `search_path` (normally `public`).
    pub schema: Option<String>,
    /// The sessions table; default `usher_sessions`. Letters, digits and `_`, not starting with a
    /// digit, at most 58 characters (so the index name `<table>_user` fits PostgreSQL's 63).
    pub table: String,
    /// Most connections the store's pool opens; default 16.
    pub pool_size: usize,
    /// Timeout of establishing one connection (TCP connect plus startup); default 2 s.
    pub connect_timeout: Duration,
    /// How long an operation waits for a free pooled connection before it fails as
    /// unavailable; default 5 s.
    pub wait_timeout: Duration,
    /// Server-side `statement_timeout` of the store's connections (a statement stuck on a lock
    /// fails instead of hanging the request); default 5 s, `None` keeps the server's setting.
    pub statement_timeout: Option<Duration>,
}

impl PostgresOptions {
    /// Default options for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            table: "usher_sessions".to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            wait_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(5)),
        }
    }

    /// The same options with another table name.
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The same options with the table in `schema` (created if missing).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The same options with another pool size.
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Checks the names and sizes, returning the quoted, schema-qualified table name.
    pub(super) fn validate(&self) -> Result<Layout, InvalidPostgresOptions> {
        let max_table = MAX_IDENTIFIER - USER_INDEX_SUFFIX.len().max(PURGE_INDEX_SUFFIX.len());
        check_identifier("table", &self.table, max_table)?;
        if let Some(schema) = &self.schema {
            check_identifier("schema", schema, MAX_IDENTIFIER)?;
        }
        if self.pool_size == 0 {
            return Err(InvalidPostgresOptions::PoolSize);
        }
        let table = match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}\"", self.table),
            None => format!("\"{}\"", self.table),
        };
        Ok(Layout {
            schema: self.schema.as_ref().map(|s| format!("\"{s}\"")),
            index: format!("\"{}{USER_INDEX_SUFFIX}\"", self.table),
            purge_index: format!("\"{}{PURGE_INDEX_SUFFIX}\"", self.table),
            table,
        })
    }
}

/// The quoted SQL names a store uses, made only from validated identifiers.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// `"schema"`, if one was configured.
    pub schema: Option<String>,
    /// `"schema"."table"` or `"table"`.
    pub table: String,
    /// `"table_user"` (an index lives in its table's schema, so it is never qualified).
    pub index: String,
    /// `"table_dead"`: the index the purge of expired rows and lapsed tombstones scans.
    pub purge_index: String,
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("wait_timeout", &self.wait_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// Options a [`super::PostgresStore`] cannot be built from (reported as
/// [`crate::StoreError::Unavailable`] by `connect`, with this as the source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPostgresOptions {
    /// A table or schema name that is not a plain identifier.
    #[error(
        "invalid {what} name {name:?}: use 1 to {max} ASCII letters, digits or `_`, not starting \
         with a digit"
    )]
    Identifier {
        /// `table` or `schema`.
        what: &'static str,
        /// The name given.
        name: String,
        /// The longest name allowed.
        max: usize,
    },
    /// A pool that could hold no connection.
    #[error("pool_size must be at least 1")]
    PoolSize,
    /// The URL did not parse.
    #[error("invalid PostgreSQL connection URL")]
    Url(#[source] tokio_postgres::Error),
}

/// Plain identifiers only: they are spliced into SQL (quoted), so nothing that could need
/// escaping, and nothing PostgreSQL would truncate.
fn check_identifier(
    what: &'static str,
    name: &str,
    max: usize,
) -> Result<(), InvalidPostgresOptions> {
    let ok = !name.is_empty()
        && name.len() <= max
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(InvalidPostgresOptions::Identifier {
            what,
            name: name.to_owned(),
            max,
        })
    }
}

/// The URL with any password replaced, for `Debug` output and logs.
pub(super) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    // `scheme://user:password@host...`
    if let Some(scheme_end) = out.find("://") {
        let start = scheme_end + 3;
        let authority_end = out[start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..authority_end].rfind('@') {
            let userinfo = &out[start..start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(start + colon + 1..start + at, "***");
            }
        }
    }
    // `password=...` in a query string or a key/value string.
    let mut from = 0;
    while let Some(i) = out[from..].find("password=") {
        let value = from + i + "password=".len();
        let end = out[value..]
            .find(['&', ' '])
            .map_or(out.len(), |e| value + e);
        out.replace_range(value..end, "***");
        from = value + 3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        let ok = PostgresOptions::new("postgres://x@127.0.0.1/db")
            .with_schema("tenant_1")
            .with_table("Sessions_2");
        let layout = ok.validate().unwrap();
        assert_eq!(layout.table, r#""tenant_1"."Sessions_2""#);
        assert_eq!(layout.index, r#""Sessions_2_user""#);
        assert_eq!(layout.purge_index, r#""Sessions_2_dead""#);
        assert_eq!(layout.schema.as_deref(), Some(r#""tenant_1""#));
        let plain = PostgresOptions::new("postgres://x@127.0.0.1/db")
            .validate()
            .unwrap();
        assert_eq!(plain.table, r#""usher_sessions""#);
        assert!(plain.schema.is_none());

        for bad in [
            "",
            "1abc",
            "a-b",
            "a\"; DROP TABLE x; --",
            "ß",
            &"x".repeat(59),
        ] {
            let opts = PostgresOptions::new("postgres://x@127.0.0.1/db").with_table(bad);
            assert!(
                matches!(
                    opts.validate(),
                    Err(InvalidPostgresOptions::Identifier { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(
            PostgresOptions::new("u")
                .with_table("x".repeat(58))
                .validate()
                .is_ok()
        );
        let opts = PostgresOptions::new("u").with_schema("bad schema");
        assert!(opts.validate().is_err());
        let opts = PostgresOptions::new("u").with_pool_size(0);
        assert!(matches!(
            opts.validate(),
            Err(InvalidPostgresOptions::PoolSize)
        ));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://shop:s3cret@127.0.0.1:5432/db"),
            "postgres://shop:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact("postgres://shop@127.0.0.1/db?password=abc&sslmode=disable"),
            "postgres://shop@127.0.0.1/db?password=***&sslmode=disable"
        );
        assert_eq!(
            redact("host=127.0.0.1 password=abc user=shop"),
            "host=127.0.0.1 password=*** user=shop"
        );
        assert_eq!(redact("postgres://127.0.0.1/db"), "postgres://127.0.0.1/db");
        let opts = PostgresOptions::new("postgres://a:b@127.0.0.1/db");
        assert!(!format!("{opts:?}").contains(":b@"));
    }
}
