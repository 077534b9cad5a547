//! HTTP/1.1 wire pieces shared by both sides of the proxy: the client-facing server
//! (`server/`) and the backend client (`upstream/`).
//!
//! Both sides are written by hand on `httparse` (the parser hyper itself uses) because they are
//! the proxy's hot path; see `server/mod.rs` and `upstream/mod.rs` for why. What they share lives
//! here: turning parsed fields into a `HeaderMap` without copying a value, the framing rules of
//! RFC 9112 §6, and the body decoder.

pub(crate) mod decode;
pub(crate) mod fields;
