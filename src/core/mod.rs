//! The decision core: plain functions of plain data. No I/O, no async, no clock — the
//! current time is always a parameter. One room per domain (docs/architecture.md):
//!
//! - `admission`: one admission decision from a change and what is known (SPEC §1), and
//!   what a dry run hands out;
//! - `approval`: a request's chain, its reviews and who may give them, who may open one,
//!   its status, and the seal on its summary;
//! - `audit`: the trail a request implies, who may write it, the gate's own ground,
//!   retention;
//! - `change`: an object's gated content, its digest, and what a change does for people;
//! - `policy`: which policies match, what they check, their windows, their validation;
//! - `rollout`: after approval: the one-change lock, rollout confirmation, deploy tokens;
//! - `notify`: which notices a request implies and what they say;
//! - `guard`, `tls`: countersign's own webhook configurations and certificates;
//! - `inert`: outside text made safe to show;
//! - `plan`: what the core asks the cluster room to carry out.

pub mod admission;
pub mod approval;
pub mod audit;
pub mod change;
pub mod guard;
pub mod inert;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod rollout;
#[cfg(test)]
pub(crate) mod test_builders;
pub mod tls;
