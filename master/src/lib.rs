//! The bramble control plane: the redb [`store`], the Kubernetes-style HTTP
//! [`api`], the [`scheduler`], and the user-facing [`cli`].

pub mod api;
pub mod broker;
pub mod cli;
pub mod device_image;
pub mod scheduler;
pub mod store;
