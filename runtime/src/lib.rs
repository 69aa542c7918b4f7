//! vmctl runtime: observing and changing a host, and the microVM engine. Filled by issues 3, 4 and 6.

pub mod host;
