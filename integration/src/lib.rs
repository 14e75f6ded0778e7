//! Helpers for end-to-end tests (to be written).
