//! The Kubernetes-style HTTP API. STUB: to be completed.
