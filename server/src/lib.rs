//! Tokenboard's server: the HTTP API, auth, keys, export, live stream, collectors and the
//! offline tools, as a library for the `tokenboard` binary, the tests and the fuzz targets.

pub mod assets;
pub mod client;
pub mod collector;
pub mod config;
pub mod console;
pub mod export;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod live;
pub mod log;
pub mod metrics;
pub mod openapi;
pub mod pool;
pub mod resp;
pub mod secrets;
pub mod serve;
pub mod tools;
