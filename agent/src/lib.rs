//! bramble-agent library: the parts of the device agent that `main.rs` wires together.

pub mod network;
