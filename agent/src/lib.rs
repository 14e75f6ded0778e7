//! The `periscope` agent as a library: the one registry of component types and the
//! `components` listing, shared by the binary and the benchmarks.

pub mod components;
pub mod describe;
pub mod doctor;
pub mod observe;
