//! After approval (SPEC §1.3, §1.4, §8): the one-change lock, the confirmation of the
//! admitted change's rollout, and the scoped deploy token.

pub mod confirm;
pub mod lock;
pub mod token;
