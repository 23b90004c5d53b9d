//! poold: an IPVS-fronted prefork container pool manager.
