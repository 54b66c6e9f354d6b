//! The audit trail (SPEC §7): the entries a request's durable state implies, those of
//! changes admitted without approval, who may write or delete them, the gate's own ground
//! (policies, requests, namespaces), retention, and the hash chain that makes the trail
//! tamper-evident with its signed checkpoints (`chain`, `note`).

pub mod bypass;
pub mod chain;
pub mod custody;
pub mod ground;
pub mod note;
pub mod retention;
pub mod trail;
