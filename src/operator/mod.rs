//! The operator half of `countersign serve`: what runs on the one replica that holds the
//! lease.

pub mod approvals;
pub mod grants;
pub mod leader;
