//! How much memory `MemoryStore` needs per session: fills it with N sessions of about 200 bytes
//! of data and prints the process's resident set size before and after.
//!
//! Run with `cargo run --release -p usher-session --example memory_footprint [-- N]`
//! (default 1,000,000; the target is at most 600 MB for a million sessions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroUsize;

use serde_json::json;
use usher_session::{MemoryStore, Record, SessionData, SessionId, SessionStore, StoreConfig};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemoryStore::new(StoreConfig::default(), NonZeroUsize::new(n).unwrap());
    let mut data = SessionData::new();
    data.insert("user", json!("user-0000001"));
    data.insert("cart:tea-green", json!(2));
    data.insert("cart:mug", json!(1));
    data.insert("prefs", json!({"theme": "dark", "lang": "en"}));
    data.insert("progress", json!({"intro-video": 125, "howto": 40}));
    data.insert(
        "csrf",
        json!("c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee"),
    );
    let payload = data.encode().unwrap().len();
    let before = rss_bytes();
    let now = 1_700_000_000;
    rt.block_on(async {
        for i in 0..n {
            let rec = Record::new(
                data.clone(),
                Some(format!("user-{i:07}")),
                now,
                1800,
                86_400,
            );
            store
                .save(&SessionId::random().key(), &rec, None, now)
                .await
                .unwrap();
        }
    });
    let after = rss_bytes();
    assert_eq!(store.len(), n);
    #[allow(clippy::cast_precision_loss)]
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "{n} sessions, {payload} B of encoded data each: RSS {:.1} MB -> {:.1} MB ({per:.0} B per session)",
        before as f64 / 1e6,
        after as f64 / 1e6
    );
}
