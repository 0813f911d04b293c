//! The bramble control plane: the redb [`store`], the Kubernetes-style HTTP
//! [`api`], the [`scheduler`], and the user-facing [`cli`].

pub mod api;
pub mod broker;
pub mod cli;
pub mod controllers;
pub mod device_image;
pub mod dispatch;
pub mod events;
pub mod rpc;
pub mod scheduler;
pub mod store;
