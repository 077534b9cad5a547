//! The hand-written client-facing HTTP/1.1 server (`src/server/`) over real sockets, for what
//! the other suites do not reach: pipelined requests answered in order, `Expect: 100-continue`,
//! HTTP/1.0 and `Connection: close` persistence, refused heads (`CONNECT`, non-HTTP/1 junk)
//! that never reach a backend, a chunked body arriving in pieces, the `Date` field, `HEAD`
//! framing, and the close after a request body that nobody read.
#![allow(clippy::unwrap_used)]
#[path = "../support/mod.rs"]
mod support;

mod client;
mod date;
mod persistence;
mod pipelining;
mod refusals;
mod wire;
