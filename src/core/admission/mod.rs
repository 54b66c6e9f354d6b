//! One admission decision (SPEC §1): a change, the policies and the approvals in, a verdict
//! and its reasons out; the plan that answers its review; who the workload controllers
//! are; what a dry run hands out.

pub mod controllers;
pub mod decision;
pub mod proposal;
pub mod review;
pub mod sync;
