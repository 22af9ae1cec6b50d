//! MadBase as a library: the binary's own parts — configuration, start-up of the database, the
//! gateway in front of the services, logging. The services live in their crates (`madbase-rest`,
//! …) on the platform crate (`madbase-core`); `main.rs` owns only the command line and the order
//! of start-up. A library so that tests, fuzz targets and benchmarks can drive these parts.

// Module docs link to the private modules they are built from (`cargo doc
// --document-private-items` renders them); the public surface is incidental.
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub mod cli;
pub mod config;
pub mod database;
pub mod logging;
pub mod migrate;
pub mod seed_objects;
