//! The store's connection: one enum over a single node, a Redis Cluster and a Sentinel-managed
//! master, each multiplexed (one socket per node, shared by every task) and reconnecting on its
//! own, behind redis-rs' [`ConnectionLike`] so the store's commands and scripts do not care
//! which it is.
//!
//! * Single node: a [`ConnectionManager`], which reconnects with a short backoff after the
//!   server restarts.
//! * Cluster: redis-rs' async [`ClusterConnection`], which routes each command (and each script,
//!   by its first key) to the master owning the slot, follows `MOVED`/`ASK`, and refreshes the
//!   slot map and reconnects when a node goes away.
//! * Sentinel: a [`ConnectionManager`] to the master the Sentinels named at connect time. When a
//!   command fails in a way that suggests the master moved (connection errors, timeouts,
//!   `READONLY` from a demoted master), a background task asks the Sentinels again (at most once
//!   per [`REDISCOVER_EVERY`]) and swaps in a manager for the master they name now. The failing
//!   command itself still fails with `Unavailable`; the next ones go to the new master.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    Client, Cmd, ConnectionAddr, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, TlsMode, Value,
};
use tokio::sync::Mutex as AsyncMutex;

use super::options::{Nodes, RedisOptions, Target};

/// Least time between two Sentinel look-ups after failures.
pub(super) const REDISCOVER_EVERY: Duration = Duration::from_secs(1);

/// A connection to whichever deployment the URL named. Cheap to clone (clones share sockets).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

/// A node to `SCAN`: the connection's only node, or one cluster master by address.
pub(super) enum ScanNode {
    Only,
    Master(String, u16),
}

impl Conn {
    /// Connects to `target`; fails if it cannot be reached now.
    pub(super) async fn connect(target: &Target, options: &RedisOptions) -> RedisResult<Self> {
        match target {
            Target::Single(url) => {
                if url.starts_with("rediss") {
                    install_crypto_provider();
                }
                let client = Client::open(url.as_str())?;
                let manager = ConnectionManager::new_with_config(client, manager_config(options));
                Ok(Self::Single(manager.await?))
            }
            Target::Cluster(nodes) => Ok(Self::Cluster(cluster(nodes, options).await?)),
            Target::Sentinel {
                sentinels,
                master,
                db,
            } => Ok(Self::Sentinel(
                SentinelConn::connect(sentinels, master, *db, options).await?,
            )),
        }
    }

    /// Whether this is a Redis Cluster connection (keys of one script must share a slot).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The nodes whose keyspaces together hold every key: the one node, or every cluster master
    /// (from `CLUSTER NODES`, skipping failed ones).
    pub(super) async fn scan_nodes(&mut self) -> RedisResult<Vec<ScanNode>> {
        let Self::Cluster(c) = self else {
            return Ok(vec![ScanNode::Only]);
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let text = String::from_redis_value(
            c.route_command(::redis::cmd("CLUSTER").arg("NODES").clone(), routing)
                .await?,
        )?;
        Ok(masters(&text)
            .into_iter()
            .map(|(h, p)| ScanNode::Master(h, p))
            .collect())
    }

    /// One `SCAN` page on `node`: the next cursor and the keys matching `pattern`.
    pub(super) async fn scan(
        &mut self,
        node: &ScanNode,
        cursor: u64,
        pattern: &str,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500);
        match (self, node) {
            (Self::Cluster(c), ScanNode::Master(host, port)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                Ok(FromRedisValue::from_redis_value(
                    c.route_command(cmd, routing).await?,
                )?)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(s) => Box::pin(async move {
                let mut c = s.current();
                let reply = c.req_packed_command(cmd).await;
                s.after(&reply);
                reply
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(s) => Box::pin(async move {
                let mut c = s.current();
                let reply = c.req_packed_commands(pipeline, offset, count).await;
                s.after(&reply);
                reply
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(s) => s.current().get_db(),
        }
    }
}

fn manager_config(options: &RedisOptions) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connection_timeout))
        .set_response_timeout(Some(options.response_timeout))
        .set_number_of_retries(options.reconnect_retries)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(250))
}

/// rustls needs a process-wide crypto provider when more than one (or none) is compiled in;
/// this crate brings `ring`. An already installed provider is kept.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn cluster(nodes: &Nodes, options: &RedisOptions) -> RedisResult<ClusterConnection> {
    let seeds: Vec<(String, u16)> = nodes.hosts.clone();
    let mut builder = ClusterClient::builder(seeds)
        .connection_timeout(options.connection_timeout)
        .response_timeout(options.response_timeout)
        .retries(u32::try_from(options.reconnect_retries).unwrap_or(u32::MAX))
        .min_retry_wait(20)
        .max_retry_wait(250);
    if let Some(user) = &nodes.user {
        builder = builder.username(user);
    }
    if let Some(password) = &nodes.password {
        builder = builder.password(password);
    }
    if nodes.tls {
        install_crypto_provider();
        builder = builder.tls(TlsMode::Secure);
    }
    builder.build()?.get_async_connection().await
}

