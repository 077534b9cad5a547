//! Private `redis-server` instances for tests: a single node ([`RedisServer`]), a Redis Cluster of
//! masters ([`RedisCluster`]) and a master watched by one Sentinel ([`Sentinel`]).
//!
//! Why private servers rather than the machine's shared one on 6379: tests cannot see or break
//! each other's keys, and a test may kill and restart its server to check what a store does when
//! Redis goes away.
//!
//! * Every server binds 127.0.0.1 on a port the OS just handed out, runs with
//!   `--save "" --appendonly no` (nothing persisted) in its own temp dir, and is killed on drop.
//! * Readiness is polled with a deadline. A server counts as up only when `INFO server` on its
//!   port reports *our child's* pid, so a server some other test started on a port we both
//!   probed is never mistaken for ours; if our child exits instead (port taken) we retry on a
//!   fresh port.
//! * Cluster nodes get an explicit `--cluster-port` (also a free port) rather than the default
//!   port + 10000, which would overflow or collide for high ephemeral ports.
//! * The commands these helpers send are plain RESP over a `TcpStream`, so the harness does not
//!   depend on (or test itself with) the client library under test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long one server may take to answer after it was spawned.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a cluster may take to agree on its slots, or a Sentinel to learn its master.
const FORM_DEADLINE: Duration = Duration::from_secs(30);
/// Attempts at finding a port nobody else grabs between our probe and the server's bind.
const PORT_ATTEMPTS: usize = 5;
/// Pause between two readiness polls.
const POLL: Duration = Duration::from_millis(20);

/// The master name the [`Sentinel`] monitors.
pub const SENTINEL_MASTER: &str = "usher-master";

/// A port the OS considers free right now (it may be taken again before we bind it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local address").port()
}

/// Sends one command as a RESP array to `127.0.0.1:port` and returns the raw reply text, read
/// until `done` accepts it or the server stops sending (500 ms read timeout). `None` if the
/// port does not answer.
pub fn command(port: u16, args: &[&str], done: impl Fn(&str) -> bool) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if done(&text) {
            break;
        }
    }
    Some(String::from_utf8_lossy(&reply).into_owned())
}

/// Whether the server on `port` answers and is the process `pid`.
fn is_ours(port: u16, pid: u32) -> bool {
    let Some(reply) = command(port, &["INFO", "server"], |t| {
        t.contains("process_id:")
            && t.split_once("process_id:")
                .is_some_and(|(_, r)| r.contains("\r\n"))
    }) else {
        return false;
    };
    reply
        .split_once("process_id:")
        .and_then(|(_, rest)| rest.split_once("\r\n"))
        .is_some_and(|(id, _)| id == pid.to_string())
}

/// Spawns `redis-server` with `args` after the common ones and waits until it answers on
/// `port`. `None` if the child exits first (most likely: the port was taken).
fn spawn(port: u16, dir: &Path, args: &[String]) -> Option<Child> {
    let child = Command::new("redis-server")
        .args(args)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed (not on PATH); the Redis tests need it. \
             Install it (`apt-get install redis-server`; scripts/test does this)."
        ),
        Err(e) => panic!("cannot start redis-server: {e}"),
    };
    let deadline = Instant::now() + START_DEADLINE;
    while Instant::now() < deadline {
        if is_ours(port, child.id()) {
            return Some(child);
        }
        if child.try_wait().expect("poll redis-server").is_some() {
            return None;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server on port {port} did not answer within {START_DEADLINE:?}");
}

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir for redis-server")
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Polls `cond` every [`POLL`] until it holds; panics with `what` after `deadline`.
fn wait_for(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < until, "{what} within {deadline:?}");
        std::thread::sleep(POLL);
    }
}

