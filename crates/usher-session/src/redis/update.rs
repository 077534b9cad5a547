//! [`SessionStore::update_field`](crate::SessionStore::update_field) for [`RedisStore`]:
//! optimistic read–apply–write with a version check, a per-session lock after repeated lost
//! races, and local striped queues (see the store's docs for why).

use std::time::Duration;

use crate::data::{FieldOp, SessionData};
use crate::error::StoreError;
use crate::id::SessionKey;
use crate::store::FieldUpdate;

use super::row::{corrupt, time};
use super::{RedisStore, unavailable};

/// How many times [`SessionStore::update_field`](crate::SessionStore::update_field) retries a
/// lost version race before giving up with [`StoreError::Conflict`].
pub const UPDATE_RETRIES: usize = 200;

/// After this many lost races a field update takes the per-session update lock.
const LOCK_AFTER: usize = 2;

/// Lifetime of the per-session update lock (it is released by the holder's write; the expiry
/// only covers a holder that died).
const LOCK_MILLIS: u64 = 2000;

/// Number of local locks field updates to the same key queue on (keys are striped over them).
pub const UPDATE_STRIPES: usize = 64;

/// What one update writes: session, tombstone and lock keys, the time, and the op.
struct Job<'a> {
    keys: [&'a str; 3],
    now: u64,
    field: &'a str,
    op: &'a FieldOp,
}

/// The outcome of one version-checked write attempt.
enum Attempt {
    Done(FieldUpdate),
    /// Lost the race: the current version and data to retry from.
    Lost(i64, Vec<u8>),
    Failed(StoreError),
}

impl RedisStore {
    pub(super) async fn update(
        &self,
        key: &SessionKey,
        field: &str,
        op: FieldOp,
        now: u64,
    ) -> Result<FieldUpdate, StoreError> {
        let now = time(now);
        let stripe = usize::from(key.as_bytes()[0]) % self.stripes.len();
        let _queue = self.stripes[stripe].lock().await;
        let (skey, tkey) = (self.keys.session(key), self.keys.tombstone(key));
        let mut conn = self.conn.clone();
        let (code, n, bytes): (i64, i64, Vec<u8>) = self
            .scripts
            .read
            .key(&skey)
            .key(&tkey)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match code {
            0 => {}
            1 => return Err(StoreError::Deleted),
            2 => return Err(StoreError::NotFound),
            _ => return Err(corrupt(n)),
        }
        let (mut version, mut bytes) = (n, bytes);
        let lkey = self.keys.lock(key);
        let mut token = String::new();
        let mut result = Err(StoreError::Conflict {
            current: version.unsigned_abs(),
        });
        for attempt in 0..UPDATE_RETRIES {
            if attempt >= LOCK_AFTER && token.is_empty() {
                // Lost the race several times: take the update lock, so writers that keep
                // winning cannot starve this one. Wait a random little while if it is taken.
                let candidate = format!("{:016x}", rand::random::<u64>());
                let acquired: Option<String> = ::redis::cmd("SET")
                    .arg(&lkey)
                    .arg(&candidate)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_MILLIS)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if acquired.is_some() {
                    token = candidate;
                } else {
                    let pause = rand::random_range(50..=500);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
            }
            let job = Job {
                keys: [&skey, &tkey, &lkey],
                now,
                field,
                op: &op,
            };
            let written = self.attempt(&mut conn, &job, version, &bytes, &token).await;
            match written {
                // The script released the lock with the write.
                Attempt::Done(update) => return Ok(update),
                Attempt::Lost(v, current) => {
                    result = Err(StoreError::Conflict {
                        current: v.unsigned_abs(),
                    });
                    (version, bytes) = (v, current);
                }
                Attempt::Failed(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if !token.is_empty() {
            // Best effort: the lock also lapses on its own after LOCK_MILLIS.
            let _: Result<i64, _> = self
                .scripts
                .unlock
                .key(&lkey)
                .arg(&token)
                .invoke_async(&mut conn)
                .await;
        }
        result
    }

    /// Applies the job's op to `bytes` (at `version`) and tries to write the result back.
    async fn attempt(
        &self,
        conn: &mut super::conn::Conn,
        job: &Job<'_>,
        version: i64,
        bytes: &[u8],
        token: &str,
    ) -> Attempt {
        let [skey, tkey, lkey] = job.keys;
        let mut data = match SessionData::decode(bytes) {
            Ok(d) => d,
            Err(e) => return Attempt::Failed(e.into()),
        };
        let value = match job.op.clone().apply(&mut data, job.field) {
            Ok(v) => v,
            Err(e) => return Attempt::Failed(e),
        };
        let encoded = match data.encode() {
            Ok(b) => b,
            Err(e) => return Attempt::Failed(e.into()),
        };
        let reply: Result<(i64, i64, Vec<u8>), _> = self
            .scripts
            .write_data
            .key(skey)
            .key(tkey)
            .key(lkey)
            .arg(job.now)
            .arg(version)
            .arg(encoded)
            .arg(token)
            .invoke_async(conn)
            .await;
        match reply {
            Err(e) => Attempt::Failed(unavailable(e)),
            Ok((0, n, _)) => Attempt::Done(FieldUpdate {
                version: n.unsigned_abs(),
                value,
            }),
            Ok((1, _, _)) => Attempt::Failed(StoreError::Deleted),
            Ok((2, _, _)) => Attempt::Failed(StoreError::NotFound),
            Ok((3, n, current)) => Attempt::Lost(n, current),
            Ok((_, n, _)) => Attempt::Failed(corrupt(n)),
        }
    }
}
