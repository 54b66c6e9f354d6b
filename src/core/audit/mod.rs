//! The audit trail (SPEC §7): the entries a request's durable state implies, those of
//! changes admitted without approval, who may write or delete them, the gate's own ground
//! (policies, requests, namespaces), and retention.

pub mod bypass;
pub mod custody;
pub mod ground;
pub mod retention;
pub mod trail;
