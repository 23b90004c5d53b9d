//! IPVS over generic netlink: a pure codec (no I/O) and a blocking client on top of it.
