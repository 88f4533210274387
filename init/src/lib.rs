//! berth's PID 1, as a library so that its logic can be tested off PID 1.
pub mod config;
