//! Controllers: loops that watch the store and drive it toward what the
//! objects ask for. One file per controller.

pub mod node_lifecycle;
pub mod pod_termination;
