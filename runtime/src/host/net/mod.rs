//! Bridges, VLANs, gateways and taps over netlink. (Filled in below.)
