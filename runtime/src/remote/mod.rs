//! Remote hosts over OpenSSH: vmctl runs itself on the far side (`vmctl agent`) and
//! speaks a versioned JSON-lines protocol with it over one multiplexed ssh connection
//! per host.
//!
//! - [`target`]: `user@host:port` as a config writes it;
//! - [`ssh`]: the `ssh` command lines, the shared connection, ssh's errors;
//! - [`protocol`]: the messages both ends speak;
//! - [`build`]: the build id (the sha256 of the executable);
//! - [`build_cache`]: the build id remembered between runs, by the file's key;
//! - [`agent`]: the far side's serve loop;
//! - [`listen`]: the far side kept behind a kept connection, serving on a socket;
//! - [`kept`]: the near side's way to a kept agent (start it, forward to it, reach it);
//! - [`client`]: the near side's handle on a running agent;
//! - [`ship`]: connect to a host's agent, shipping vmctl first when the host lacks
//!   this build.

pub mod agent;
pub mod build;
pub mod build_cache;
pub mod client;
pub mod kept;
pub mod listen;
pub mod protocol;
pub mod ship;
pub mod ssh;
pub mod target;
