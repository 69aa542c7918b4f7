//! A netlink session inside a host's network namespace.
//!
//! [`Netlink::run`] starts a thread, moves *that thread only* into `/run/netns/<name>`
//! (`setns`; the calling thread and the machine's own namespace are never changed),
//! opens an rtnetlink socket there with a current-thread tokio runtime, and runs the
//! caller's closure with the session. A [`Netlink`] cannot leave its thread, so every
//! netlink request and every `/dev/net/tun` open made through it happens in the netns.
//!
//! The methods are the few link, bridge-VLAN and address requests the bridge, VLAN and
//! tap modules are made of; they block on the runtime and return parsed summaries.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd};

use futures_util::{StreamExt, TryStreamExt};
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    AfSpecBridge, BridgeVlanInfoFlags, InfoBridge, InfoData, InfoKind, InfoVlan, InfoVxlan,
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkBridgeVlan};

use crate::host::mark::is_safe_file_name;

/// Errors of the netlink session and its requests.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("network namespace name {netns:?} is not valid")]
    InvalidNetns { netns: String },
    #[error("cannot enter network namespace {netns:?}")]
    EnterNetns { netns: String, source: io::Error },
    #[error("cannot start the netlink thread")]
    StartThread(#[source] io::Error),
    #[error("cannot open a netlink socket")]
    OpenSocket(#[source] io::Error),
    #[error("cannot list network interfaces")]
    DumpLinks(#[source] Box<rtnetlink::Error>),
    #[error("cannot read the bridge VLAN tables")]
    DumpVlans(#[source] Box<rtnetlink::Error>),
    #[error("cannot list the addresses of interface {index}")]
    DumpAddresses {
        index: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot create interface {name}")]
    AddLink {
        name: String,
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot change interface {index}")]
    ChangeLink {
        index: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot delete interface {index}")]
    DeleteLink {
        index: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot add VLAN {vid} to interface {index}")]
    AddVlan {
        index: u32,
        vid: u16,
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot remove VLAN {vid} from interface {index}")]
    DeleteVlan {
        index: u32,
        vid: u16,
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot add address {address}/{prefix} to interface {index}")]
    AddAddress {
        index: u32,
        address: IpAddr,
        prefix: u8,
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot remove address {address}/{prefix} from interface {index}")]
    DeleteAddress {
        index: u32,
        address: IpAddr,
        prefix: u8,
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot read the forwarding databases")]
    DumpFdb(#[source] Box<rtnetlink::Error>),
    #[error("cannot add the forwarding entry to {dst} on interface {index}")]
    AddFdb {
        index: u32,
        dst: IpAddr,
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot remove the forwarding entry to {dst} from interface {index}")]
    DeleteFdb {
        index: u32,
        dst: IpAddr,
        source: Box<rtnetlink::Error>,
    },
}

impl NetlinkError {
    /// The errno of a netlink error reply, if this is one.
    pub fn errno(&self) -> Option<i32> {
        let source = match self {
            NetlinkError::DumpLinks(source)
            | NetlinkError::DumpVlans(source)
            | NetlinkError::DumpFdb(source) => source,
            NetlinkError::DumpAddresses { source, .. }
            | NetlinkError::AddLink { source, .. }
            | NetlinkError::ChangeLink { source, .. }
            | NetlinkError::DeleteLink { source, .. }
            | NetlinkError::AddVlan { source, .. }
            | NetlinkError::DeleteVlan { source, .. }
            | NetlinkError::AddAddress { source, .. }
            | NetlinkError::DeleteAddress { source, .. }
            | NetlinkError::AddFdb { source, .. }
            | NetlinkError::DeleteFdb { source, .. } => source,
            _ => return None,
        };
        match &**source {
            rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

/// What kind of interface a link is, as far as vmctl cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Tun,
    Vlan,
    Vxlan,
    Other(String),
    /// No `IFLA_LINKINFO` kind (physical NICs, loopback).
    None,
}

/// A network interface, parsed from an `RTM_NEWLINK` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_IFALIAS`, when set.
    pub alias: Option<String>,
    pub kind: LinkKind,
    pub up: bool,
    /// The bridge this link is a port of (`IFLA_MASTER`).
    pub controller: Option<u32>,
    /// The link a VLAN link sits on (`IFLA_LINK`).
    pub parent: Option<u32>,
    /// The VLAN id of a VLAN link.
    pub vlan_id: Option<u16>,
    /// Whether a bridge filters by VLAN.
    pub vlan_filtering: Option<bool>,
    /// A bridge's default pvid; reported only by kernels with bridge VLAN filtering
    /// (`CONFIG_BRIDGE_VLAN_FILTERING`), which is how vmctl tells them apart.
    pub vlan_default_pvid: Option<u16>,
    /// A VXLAN link's settings.
    pub vxlan: Option<VxlanInfo>,
}

/// What a VXLAN link says of itself (`IFLA_VXLAN_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: u32,
    /// Its source address (`local`), when set.
    pub local: Option<IpAddr>,
    /// Its UDP destination port.
    pub port: Option<u16>,
    /// A default remote or multicast group (`remote`/`group`), when set.
    pub group: Option<IpAddr>,
}

/// One entry of a bridge port's (or the bridge's own) VLAN table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct PortVlan {
    pub id: u16,
    /// Untagged frames arriving on the port belong to this VLAN.
    pub pvid: bool,
    /// Frames of this VLAN leave the port untagged.
    pub untagged: bool,
}

impl PortVlan {
    /// A trunk (tagged) membership.
    pub fn tagged(id: u16) -> Self {
        PortVlan {
            id,
            pvid: false,
            untagged: false,
        }
    }

    /// An access (pvid, untagged) membership.
    pub fn access(id: u16) -> Self {
        PortVlan {
            id,
            pvid: true,
            untagged: true,
        }
    }

    fn flags(self) -> BridgeVlanInfoFlags {
        let mut flags = BridgeVlanInfoFlags::empty();
        if self.pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if self.untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        flags
    }
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub address: IpAddr,
    pub prefix: u8,
    message: AddressMessage,
}

/// The calling thread's network namespace as a name that is never reused while the
/// machine runs: its `SO_NETNS_COOKIE` (Linux 5.14), or else `ino-<inode>` of
/// `/proc/thread-self/ns/net`.
fn netns_cookie() -> io::Result<String> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: socket(2) with constant arguments; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, which lives across
    // the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc == 0 && len as usize == std::mem::size_of::<u64>() {
        return Ok(cookie.to_string());
    }
    let meta = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok(format!(
        "ino-{}",
        std::os::unix::fs::MetadataExt::ino(&meta)
    ))
}

/// A netlink session on one thread inside one network namespace.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
    /// Which namespace this is, for as long as the machine runs (see [`netns_cookie`]).
    cookie: String,
    /// Not `Send`: the session's socket and any tun fd belong to this thread's netns.
    _thread_bound: PhantomData<*const ()>,
}

impl Netlink {
    /// Runs `f` with a session inside network namespace `netns` (`/run/netns/<netns>`),
    /// or in the caller's namespace when `None`, on a thread of its own.
    pub fn run<T, E, F>(netns: Option<&str>, f: F) -> Result<T, E>
    where
        F: FnOnce(&Netlink) -> Result<T, E> + Send,
        T: Send,
        E: From<NetlinkError> + Send,
    {
        if let Some(name) = netns {
            if !is_safe_file_name(name) {
                return Err(NetlinkError::InvalidNetns { netns: name.into() }.into());
            }
        }
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("vmctl-netlink".into())
                .spawn_scoped(scope, move || {
                    if let Some(name) = netns {
                        enter_netns(name)?;
                    }
                    let session = Netlink::connect()?;
                    f(&session)
                })
                .map_err(NetlinkError::StartThread)?;
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn connect() -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetlinkError::OpenSocket)?;
        let (connection, handle, _) = {
            let _context = rt.enter();
            rtnetlink::new_connection().map_err(NetlinkError::OpenSocket)?
        };
        rt.spawn(connection);
        Ok(Netlink {
            rt,
            handle,
            cookie: netns_cookie().map_err(NetlinkError::OpenSocket)?,
            _thread_bound: PhantomData,
        })
    }

    /// The session's namespace, as a name never reused while the machine runs.
    pub fn netns_cookie(&self) -> &str {
        &self.cookie
    }

    fn block<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Every interface in the namespace.
    pub fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let messages: Vec<LinkMessage> = self
            .block(self.handle.link().get().execute().try_collect())
            .map_err(|e| NetlinkError::DumpLinks(Box::new(e)))?;
        Ok(messages.iter().map(parse_link).collect())
    }

    /// The interface called `name`, if there is one.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// The VLAN table of every bridge port and bridge (its own, "self", entries), by
    /// interface index: an `AF_BRIDGE` link dump with `RTEXT_FILTER_BRVLAN`.
    pub fn bridge_vlans(&self) -> Result<BTreeMap<u32, Vec<PortVlan>>, NetlinkError> {
        let request = self
            .handle
            .link()
            .get()
            .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan]);
        let messages: Vec<LinkMessage> = self
            .block(request.execute().try_collect())
            .map_err(|e| NetlinkError::DumpVlans(Box::new(e)))?;
        let mut tables = BTreeMap::new();
        for message in &messages {
            let mut vlans = Vec::new();
            for attr in &message.attributes {
                if let LinkAttribute::AfSpecBridge(specs) = attr {
                    for spec in specs {
                        if let AfSpecBridge::VlanInfo(info) = spec {
                            vlans.push(PortVlan {
                                id: info.vid,
                                pvid: info.flags.contains(BridgeVlanInfoFlags::Pvid),
                                untagged: info.flags.contains(BridgeVlanInfoFlags::Untagged),
                            });
                        }
                    }
                }
            }
            vlans.sort();
            tables.insert(message.header.index, vlans);
        }
        Ok(tables)
    }

    /// Creates an interface (`RTM_NEWLINK` with `NLM_F_CREATE | NLM_F_EXCL`).
    pub fn add_link(&self, name: &str, message: LinkMessage) -> Result<(), NetlinkError> {
        self.block(self.handle.link().add(message).execute())
            .map_err(|source| NetlinkError::AddLink {
                source: Box::new(source),
                name: name.into(),
            })
    }

    /// Changes an existing interface (`RTM_NEWLINK` without create), like `ip link set`.
    pub fn change_link(&self, index: u32, message: LinkMessage) -> Result<(), NetlinkError> {
        self.block(self.handle.link().change(message).execute())
            .map_err(|source| NetlinkError::ChangeLink {
                source: Box::new(source),
                index,
            })
    }

    /// Deletes an interface.
    pub fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.block(self.handle.link().del(index).execute())
            .map_err(|source| NetlinkError::DeleteLink {
                source: Box::new(source),
                index,
            })
    }

    /// Adds (or updates the flags of) `vlan` in the VLAN table of port `index`, or of
    /// the bridge itself when `bridge_self`.
    pub fn add_port_vlan(
        &self,
        index: u32,
        vlan: PortVlan,
        bridge_self: bool,
    ) -> Result<(), NetlinkError> {
        let mut builder = LinkBridgeVlan::new(index);
        if bridge_self {
            builder = builder.bridge_self();
        }
        let message = builder.vlan(vlan.id, vlan.flags()).build();
        self.block(self.handle.link().set(message).execute())
            .map_err(|source| NetlinkError::AddVlan {
                source: Box::new(source),
                index,
                vid: vlan.id,
            })
    }

    /// Removes VLAN `vid` from the table of port `index` (or of the bridge itself).
    pub fn delete_port_vlan(
        &self,
        index: u32,
        vid: u16,
        bridge_self: bool,
    ) -> Result<(), NetlinkError> {
        let mut builder = LinkBridgeVlan::new(index);
        if bridge_self {
            builder = builder.bridge_self();
        }
        let message = builder.vlan(vid, BridgeVlanInfoFlags::empty()).build();
        self.block(self.handle.link().del_with_message(message).execute())
            .map_err(|source| NetlinkError::DeleteVlan {
                source: Box::new(source),
                index,
                vid,
            })
    }

    /// Makes the VLAN table of port `index` (or the bridge's own) exactly `desired`.
    pub fn set_port_vlans(
        &self,
        index: u32,
        current: &[PortVlan],
        desired: &[PortVlan],
        bridge_self: bool,
    ) -> Result<(), NetlinkError> {
        for vlan in current {
            if !desired.iter().any(|d| d.id == vlan.id) {
                self.delete_port_vlan(index, vlan.id, bridge_self)?;
            }
        }
        for vlan in desired {
            if !current.contains(vlan) {
                self.add_port_vlan(index, *vlan, bridge_self)?;
            }
        }
        Ok(())
    }

    /// The head-end replication entries of every interface's forwarding database, by
    /// interface index: the destinations of its `00:00:00:00:00:00` entries (what
    /// `bridge fdb append 00:00:00:00:00:00 dev vx… dst …` adds), sorted.
    pub fn fdb_flood_peers(&self) -> Result<BTreeMap<u32, Vec<IpAddr>>, NetlinkError> {
        let request = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge);
        let messages: Vec<NeighbourMessage> = self
            .block(request.execute().try_collect())
            .map_err(|e| NetlinkError::DumpFdb(Box::new(e)))?;
        let mut peers: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
        for message in &messages {
            let mut zero_mac = false;
            let mut dst = None;
            for attr in &message.attributes {
                match attr {
                    NeighbourAttribute::LinkLayerAddress(mac) => {
                        zero_mac = mac.len() == 6 && mac.iter().all(|b| *b == 0);
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                        dst = Some(IpAddr::V4(*ip));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                        dst = Some(IpAddr::V6(*ip));
                    }
                    // In an AF_BRIDGE message the address family does not say which.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                        dst = match bytes.len() {
                            4 => <[u8; 4]>::try_from(&bytes[..]).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(&bytes[..]).ok().map(IpAddr::from),
                            _ => None,
                        };
                    }
                    _ => {}
                }
            }
            if let (true, Some(dst)) = (zero_mac, dst) {
                peers.entry(message.header.ifindex).or_default().push(dst);
            }
        }
        for list in peers.values_mut() {
            list.sort();
            list.dedup();
        }
        Ok(peers)
    }

    /// The `00:00:00:00:00:00 dst <dst>` entry of interface `index` (a VXLAN link's own
    /// database, `NTF_SELF`, permanent).
    fn flood_entry(index: u32, dst: IpAddr) -> NeighbourMessage {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = index;
        message.header.state = NeighbourState::Permanent;
        message.header.flags = NeighbourFlags::Own;
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
        message
            .attributes
            .push(NeighbourAttribute::Destination(match dst {
                IpAddr::V4(ip) => NeighbourAddress::Inet(ip),
                IpAddr::V6(ip) => NeighbourAddress::Inet6(ip),
            }));
        message
    }

    /// Appends a head-end replication entry to `dst` to interface `index`'s forwarding
    /// database (`bridge fdb append`: `NLM_F_APPEND`, which rtnetlink's neighbour
    /// request cannot set, so the message is sent as is).
    pub fn append_fdb(&self, index: u32, dst: IpAddr) -> Result<(), NetlinkError> {
        let err = |source| NetlinkError::AddFdb {
            index,
            dst,
            source: Box::new(source),
        };
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(
            Self::flood_entry(index, dst),
        ));
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        let mut handle = self.handle.clone();
        self.block(async move {
            let mut response = handle.request(request)?;
            while let Some(message) = response.next().await {
                if let NetlinkPayload::Error(e) = message.payload {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
            }
            Ok(())
        })
        .map_err(err)
    }

    /// Removes the head-end replication entry to `dst` from interface `index`.
    pub fn delete_fdb(&self, index: u32, dst: IpAddr) -> Result<(), NetlinkError> {
        let request = self.handle.neighbours().del(Self::flood_entry(index, dst));
        self.block(request.execute())
            .map_err(|source| NetlinkError::DeleteFdb {
                index,
                dst,
                source: Box::new(source),
            })
    }

    /// The addresses on interface `index`, without link-local ones.
    pub fn addresses(&self, index: u32) -> Result<Vec<Address>, NetlinkError> {
        let request = self.handle.address().get().set_link_index_filter(index);
        let messages: Vec<AddressMessage> =
            self.block(request.execute().try_collect())
                .map_err(|source| NetlinkError::DumpAddresses {
                    source: Box::new(source),
                    index,
                })?;
        let mut out = Vec::new();
        for message in messages {
            if message.header.index != index || message.header.scope == AddressScope::Link {
                continue;
            }
            let address = message.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = address.or_else(|| {
                message.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(address) = address {
                out.push(Address {
                    address,
                    prefix: message.header.prefix_len,
                    message,
                });
            }
        }
        Ok(out)
    }

    /// Adds `address/prefix` to interface `index`.
    pub fn add_address(&self, index: u32, address: IpAddr, prefix: u8) -> Result<(), NetlinkError> {
        self.block(self.handle.address().add(index, address, prefix).execute())
            .map_err(|source| NetlinkError::AddAddress {
                source: Box::new(source),
                index,
                address,
                prefix,
            })
    }

    /// Removes an address found by [`Netlink::addresses`].
    pub fn delete_address(&self, address: &Address) -> Result<(), NetlinkError> {
        self.block(self.handle.address().del(address.message.clone()).execute())
            .map_err(|source| NetlinkError::DeleteAddress {
                source: Box::new(source),
                index: address.message.header.index,
                address: address.address,
                prefix: address.prefix,
            })
    }
}

/// Moves the calling thread (only) into `/run/netns/<name>`.
fn enter_netns(name: &str) -> Result<(), NetlinkError> {
    let err = |source| NetlinkError::EnterNetns {
        netns: name.into(),
        source,
    };
    let file = File::open(format!("/run/netns/{name}")).map_err(err)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| err(e.into()))
}

fn parse_link(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        alias: None,
        kind: LinkKind::None,
        up: message.header.flags.contains(LinkFlags::Up),
        controller: None,
        parent: None,
        vlan_id: None,
        vlan_filtering: None,
        vlan_default_pvid: None,
        vxlan: None,
    };
    for attr in &message.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::IfAlias(alias) if !alias.is_empty() => link.alias = Some(alias.clone()),
            LinkAttribute::Controller(index) if *index != 0 => link.controller = Some(*index),
            LinkAttribute::Link(index) if *index != 0 => link.parent = Some(*index),
            LinkAttribute::LinkInfo(infos) => parse_link_info(infos, &mut link),
            _ => {}
        }
    }
    link
}

