//! The bramble agent as a library: the container runtime and the local image
//! store. The binary (`main.rs`) parses arguments and calls into these.

pub mod images;
pub mod runtime;
