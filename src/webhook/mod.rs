//! The admission shell: HTTPS, the review paths, the caches it decides from, and the writes
//! a decision asks for.

pub mod admission;
pub mod approval_index;
pub mod client_auth;
pub mod effects;
pub mod request;
pub mod router;
pub mod server;
pub mod snapshot;
