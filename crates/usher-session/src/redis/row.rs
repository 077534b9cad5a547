//! Turning stored strings back into numbers: anything that does not parse is
//! [`StoreError::Corrupt`] naming the column, never a panic.

use crate::error::{CodecError, StoreError};
use crate::store::SessionInfo;

use super::keys::parse_hex;

/// Largest time value kept exactly by the Lua scripts (2^53 - 1).
const MAX_TIME: u64 = (1 << 53) - 1;

/// The stored numeric columns, in the order the scripts number them (1-based) for `Corrupt`.
pub(super) const COLUMNS: [&str; 6] = [
    "version",
    "created_at",
    "last_seen_at",
    "idle_expires_at",
    "expires_at",
    "deleted_until",
];

/// Clamps a time to what a Lua number (a double) holds exactly.
pub(super) fn time(t: u64) -> u64 {
    t.min(MAX_TIME)
}

/// The error for the script-reported 1-based column index.
pub(super) fn corrupt(column: i64) -> StoreError {
    let name = usize::try_from(column - 1)
        .ok()
        .and_then(|i| COLUMNS.get(i))
        .copied()
        .unwrap_or("unknown");
    StoreError::Corrupt(CodecError::Column(name))
}

pub(super) fn parse(v: &str, column: &'static str) -> Result<u64, StoreError> {
    v.parse()
        .map_err(|_| StoreError::Corrupt(CodecError::Column(column)))
}

pub(super) fn parse_opt(v: Option<&str>, column: &'static str) -> Result<u64, StoreError> {
    parse(v.unwrap_or(""), column)
}

/// A session's hex and its stored `created`, `seen`, `idle`, `exp` strings.
pub(super) type InfoRow = (String, String, String, String, String);

/// Decodes one row of a user's session listing.
pub(super) fn session_info(row: InfoRow) -> Result<SessionInfo, StoreError> {
    let (h, created, seen, idle, exp) = row;
    Ok(SessionInfo {
        key: parse_hex(&h).ok_or(StoreError::Corrupt(CodecError::Column("key")))?,
        created_at: parse(&created, COLUMNS[1])?,
        last_seen_at: parse(&seen, COLUMNS[2])?,
        idle_expires_at: parse(&idle, COLUMNS[3])?,
        expires_at: parse(&exp, COLUMNS[4])?,
    })
}

/// Whether a user's listing shows a row: live at `now`, or with an expiry column that does not
/// parse (so that [`session_info`] reports it as corrupt instead of hiding it).
pub(super) fn listable(idle: Option<&str>, exp: Option<&str>, now: u64) -> bool {
    let n = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
    match (n(idle), n(exp)) {
        (Some(i), Some(e)) => now < i && now < e,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_times() {
        assert_eq!(time(u64::MAX), MAX_TIME);
        assert!(matches!(
            corrupt(4),
            StoreError::Corrupt(CodecError::Column("idle_expires_at"))
        ));
        assert!(matches!(
            corrupt(99),
            StoreError::Corrupt(CodecError::Column("unknown"))
        ));
        assert!(parse("-1", "version").is_err());
        assert_eq!(parse_opt(Some("7"), "version").unwrap(), 7);
        assert!(listable(Some("10"), Some("20"), 9));
        assert!(!listable(Some("10"), Some("20"), 10));
        assert!(!listable(Some("30"), Some("20"), 20));
        assert!(
            listable(None, Some("20"), 1),
            "corrupt rows are reported, not hidden"
        );
        assert!(listable(Some("x"), Some("20"), 1));
    }
}
