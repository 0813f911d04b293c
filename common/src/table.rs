//! The columns `bramble get` and `kubectl get` show for each kind.
//!
//! STUB: to be completed.
