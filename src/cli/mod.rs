//! The command-line tool's subcommands (the binary only).

pub mod bench;
pub mod beyond;
pub mod bias;
pub mod export;
pub mod gradfield;
pub mod kmeans;
pub mod overhead;
pub mod report;
pub mod reproduce;
pub mod sweep;
pub mod train;
