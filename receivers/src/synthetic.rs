//! Generates packet events for benchmarks (to be written).
