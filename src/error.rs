//! The crate's error type. Every failure the library can meet comes back as one of these, never as a panic.

/// What went wrong, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched: none exists, or none passed the backend/name filter.
    #[error("no GPU adapter found{filter}{found}")]
    NoAdapter {
        /// The filter that was applied, as text (empty when none).
        filter: String,
        /// The adapters that exist, as text (empty when none).
        found: String,
    },
    /// The chosen adapter cannot meet a limit the kernels need.
    #[error("adapter `{adapter}` cannot run vqgrad: limit `{limit}` is {available}, the kernels need {needed}")]
    Limit {
        /// The adapter's name.
        adapter: String,
        /// The `wgpu::Limits` field.
        limit: &'static str,
        /// What the kernels need.
        needed: u64,
        /// What the adapter offers.
        available: u64,
    },
    /// The device could not be created.
    #[error("could not create a device on `{adapter}`: {message}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's message.
        message: String,
    },
    /// An unknown value for a setting (an environment variable or a flag).
    #[error("invalid {what} `{value}`: expected one of {expected}")]
    InvalidSetting {
        /// The setting.
        what: &'static str,
        /// The value given.
        value: String,
        /// The values accepted.
        expected: &'static str,
    },
    /// wgpu rejected something vqgrad created or recorded (a shader, a pipeline, a bind group, a command).
    #[error("wgpu rejected {context}: {message}")]
    Wgpu {
        /// What was being done.
        context: String,
        /// wgpu's message.
        message: String,
    },
    /// The device was lost (driver reset, device destroyed, out of memory).
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// A buffer is smaller than the shape needs.
    #[error("buffer `{buffer}` holds {actual} bytes; the shape needs at least {expected}")]
    BufferTooSmall {
        /// Which buffer (the kernel's name for it).
        buffer: &'static str,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes the buffer has.
        actual: u64,
    },
    /// A buffer lacks a usage the kernel needs.
    #[error("buffer `{buffer}` lacks usage {missing}")]
    BufferUsage {
        /// Which buffer.
        buffer: &'static str,
        /// The missing `wgpu::BufferUsages`, as text.
        missing: String,
    },
    /// A shape or parameter is invalid: zero, too large for the device, or inconsistent with another.
    #[error("invalid shape: {0}")]
    Shape(String),
    /// Input data is invalid (NaN or Inf, wrong length, out-of-range values).
    #[error("invalid input: {0}")]
    Input(String),
    /// A stop was requested (`vqgrad::train::request_stop`, as the command-line tool does on Ctrl-C): training
    /// ended at an evaluation, keeping what had finished.
    #[error("interrupted: stopped at an evaluation as asked")]
    Interrupted,
    /// Reading a buffer back failed.
    #[error("reading back a buffer failed: {0}")]
    Readback(String),
    /// naga could not parse, validate or translate a kernel (`vqgrad::shaders::translate`).
    #[error("naga could not translate {what}: {message}")]
    Translate {
        /// The file and entry point.
        what: String,
        /// naga's message.
        message: String,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
