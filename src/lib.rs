//! MadBase as a library: every service of the binary (`main.rs` owns only the command line and
//! start-up order). A library so that fuzz targets and benchmarks can drive the network-facing
//! parsers directly; nothing here is a stable public API.

pub mod app;
pub mod config;
pub mod database;
pub mod jwt;
pub mod metrics;
pub mod migrate;
pub mod rest;
pub mod schema;
