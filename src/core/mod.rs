//! The decision core: plain functions of plain data. No I/O, no async, no clock — the
//! current time is always a parameter.

pub mod audit;
pub mod chain;
pub mod change;
pub mod change_lock;
pub mod checks;
pub mod controllers;
pub mod custody;
pub mod decision;
pub mod grant;
pub mod ground;
pub mod inert;
pub mod notify;
pub mod policy;
pub mod policy_audit;
pub mod proposal;
pub mod request;
pub mod retention;
pub mod review;
pub mod rollout;
pub mod seal;
pub mod secrets;
pub mod serving_tls;
pub mod status;
pub mod summary;
#[cfg(test)]
pub(crate) mod test_builders;
pub mod validation;
pub mod webhook_guard;
pub mod windows;
