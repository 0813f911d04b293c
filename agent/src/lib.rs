//! The bramble agent as a library: the device daemon's parts. The binary
//! (`main.rs`) parses arguments and calls into these.
//!
//! - [`config`]: the agent's configuration file and flags.
//! - [`facts`]: what the device is (architecture, memory, cgroups) and the
//!   node conditions that follow from it.
//! - [`health`]: the node's conditions as the kubelet reports them (Ready
//!   from the runtime's and the network's health, pressure thresholds).
//! - [`state`]: the local copy of the desired state (`desired.bin`).
//! - [`link`]: the MQTT session with the master, and report coalescing.
//! - [`sync`]: the reconcile loop, desired pods vs the runtime, and the
//!   [`sync::PodRuntime`] trait every runtime implements.
//! - [`runtime`]: runtimes: the real one (libcontainer, per-container shims;
//!   [`runtime::LinuxPodRuntime`] puts it and the pod network behind the
//!   sync loop's trait, the default) and [`runtime::sim`], the simulated one.
//! - [`images`]: the local OCI image store.
//! - [`network`]: pod networking (bridge, veth, IPAM, routes, nftables).
//! - [`node`]: one node's agent, wiring link, state and sync together.
//! - [`shutdown`]: the shutdown signal every long-running task takes.

pub mod config;
pub mod dns;
pub mod events;
pub mod facts;
pub mod health;
pub mod images;
pub mod link;
pub mod network;
pub mod node;
pub mod rpc;
pub mod runtime;
pub mod services;
pub mod shutdown;
pub mod state;
pub mod stream;
pub mod sync;
