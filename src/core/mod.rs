//! The decision core: plain functions of plain data. No I/O, no async, no clock — the
//! current time is always a parameter.

pub mod audit;
pub mod chain;
pub mod change;
pub mod checks;
pub mod custody;
pub mod decision;
pub mod grant;
pub mod policy;
pub mod request;
pub mod review;
pub mod secrets;
pub mod status;
#[cfg(test)]
mod test_builders;
pub mod validation;
pub mod windows;
