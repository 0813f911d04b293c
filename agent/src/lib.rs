//! The bramble agent as a library: the container runtime, the local image
//! store and pod networking. The binary (`main.rs`) parses arguments and
//! calls into these.

pub mod images;
pub mod network;
pub mod runtime;
