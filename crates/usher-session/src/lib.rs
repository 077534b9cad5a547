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
//!   and `RedisStore` (feature `redis`, off by default).
//! * [`StoreError`] — one error type; [`StoreError::class`] says whether the client, a
//!   conflicting writer or the store is at fault, so the HTTP layer maps it in one place.
//! * `conformance` (feature `conformance`) — one test suite every store must pass.
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
//! * `RedisStore` (feature `redis`): one Lua script per atomic operation (CAS, delete with
//!   tombstone, touch, per-user sets); field updates are read, applied in Rust and written back
//!   with a version-checked script, retried on a lost race. Decisions use `now`; Redis TTLs are
//!   only garbage collection. See `RedisStore`'s docs.

mod data;
mod error;
mod id;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "redis")]
pub use crate::redis::{RedisOptions, RedisStore, UPDATE_RETRIES, UPDATE_STRIPES};
pub use data::{FORMAT_JSON_V1, FieldOp, SessionData};
pub use error::{CodecError, ErrorClass, StoreError};
pub use id::{InvalidSessionId, SessionId, SessionKey};
#[cfg(feature = "memory")]
pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{DEFAULT_BUSY_TIMEOUT, SqliteStore};
pub use store::{FieldUpdate, Record, SessionInfo, SessionStore, StoreConfig, Touch};
