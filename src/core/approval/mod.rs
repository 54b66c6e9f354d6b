//! A request for approval (SPEC §3, §4): its chain of levels and how reviews count, who may
//! append a review or open a request, the status it should have, and its summary's seal.

pub mod chain;
pub mod reconcile;
pub mod request;
pub mod review;
pub mod seal;
pub mod set;
pub mod status;
