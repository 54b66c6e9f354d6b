//! ApprovalPolicies (SPEC §3): which match a change, what they check (secrets, registries,
//! privilege), their windows, their validation, and who wrote them.

pub mod authorship;
pub mod checks;
pub mod matching;
pub mod secrets;
pub mod validation;
pub mod windows;
