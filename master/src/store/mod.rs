//! The cluster state in one redb file. STUB: to be completed.
