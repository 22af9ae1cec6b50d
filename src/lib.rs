//! MadBase as a library: every service of the binary (`main.rs` owns only the command line and
//! start-up order). A library so that fuzz targets and benchmarks can drive the network-facing
//! parsers directly; nothing here is a stable public API.

// Module docs link to the private modules they are built from (`cargo doc
// --document-private-items` renders them); the public surface is incidental.
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub mod coalesce;
pub mod config;
pub mod database;
pub mod jwt;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod rest;
pub mod schema;
