//! The audit trail (SPEC §7): the entries a request's durable state implies, who may write
//! or delete them, the gate's own ground (policies, requests, namespaces), and retention.

pub mod custody;
pub mod ground;
pub mod retention;
pub mod trail;