fn parse_link_info(infos: &[LinkInfo], link: &mut Link) {
    for info in infos {
        match info {
            LinkInfo::Kind(kind) => {
                link.kind = match kind {
                    InfoKind::Bridge => LinkKind::Bridge,
                    InfoKind::Tun => LinkKind::Tun,
                    InfoKind::Vlan => LinkKind::Vlan,
                    InfoKind::Vxlan => LinkKind::Vxlan,
                    other => LinkKind::Other(other.to_string()),
                }
            }
            LinkInfo::Data(InfoData::Bridge(opts)) => {
                for opt in opts {
                    match opt {
                        InfoBridge::VlanFiltering(on) => link.vlan_filtering = Some(*on),
                        InfoBridge::VlanDefaultPvid(pvid) => link.vlan_default_pvid = Some(*pvid),
                        _ => {}
                    }
                }
            }
            LinkInfo::Data(InfoData::Vxlan(opts)) => {
                let info = link.vxlan.get_or_insert_with(VxlanInfo::default);
                for opt in opts {
                    match opt {
                        InfoVxlan::Id(vni) => info.vni = *vni,
                        InfoVxlan::Local(ip) => info.local = Some(IpAddr::V4(*ip)),
                        InfoVxlan::Local6(ip) => info.local = Some(IpAddr::V6(*ip)),
                        InfoVxlan::Group(ip) if !ip.is_unspecified() => {
                            info.group = Some(IpAddr::V4(*ip))
                        }
                        InfoVxlan::Group6(ip) if !ip.is_unspecified() => {
                            info.group = Some(IpAddr::V6(*ip))
                        }
                        InfoVxlan::Port(port) => info.port = Some(*port),
                        _ => {}
                    }
                }
            }
            LinkInfo::Data(InfoData::Vlan(opts)) => {
                for opt in opts {
                    if let InfoVlan::Id(id) = opt {
                        link.vlan_id = Some(*id);
                    }
                }
            }
            _ => {}
        }
    }
}
