//! Runs the batch system's real commands (submit, status, cancel).
