//! The flow processor (to be written).
