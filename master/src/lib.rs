//! The bramble control plane: the redb [`store`], the Kubernetes-style HTTP
//! [`api`], and the user-facing [`cli`].

pub mod api;
pub mod cli;
pub mod device_image;
pub mod store;
