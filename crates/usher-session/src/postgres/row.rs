//! Decoding stored rows: every number checked, every bad value a [`StoreError::Corrupt`].

use tokio_postgres::Row as PgRow;

use crate::data::SessionData;
use crate::error::{CodecError, StoreError};
use crate::id::SessionKey;
use crate::store::{Record, SessionInfo};

/// A full row (in [`super::schema::COLUMNS`] order), times already checked to be non-negative.
#[derive(Debug)]
pub(super) struct Row {
    pub version: u64,
    pub user: Option<String>,
    pub data: Vec<u8>,
    pub created_at: u64,
    pub last_seen_at: u64,
    pub idle_expires_at: u64,
    pub expires_at: u64,
}

/// What a key holds at some `now`.
#[derive(Debug)]
pub(super) enum State {
    /// No row, an expired session or a lapsed tombstone: the key is free.
    Absent,
    /// A tombstone still in force.
    Tombstone,
    /// A live session.
    Live(Row),
}

impl Row {
    /// The record, decoding the data.
    pub(super) fn into_record(self) -> Result<Record, StoreError> {
        Ok(Record {
            data: SessionData::decode(&self.data)?,
            version: self.version,
            user: self.user,
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            idle_expires_at: self.idle_expires_at,
            expires_at: self.expires_at,
        })
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a PgRow,
    idx: usize,
) -> Result<T, StoreError> {
    // A column of the wrong type means the table is not ours: the store is unusable, but the
    // data is not "corrupt" in the sense of a session that could be dropped.
    row.try_get(idx).map_err(StoreError::unavailable)
}

fn time(row: &PgRow, idx: usize, column: &'static str) -> Result<u64, StoreError> {
    to_u64(get::<i64>(row, idx)?, column)
}

pub(super) fn to_u64(v: i64, column: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| CodecError::Column(column).into())
}

/// Clamps to PostgreSQL's signed 64-bit `bigint` (times far in the future saturate).
pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Classifies an optional full row at `now`.
pub(super) fn state(row: Option<&PgRow>, now: u64) -> Result<State, StoreError> {
    let Some(row) = row else {
        return Ok(State::Absent);
    };
    let deleted_until = get::<Option<i64>>(row, 7)?
        .map(|d| to_u64(d, "deleted_until"))
        .transpose()?;
    match deleted_until {
        Some(until) if until > now => return Ok(State::Tombstone),
        Some(_) => return Ok(State::Absent),
        None => {}
    }
    let row = Row {
        version: to_u64(get(row, 0)?, "version")?,
        user: get(row, 1)?,
        data: get(row, 2)?,
        created_at: time(row, 3, "created_at")?,
        last_seen_at: time(row, 4, "last_seen_at")?,
        idle_expires_at: time(row, 5, "idle_expires_at")?,
        expires_at: time(row, 6, "expires_at")?,
    };
    Ok(if now < row.idle_expires_at && now < row.expires_at {
        State::Live(row)
    } else {
        State::Absent
    })
}

/// One row of the `sessions_of` query.
pub(super) fn session_info(row: &PgRow) -> Result<SessionInfo, StoreError> {
    let hash: &[u8] = get(row, 0)?;
    let key: [u8; SessionKey::LEN] = hash
        .try_into()
        .map_err(|_| StoreError::from(CodecError::Column("id_hash")))?;
    Ok(SessionInfo {
        key: SessionKey::from_bytes(key),
        created_at: time(row, 1, "created_at")?,
        last_seen_at: time(row, 2, "last_seen_at")?,
        idle_expires_at: time(row, 3, "idle_expires_at")?,
        expires_at: time(row, 4, "expires_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_convert_or_are_corrupt() {
        assert_eq!(to_i64(5), 5);
        assert_eq!(to_i64(u64::MAX), i64::MAX);
        assert_eq!(to_u64(7, "version").unwrap(), 7);
        assert!(matches!(
            to_u64(-1, "created_at"),
            Err(StoreError::Corrupt(CodecError::Column("created_at")))
        ));
        assert!(matches!(state(None, 0), Ok(State::Absent)));
    }
}
