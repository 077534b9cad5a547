//! Test harness shared by Usher's crates: real servers (never mocks) started privately on free
//! loopback ports, waited for by polling with a deadline, and killed on drop. Nothing here ever
//! touches a shared service on its standard port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod postgres;
pub mod redis;
