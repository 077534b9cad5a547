//! Affinity building blocks: the sealed cookie and the learned app-cookie table.

pub(crate) mod learned;
pub(crate) mod token;
