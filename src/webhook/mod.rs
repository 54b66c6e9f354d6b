//! The admission webhook shell of `countersign serve`: it talks HTTPS to the API server and
//! hands each request to the core.

pub mod server;
