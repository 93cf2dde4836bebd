//! The facematch driver: the CLI, the Postgres schema and history state machine, dataset
//! registration, the runners, and reports. The `facematch` binary is [`cli::main`].

pub mod bench;
pub mod build;
pub mod cli;
pub mod cluster;
pub mod db;
pub mod emr;
pub mod encode;
pub mod faces;
pub mod histories;
pub mod localdb;
pub mod planner;
pub mod registry;
pub mod report;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod signals;
pub mod stats;