/// The masters listed by `CLUSTER NODES` that are not failed and have an address.
fn masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (!host.is_empty()).then(|| Some((host.to_owned(), port.parse().ok()?)))?
        })
        .collect()
}

/// A master found through Sentinel; see the module docs.
#[derive(Clone)]
pub(super) struct SentinelConn {
    sentinel: Arc<AsyncMutex<SentinelClient>>,
    current: Arc<StdMutex<ConnectionManager>>,
    last_lookup: Arc<StdMutex<Instant>>,
    config: ConnectionManagerConfig,
    lookup_timeout: Duration,
}

impl SentinelConn {
    async fn connect(
        sentinels: &Nodes,
        master: &str,
        db: i64,
        options: &RedisOptions,
    ) -> RedisResult<Self> {
        let addrs = sentinels
            .hosts
            .iter()
            .map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p));
        let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
            .set_client_to_redis_db(db);
        if let Some(user) = &sentinels.user {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = &sentinels.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if sentinels.tls {
            install_crypto_provider();
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        }
        let mut sentinel = builder.build()?;
        let config = manager_config(options);
        let client = sentinel.async_get_client().await?;
        let manager = ConnectionManager::new_with_config(client, config.clone()).await?;
        Ok(Self {
            sentinel: Arc::new(AsyncMutex::new(sentinel)),
            current: Arc::new(StdMutex::new(manager)),
            last_lookup: Arc::new(StdMutex::new(Instant::now())),
            config,
            lookup_timeout: options.connection_timeout.saturating_mul(3),
        })
    }

    /// The manager for the master as last known.
    fn current(&self) -> ConnectionManager {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts a Sentinel look-up if `reply` failed in a way a failover explains. Server errors
    /// such as `READONLY` arrive as values (they become `Err` only when the reply is decoded).
    fn after(&self, reply: &RedisResult<impl Replies>) {
        let moved = match reply {
            Err(e) => master_may_have_moved(e),
            Ok(values) => values.any_read_only(),
        };
        if !moved {
            return;
        }
        {
            let mut last = self
                .last_lookup
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.elapsed() < REDISCOVER_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let this = self.clone();
        tokio::spawn(async move {
            // Best effort: if the Sentinels cannot be asked or the master they name cannot be
            // reached, the current manager stays and keeps reconnecting on its own.
            let _ = tokio::time::timeout(this.lookup_timeout, this.rediscover()).await;
        });
    }

    async fn rediscover(&self) -> RedisResult<()> {
        let client = self.sentinel.lock().await.async_get_client().await?;
        let manager = ConnectionManager::new_with_config(client, self.config.clone()).await?;
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = manager;
        Ok(())
    }
}

/// One reply value or a pipeline's values.
trait Replies {
    /// Whether any is a `READONLY` error (a write reached a demoted master).
    fn any_read_only(&self) -> bool;
}

impl Replies for Value {
    fn any_read_only(&self) -> bool {
        matches!(self, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::ReadOnly))
    }
}

impl Replies for Vec<Value> {
    fn any_read_only(&self) -> bool {
        self.iter().any(Replies::any_read_only)
    }
}

fn master_may_have_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ::redis::ErrorKind::Server(ServerErrorKind::ReadOnly)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_are_parsed_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,host1 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 slave b2 0 0 2 connected
d4 127.0.0.1:7003@17003 master,fail - 0 0 3 connected
e5 :0@0 master,noaddr - 0 0 4 disconnected
f6 [::1]:7004@17004 master - 0 0 5 connected 10923-16383
garbage";
        assert_eq!(
            masters(text),
            [
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001),
                ("::1".to_owned(), 7004),
            ]
        );
    }
}
