//! Affinity building blocks: the sealed cookie ([`token`], keys in [`keyring`]) and the learned
//! app-cookie table ([`learned`]).

pub(crate) mod keyring;
pub(crate) mod learned;
pub(crate) mod token;