/// One private `redis-server` (single node). Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port. Panics if redis-server is missing or no port
    /// could be had.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line arguments (e.g. `--cluster-enabled yes`).
    pub fn start_with(extra: &[String]) -> Self {
        let dir = temp_dir("usher-redis-");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            if let Some(child) = spawn(port, dir.path(), extra) {
                return Self {
                    dir,
                    port,
                    extra: extra.to_vec(),
                    child: Some(child),
                };
            }
        }
        panic!("could not start redis-server on a free port after {PORT_ATTEMPTS} attempts");
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (its data is gone; nothing is persisted). Idempotent.
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    /// Kills the server if it runs and starts an empty one on the same port, waiting until it
    /// answers. Panics if the port was taken meanwhile.
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn(self.port, self.dir.path(), &self.extra)
            .unwrap_or_else(|| panic!("restart redis-server on port {}", self.port));
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters only (no replicas) on loopback, every node its own
/// [`RedisServer`] with `cluster-enabled yes`. Killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3, as `redis-cli --cluster create` requires), assigns
    /// the slots with `redis-cli --cluster create … --cluster-yes`, and waits until every node
    /// reports `cluster_state:ok`.
    pub fn start(masters: usize) -> Self {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-port".into(),
                    free_port().to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ])
            })
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("run redis-cli --cluster create (is redis-cli installed?): {e}")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// The nodes' ports, in creation order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The nodes, e.g. to query one directly.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, e.g. to kill and restart one. A restarted node keeps its `nodes.conf` (in
    /// its temp dir) and so rejoins with its old id and slots, but without its data.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Waits until every running node reports `cluster_state:ok` (e.g. after a restart).
    pub fn wait_ok(&self) {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let port = node.port();
            wait_for(FORM_DEADLINE, "cluster_state:ok on every node", || {
                command(port, &["CLUSTER", "INFO"], |t| {
                    t.contains("cluster_known_nodes")
                })
                .is_some_and(|r| r.contains("cluster_state:ok"))
            });
        }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…` — every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }
}

/// A master [`RedisServer`] monitored (as [`SENTINEL_MASTER`]) by one `redis-server --sentinel`
/// on its own free port, optionally with one replica (for failovers). All killed on drop.
#[derive(Debug)]
pub struct Sentinel {
    master: RedisServer,
    replica: Option<RedisServer>,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

/// How a RESP reply names `port` as a bulk string.
fn names_port(reply: &str, port: u16) -> bool {
    reply.contains(&format!("\r\n{port}\r\n"))
}

impl Sentinel {
    /// Starts the master and the Sentinel and waits until the Sentinel reports the master's
    /// address for [`SENTINEL_MASTER`].
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Like [`Sentinel::start`], plus a replica of the master that the Sentinel knows about,
    /// so [`Sentinel::failover`] can promote it.
    pub fn start_with_replica() -> Self {
        Self::launch(true)
    }

    fn launch(with_replica: bool) -> Self {
        let master = RedisServer::start();
        let replica = with_replica.then(|| {
            let replica = RedisServer::start_with(&[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port().to_string(),
            ]);
            let port = replica.port();
            wait_for(FORM_DEADLINE, "the replica is in sync", || {
                command(port, &["INFO", "replication"], |t| {
                    t.contains("master_link_status:up")
                })
                .is_some_and(|r| r.contains("master_link_status:up"))
            });
            replica
        });
        let dir = temp_dir("usher-sentinel-");
        // Sentinel rewrites its configuration file, so it must be a writable file of its own.
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 2000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 10000\n",
                master.port()
            ),
        )
        .expect("write sentinel.conf");
        let conf = conf.to_string_lossy().into_owned();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let args = [conf.clone(), "--sentinel".into()];
            let Some(child) = spawn(port, dir.path(), &args) else {
                continue;
            };
            let sentinel = Self {
                master,
                replica,
                dir,
                port,
                child: Some(child),
            };
            let want = sentinel.master.port();
            wait_for(FORM_DEADLINE, "the Sentinel knows its master", || {
                command(
                    port,
                    &["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER],
                    |t| names_port(t, want),
                )
                .is_some_and(|r| names_port(&r, want))
            });
            if let Some(replica) = &sentinel.replica {
                let want = replica.port().to_string();
                wait_for(FORM_DEADLINE, "the Sentinel knows the replica", || {
                    command(port, &["SENTINEL", "replicas", SENTINEL_MASTER], |t| {
                        t.contains(&want)
                    })
                    .is_some_and(|r| r.contains(&want))
                });
            }
            return sentinel;
        }
        panic!("could not start redis-server --sentinel on a free port");
    }

    /// Makes the Sentinel promote the replica (`SENTINEL FAILOVER`, retried until accepted)
    /// and waits until it reports the replica as the master and the old master has been demoted
    /// to a replica of the new one (writes to it then fail with `READONLY`). Panics without a
    /// replica.
    pub fn failover(&mut self) {
        let replica = self.replica.as_ref().expect("start_with_replica").port();
        let port = self.port;
        wait_for(
            FORM_DEADLINE,
            "the Sentinel accepts SENTINEL FAILOVER",
            || {
                command(port, &["SENTINEL", "FAILOVER", SENTINEL_MASTER], |t| {
                    t.ends_with("\r\n")
                })
                .is_some_and(|r| r.starts_with("+OK"))
            },
        );
        wait_for(
            FORM_DEADLINE,
            "the Sentinel names the promoted replica",
            || {
                command(
                    port,
                    &["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER],
                    |t| names_port(t, replica),
                )
                .is_some_and(|r| names_port(&r, replica))
            },
        );
        // Sentinel demotes the old master itself only on its next 10 s INFO round; do now what
        // it would do then, so tests need not wait for it.
        let old = self.master.port();
        let replica_port = replica.to_string();
        command(old, &["REPLICAOF", "127.0.0.1", &replica_port], |t| {
            t.ends_with("\r\n")
        });
        wait_for(FORM_DEADLINE, "the old master is demoted", || {
            command(old, &["INFO", "replication"], |t| {
                t.contains("connected_slaves")
            })
            .is_some_and(|r| r.contains("role:slave"))
        });
    }

    /// The replica, if started with one (after [`Sentinel::failover`], the master).
    pub fn replica(&self) -> Option<&RedisServer> {
        self.replica.as_ref()
    }

    /// The Sentinel's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitored master.
    pub fn master(&self) -> &RedisServer {
        &self.master
    }

    /// The monitored master, e.g. to restart it.
    pub fn master_mut(&mut self) -> &mut RedisServer {
        &mut self.master
    }

    /// `redis+sentinel://127.0.0.1:<sentinel port>/<SENTINEL_MASTER>`.
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/{SENTINEL_MASTER}", self.port)
    }

    /// The temp dir holding the Sentinel's configuration.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
