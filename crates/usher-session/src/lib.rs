//! Usher's session tier: where the demo shop (and any app behind Usher) keeps its sessions so
//! that any replica can serve any request — the "stateless" side of the comparison Usher's lab
//! runs against sticky, in-memory sessions.
//!
//! * [`SessionId`] — the client's secret: 256 bits from a CSPRNG, URL-safe base64. Its `Debug`
//!   is redacted. Stores only ever see its [`SessionKey`] (SHA-256), so a leaked store holds no
//!   usable ids.
//! * [`SessionData`] — string keys to JSON values, encoded with a leading format byte
//!   ([`FORMAT_JSON_V1`]) so a future format can be added without wiping live sessions. Bytes
//!   that do not decode are [`StoreError::Corrupt`], never a panic.
//! * [`SessionStore`] — the async store contract (below), `dyn`-compatible via `async-trait` so a
//!   layer can hold an `Arc<dyn SessionStore>`.
//! * [`MemoryStore`] (feature `memory`) and [`SqliteStore`] (feature `sqlite`), both on by default,
//!   `RedisStore` (feature `redis`; single node, Cluster or Sentinel) and `PostgresStore`
//!   (feature `postgres`), off by default.
//! * [`StoreError`] — one error type; [`StoreError::class`] says whether the client, a
//!   conflicting writer or the store is at fault, so the HTTP layer maps it in one place.
//! * `conformance` (feature `conformance`) — one test suite every store must pass.
//! * [`jwt`] (feature `jwt`, on by default) — stateless auth: a [`jwt::KeyRing`] signing and
//!   verifying EdDSA (default), ES256, RS256 and HS256 tokens with the algorithm pinned per key,
//!   key files with rotation (`jwt::generate`, `jwt::write_key_file`), a JWKS document and a
//!   [`jwt::JwksVerifier`] that refetches (rate-limited) on an unknown `kid`, and
//!   [`jwt::TokenService`]: 5-minute access tokens plus rotating refresh tokens whose reuse
//!   revokes the whole family — families kept in any [`SessionStore`]. Every refused token has a
//!   [`jwt::Rejection`] reason for the log.
//! * [`idempotency`] (feature `idempotency`, on by default) — the `Idempotency-Key` header
//!   (draft-ietf-httpapi-idempotency-key-header) as a tower layer: one execution per key and
//!   user, 409 while running, 422 for a different request, byte-identical replays, records in any
//!   [`SessionStore`] so retries on another replica are recognised.
//!
//! # The store contract
//!
//! Time is an argument (`now`, Unix seconds) to every operation; no store reads a clock.
//!
//! * **Expiry.** A [`Record`] has an idle expiry and an absolute expiry. From either instant on,
//!   the session loads as `None` and writes fail with [`StoreError::NotFound`].
//! * **Compare-and-swap.** [`SessionStore::save`] with `None` creates (version 1) and fails if a
//!   live session or a tombstone is there; with `Some(v)` it writes only if the stored version is
//!   `v`, else [`StoreError::Conflict`] with the current version.
//! * **Field updates.** [`SessionStore::update_field`] applies a [`FieldOp`] (`Set`, `Remove`,
//!   `Increment`, `Push`, `Merge`) to one field atomically, without a version check, so
//!   concurrent "add to cart" requests all land. An operation enum rather than a closure keeps
//!   the trait `dyn`-compatible, runs no user code under a store lock, and maps onto server-side
//!   updates in future stores (a Redis script, SQL JSON functions).
//! * **Tombstones.** [`SessionStore::delete`] (and [`SessionStore::delete_user_sessions`], "log
//!   out everywhere") leaves a tombstone for [`StoreConfig::tombstone_secs`]; every later save or
//!   field update fails with [`StoreError::Deleted`]. A request that loaded the session before the
//!   logout therefore cannot resurrect it when it saves.
//! * **Touch.** [`SessionStore::touch`] extends the idle expiry but writes at most once per
//!   [`StoreConfig::touch_interval_secs`]; touching does not bump the version, and a save never
//!   moves `last_seen_at`/`idle_expires_at` backwards.
//! * **Users.** [`SessionStore::sessions_of`] lists a user's live sessions (by key).
//!
//! # How each store keeps it
//!
//! * [`MemoryStore`]: one mutex, no `.await` under it, so every operation is atomic. Bounded:
//!   expired entries are purged first when full, then the least recently used session is evicted.
//! * [`SqliteStore`]: one file shared by processes on one machine, WAL mode with a busy timeout;
//!   every write is a `BEGIN IMMEDIATE` transaction (write lock taken before the read), CAS is
//!   `UPDATE … WHERE id_hash = ? AND version = ?`, tombstones are rows with `deleted_until`, and
//!   `user` is indexed. Statements run on tokio's blocking pool.
//! * `RedisStore` (feature `redis`): Redis or Valkey — one node (`redis://`, `rediss://`), a
//!   Redis Cluster (`redis+cluster://h1:p1,h2:p2`, seed nodes) or a Sentinel-managed master
//!   (`redis+sentinel://h1:p1,h2:p2/master-name`), over multiplexed connections that reconnect
//!   by themselves. One Lua script per atomic step on a session (CAS, delete with tombstone,
//!   touch); every key of a session shares a hash tag (`usher:s:{<hex>}`), so each script runs
//!   on one cluster slot. Field updates are read, applied in Rust and written back with a
//!   version-checked script, retried on a lost race. A user's sessions span slots, so the
//!   per-user index is a sorted set written *before* the session and re-validated against the
//!   session on every read; logout-everywhere tombstones each listed session (on a single node
//!   it stays one atomic script). Decisions use `now`; Redis TTLs are only garbage collection.
//!   See `RedisStore`'s docs.
//! * `PostgresStore` (feature `postgres`): one table shared by every replica through a connection
//!   pool. A save is a single CAS statement (`UPDATE … WHERE id_hash = $1 AND version = $2`, or an
//!   `INSERT … ON CONFLICT` that only replaces a dead row); field updates lock the row with
//!   `SELECT … FOR UPDATE` and apply the `FieldOp` in Rust; tombstones are rows with
//!   `deleted_until`, `user_name` is indexed, and `now` is always a parameter, never the
//!   database clock. The table is created on connect under an advisory lock, so processes may
//!   start together. See `PostgresStore`'s docs.

mod data;
mod error;
mod id;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "idempotency")]
pub mod idempotency;
#[cfg(feature = "jwt")]
pub mod jwt;
#[cfg(feature = "layer")]
mod layer;
#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use crate::postgres::{InvalidPostgresOptions, PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
pub use crate::redis::{
    InvalidRedisOptions, RedisOptions, RedisStore, UPDATE_RETRIES, UPDATE_STRIPES,
};
pub use data::{FORMAT_JSON_V1, FieldOp, SessionData};
pub use error::{CodecError, ErrorClass, StoreError};
pub use id::{InvalidSessionId, SessionId, SessionKey};
#[cfg(feature = "layer")]
pub use layer::{
    Clock, DEFAULT_COOKIE_NAME, OutagePolicy, SameSite, Session, SessionError, SessionLayer,
    SessionService,
};
#[cfg(feature = "memory")]
pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{DEFAULT_BUSY_TIMEOUT, SqliteStore};
pub use store::{FieldUpdate, Record, SessionInfo, SessionStore, StoreConfig, Touch};
