//! The command-line tool's subcommands (the binary only).

pub mod train;
