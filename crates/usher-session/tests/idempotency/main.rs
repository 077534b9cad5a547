//! The Idempotency-Key layer on real axum servers (loopback, free ports) over MemoryStore,
//! SqliteStore (also shared by two servers) and a private redis-server (outage, and the outcome
//! reaching another server). Two layers over one store stand for two replicas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod concurrency;
mod leases;
mod outcome;
mod replay;
mod support;
