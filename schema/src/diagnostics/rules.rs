//! Every rule the loader checks, as one miette diagnostic each: [`SchemaError`]. A
//! rule's variant holds only spans and data; `located.rs` attaches the file.

use std::path::PathBuf;

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

/// One broken rule. The `code` of each variant is unique and stable.
#[derive(Debug, Error, Diagnostic)]
pub enum SchemaError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    #[diagnostic(
        code(vmctl::schema::unreadable_file),
        help("name a regular .kdl file, or a folder of them, that exists and that you may read")
    )]
    UnreadableFile {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The file is not UTF-8 text.
    #[error("{} is not UTF-8 text (invalid byte at offset {offset})", path.display())]
    #[diagnostic(
        code(vmctl::schema::not_utf8),
        help("KDL files must be UTF-8; re-encode the file (e.g. `iconv -t UTF-8`)")
    )]
    NotUtf8 { path: PathBuf, offset: usize },

    /// A folder was given that holds no `.kdl` file.
    #[error("no .kdl files in {}", path.display())]
    #[diagnostic(
        code(vmctl::schema::no_config_files),
        help("pass a .kdl file or a folder that contains .kdl files")
    )]
    NoConfigFiles { path: PathBuf },

    /// The file is larger than the loader accepts.
    #[error("file is {size} bytes, more than the limit of {limit} bytes")]
    #[diagnostic(
        code(vmctl::schema::file_too_large),
        help("split the config into several files in one folder")
    )]
    FileTooLarge { size: usize, limit: usize },

    /// Nesting that no vmctl config needs and that the KDL parser handles badly.
    #[error("{what} nested {depth} deep; at most {limit} is allowed")]
    #[diagnostic(
        code(vmctl::schema::nesting_too_deep),
        help("vmctl's language nests only two levels (a node and its children)")
    )]
    NestingTooDeep {
        what: &'static str,
        depth: usize,
        limit: usize,
        #[label("too deep here")]
        span: SourceSpan,
    },

    /// A KDL syntax error, as the kdl parser reports it.
    #[error("{message}")]
    #[diagnostic(code(vmctl::schema::syntax))]
    Syntax {
        message: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    /// A node that the language does not have.
    #[error("unknown {place} `{name}`")]
    #[diagnostic(code(vmctl::schema::unknown_node))]
    UnknownNode {
        place: String,
        name: String,
        #[label("not a known node here")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// A property (or child setting) that this node does not have.
    #[error("`{node}` has no property `{name}`")]
    #[diagnostic(code(vmctl::schema::unknown_property))]
    UnknownProperty {
        node: &'static str,
        name: String,
        #[label("unknown property")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// A value outside the allowed set (`state`, pool `type`).
    #[error("`{found}` is not a valid {field}")]
    #[diagnostic(code(vmctl::schema::unknown_value))]
    UnknownValue {
        field: &'static str,
        found: String,
        #[label("unknown value")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// A value of the wrong type.
    #[error("`{field}` must be {expected}, found {found}")]
    #[diagnostic(code(vmctl::schema::wrong_type))]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: String,
        #[label("expected {expected}")]
        span: SourceSpan,
        /// What to write instead ([`SchemaError::wrong_type`] words it).
        #[help]
        help: String,
    },

    /// A required value is missing.
    #[error("`{node}` needs {what}")]
    #[diagnostic(code(vmctl::schema::missing_value))]
    MissingValue {
        node: &'static str,
        what: String,
        #[label("missing {what}")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// More arguments than the setting takes.
    #[error("unexpected argument to `{field}`")]
    #[diagnostic(code(vmctl::schema::unexpected_argument))]
    UnexpectedArgument {
        field: String,
        #[label("not expected")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// A property given twice on one node.
    #[error("`{field}` is given twice")]
    #[diagnostic(code(vmctl::schema::duplicate_property), help("keep one of them"))]
    DuplicateProperty {
        field: &'static str,
        #[label("given again here")]
        span: SourceSpan,
        #[label("first given here")]
        first: SourceSpan,
    },

    /// No `project` node in the whole config, or more than one.
    #[error("{problem}")]
    #[diagnostic(
        code(vmctl::schema::project),
        help("exactly one file of the config says `project \"<name>\"`")
    )]
    Project {
        problem: String,
        #[label("here")]
        span: Option<SourceSpan>,
    },

    /// A name that cannot be used for a resource.
    #[error("invalid {kind} name `{name}`")]
    #[diagnostic(
        code(vmctl::schema::invalid_name),
        help("names are 1 to 63 characters of letters, digits, `-`, `_` and `.`, starting with a letter or digit")
    )]
    InvalidName {
        kind: &'static str,
        name: String,
        #[label("invalid name")]
        span: SourceSpan,
    },

    /// Two resources of one kind with the same name.
    #[error("{kind} `{name}` is declared twice")]
    #[diagnostic(code(vmctl::schema::duplicate_name))]
    DuplicateName {
        kind: &'static str,
        name: String,
        #[label("declared again here")]
        span: SourceSpan,
        #[label("first declared here")]
        first: Option<SourceSpan>,
        #[help]
        help: String,
    },

    /// A reference to a resource that does not exist.
    #[error("no {kind} named `{name}`")]
    #[diagnostic(code(vmctl::schema::dangling_reference))]
    DanglingReference {
        kind: &'static str,
        name: String,
        #[label("unknown {kind}")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// A VLAN id outside 1..=4094.
    #[error("VLAN id {id} is out of range")]
    #[diagnostic(
        code(vmctl::schema::vlan_id_range),
        help("VLAN ids are 1 to 4094 (0 and 4095 are reserved by 802.1Q)")
    )]
    VlanIdRange {
        id: i128,
        #[label("not in 1..=4094")]
        span: SourceSpan,
    },

    /// Two VLANs with one id on one network.
    #[error("VLAN id {id} is used twice on network `{network}`")]
    #[diagnostic(code(vmctl::schema::duplicate_vlan_id))]
    DuplicateVlanId {
        id: u16,
        network: String,
        #[label("used again here")]
        span: SourceSpan,
        #[label("first used here")]
        first: Option<SourceSpan>,
        #[help]
        help: String,
    },

    /// A MAC address that is not `aa:bb:cc:dd:ee:ff`.
    #[error("`{mac}` is not a MAC address")]
    #[diagnostic(
        code(vmctl::schema::invalid_mac),
        help("write six hex bytes separated by colons, e.g. 52:54:00:12:34:56, or leave `mac` out to derive one")
    )]
    InvalidMac {
        mac: String,
        #[label("invalid MAC")]
        span: SourceSpan,
    },

    /// A multicast MAC address on a NIC.
    #[error("`{mac}` is a multicast MAC address")]
    #[diagnostic(
        code(vmctl::schema::multicast_mac),
        help("a NIC needs a unicast address: the lowest bit of the first byte must be 0 (e.g. 52:54:00:…)")
    )]
    MulticastMac {
        mac: String,
        #[label("multicast")]
        span: SourceSpan,
    },

    /// One MAC address on two NICs.
    #[error("MAC `{mac}` is used twice")]
    #[diagnostic(code(vmctl::schema::duplicate_mac))]
    DuplicateMac {
        mac: String,
        #[label("used again here")]
        span: SourceSpan,
        #[label("first used here")]
        first: Option<SourceSpan>,
        #[help]
        help: String,
    },

    /// Two VLAN bridges (`<bridge>v<id>`, shortened to 15 bytes), or one and another
    /// interface of the host, with one name.
    #[error("interface `{name}`, {what}, is also {other} on host `{host}`")]
    #[diagnostic(code(vmctl::schema::vlan_bridge_collision))]
    VlanBridgeCollision {
        name: String,
        what: String,
        other: String,
        host: String,
        #[label("`{name}` here")]
        span: SourceSpan,
        #[label("same interface name here")]
        first: Option<SourceSpan>,
        #[help]
        help: String,
    },

    /// Two VLAN gateways of one host in overlapping subnets (or the same gateway twice).
    #[error(
        "gateway `{gateway}` of VLAN `{vlan}` {relation} `{other}` of VLAN `{other_vlan}` on host `{host}`"
    )]
    #[diagnostic(code(vmctl::schema::overlapping_gateways))]
    OverlappingGateways {
        gateway: String,
        vlan: String,
        relation: &'static str,
        other: String,
        other_vlan: String,
        host: String,
        #[label("this gateway")]
        span: SourceSpan,
        #[label("overlaps this one")]
        first: Option<SourceSpan>,
        #[help]
        help: String,
    },

    /// A Linux interface name that the kernel would refuse.
    #[error("interface name `{name}` is invalid: {reason}")]
    #[diagnostic(
        code(vmctl::schema::invalid_interface_name),
        help("Linux interface names are 1 to 15 bytes, without `/`, `:` or whitespace")
    )]
    InvalidInterfaceName {
        name: String,
        reason: &'static str,
        #[label("invalid interface name")]
        span: SourceSpan,
    },

    /// One interface name used twice on one host.
    #[error("interface `{name}` is used twice on host `{host}`")]
    #[diagnostic(code(vmctl::schema::duplicate_interface))]
    DuplicateInterface {
        name: String,
        host: String,
        #[label("used again here")]
        span: SourceSpan,
        #[label("first used here")]
        first: Option<SourceSpan>,
        #[help]
        help: String,
    },

    /// A VLAN's `subnet` that does not hold its `gateway`, or with another prefix.
    #[error("gateway `{gateway}` of VLAN `{vlan}` {problem} subnet `{subnet}`")]
    #[diagnostic(code(vmctl::schema::gateway_outside_subnet))]
    GatewayOutsideSubnet {
        gateway: String,
        vlan: String,
        problem: &'static str,
        subnet: String,
        #[label("this gateway")]
        span: SourceSpan,
        #[label("the subnet")]
        other: Option<SourceSpan>,
        #[help]
        help: String,
    },

    /// A NIC's address outside its VLAN's subnet.
    #[error("address `{address}` of VM `{vm}` is outside subnet `{subnet}` of VLAN `{vlan}`")]
    #[diagnostic(code(vmctl::schema::address_outside_subnet))]
    AddressOutsideSubnet {
        address: String,
        vm: String,
        subnet: String,
        vlan: String,
        #[label("not in {subnet}")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// A NIC's address that is its subnet's network or broadcast address, or the
    /// gateway's.
    #[error("address `{address}` of VM `{vm}` is {what} of VLAN `{vlan}`")]
    #[diagnostic(code(vmctl::schema::reserved_address))]
    ReservedAddress {
        address: String,
        vm: String,
        what: &'static str,
        vlan: String,
        #[label("{what}")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// One address declared on two NICs of a VLAN.
    #[error("address `{address}` is declared twice on VLAN `{vlan}`")]
    #[diagnostic(code(vmctl::schema::duplicate_address))]
    DuplicateAddress {
        address: String,
        vlan: String,
        #[label("declared again here")]
        span: SourceSpan,
        #[label("first declared here")]
        first: Option<SourceSpan>,
        #[help]
        help: String,
    },

    /// An address on a NIC whose VLAN has no subnet.
    #[error("VM `{vm}` declares address `{address}` on VLAN `{vlan}`, which has no subnet")]
    #[diagnostic(code(vmctl::schema::no_subnet))]
    NoSubnet {
        vm: String,
        address: String,
        vlan: String,
        #[label("no subnet to take it from")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// `ip-cmdline` on a VM whose first NIC has no IPv4 address to give.
    #[error("VM `{vm}` has `ip-cmdline` but {problem}")]
    #[diagnostic(code(vmctl::schema::ip_cmdline_without_address))]
    IpCmdlineWithoutAddress {
        vm: String,
        problem: String,
        #[label("no address for the kernel's `ip=`")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// More NICs on a VLAN than its subnet has addresses for.
    #[error("subnet `{subnet}` of VLAN `{vlan}` has {capacity} addresses for NICs, but {nics} NICs are on it")]
    #[diagnostic(code(vmctl::schema::subnet_exhausted))]
    SubnetExhausted {
        subnet: String,
        vlan: String,
        capacity: u128,
        nics: usize,
        #[label("{capacity} addresses")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// A size or count that is not a valid size.
    #[error("`{found}` is not a valid size")]
    #[diagnostic(code(vmctl::schema::invalid_size))]
    InvalidSize {
        found: String,
        #[label("invalid size")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// A number too large for the setting's type.
    #[error("`{field}` value {found} is too large (at most {max})")]
    #[diagnostic(code(vmctl::schema::number_too_large), help("use a smaller value"))]
    NumberTooLarge {
        field: &'static str,
        found: String,
        max: String,
        #[label("too large")]
        span: SourceSpan,
    },

    /// A number below the setting's minimum (`cpus` ≥ 1, sizes > 0, `memory` ≥ 16MiB).
    #[error("`{field}` must be at least {min}, found {found}")]
    #[diagnostic(code(vmctl::schema::too_small), help("{help}"))]
    TooSmall {
        field: &'static str,
        min: String,
        found: String,
        #[label("too small")]
        span: SourceSpan,
        help: &'static str,
    },

    /// Guest memory that is not a whole number of 4 KiB pages.
    #[error("`memory` {found} is not a multiple of 4KiB")]
    #[diagnostic(
        code(vmctl::schema::memory_alignment),
        help("guest memory is made of 4KiB pages; round to a multiple of 4KiB, e.g. {suggestion}")
    )]
    MemoryAlignment {
        found: String,
        suggestion: String,
        #[label("not page-aligned")]
        span: SourceSpan,
    },

    /// A value whose syntax is wrong (`cpuset`, `gateway`, `ssh`, `reserve-memory`, …).
    #[error("invalid {field} `{found}`")]
    #[diagnostic(code(vmctl::schema::invalid_value), help("{help}"))]
    InvalidValue {
        field: &'static str,
        found: String,
        #[label("{reason}")]
        span: SourceSpan,
        reason: String,
        help: &'static str,
    },

    /// A volume attached to two VMs.
    #[error("volume `{volume}` is attached to both `{first_vm}` and `{vm}`")]
    #[diagnostic(
        code(vmctl::schema::volume_shared),
        help("a volume belongs to one VM; give each VM its own volume")
    )]
    VolumeShared {
        volume: String,
        vm: String,
        first_vm: String,
        #[label("attached again here")]
        span: SourceSpan,
        #[label("first attached here")]
        first: Option<SourceSpan>,
    },

    /// A VM that uses a volume or VLAN of another host.
    #[error("VM `{vm}` is on host `{vm_host}` but its {kind} `{name}` is on {other_host}")]
    #[diagnostic(
        code(vmctl::schema::other_host),
        help("a VM can only use volumes and VLANs of its own host (a VLAN of a network with `hosts`: of any of those hosts)")
    )]
    OtherHost {
        vm: String,
        vm_host: String,
        kind: &'static str,
        name: String,
        /// Where it is: "host `a`", or "hosts `a`, `b`".
        other_host: String,
        #[label("on {other_host}")]
        span: SourceSpan,
    },

    /// Two settings of one node of which only one may be given (`host` and `hosts`).
    #[error("`{node}` takes `{first}` or `{second}`, not both")]
    #[diagnostic(code(vmctl::schema::conflicting_settings))]
    ConflictingSettings {
        node: &'static str,
        first: &'static str,
        second: &'static str,
        #[label("`{second}` here")]
        span: SourceSpan,
        #[label("`{first}` here")]
        other: SourceSpan,
        #[help]
        help: String,
    },

    /// One host named twice in a network's `hosts`.
    #[error("host `{host}` is listed twice in `hosts` of network `{network}`")]
    #[diagnostic(
        code(vmctl::schema::duplicate_host),
        help("name each host of the network once")
    )]
    DuplicateHost {
        host: String,
        network: String,
        #[label("listed again here")]
        span: SourceSpan,
        #[label("first listed here")]
        first: SourceSpan,
    },

    /// A host of a network that spans hosts without an address for the tunnels.
    #[error("network `{network}` spans hosts but host `{host}` has no underlay address")]
    #[diagnostic(code(vmctl::schema::missing_underlay))]
    MissingUnderlay {
        network: String,
        host: String,
        #[label("no underlay address")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// Two hosts of one spanning network with one underlay address.
    #[error(
        "hosts `{host}` and `{other}` of network `{network}` have one underlay address {address}"
    )]
    #[diagnostic(
        code(vmctl::schema::duplicate_underlay),
        help("each host of a network that spans hosts needs an underlay address of its own (`underlay` in its `host` node)")
    )]
    DuplicateUnderlay {
        network: String,
        host: String,
        other: String,
        address: String,
        #[label("`{host}` is at {address}")]
        span: SourceSpan,
        #[label("so is `{other}`")]
        first: SourceSpan,
    },

    /// Underlay addresses of one spanning network in both IPv4 and IPv6.
    #[error("network `{network}` spans hosts with IPv4 and IPv6 underlay addresses (`{host}` {address}, `{other}` {other_address})")]
    #[diagnostic(
        code(vmctl::schema::mixed_underlay),
        help("a VXLAN tunnel runs over one address family: give every host of the network an IPv4 `underlay`, or every one an IPv6 one")
    )]
    MixedUnderlay {
        network: String,
        host: String,
        address: String,
        other: String,
        other_address: String,
        #[label("{address}")]
        span: SourceSpan,
        #[label("{other_address}")]
        first: SourceSpan,
    },

    /// Two VLANs of networks that span hosts with one VNI on a host both are on.
    #[error("VLAN `{vlan}` of network `{network}` and VLAN `{other_vlan}` of network `{other_network}` have one VNI {vni} on host `{host}`")]
    #[diagnostic(code(vmctl::schema::vni_collision))]
    VniCollision {
        vlan: String,
        network: String,
        other_vlan: String,
        other_network: String,
        vni: u32,
        host: String,
        #[label("VNI {vni}")]
        span: SourceSpan,
        #[label("also VNI {vni}")]
        first: Option<SourceSpan>,
        #[help]
        help: String,
    },

    /// A VLAN `gateway` whose host is not clear: on a network that spans hosts it needs
    /// `gateway-host`, which must be one of the network's hosts and comes with a gateway.
    #[error("{problem}")]
    #[diagnostic(code(vmctl::schema::gateway_host))]
    GatewayHost {
        problem: String,
        #[label("{label}")]
        span: SourceSpan,
        label: &'static str,
        #[help]
        help: String,
    },

    /// `dhcp #true` on a VLAN that has no IPv4 gateway for the server to listen on.
    #[error("{problem}")]
    #[diagnostic(code(vmctl::schema::dhcp))]
    Dhcp {
        problem: String,
        #[label("{label}")]
        span: SourceSpan,
        label: &'static str,
        #[help]
        help: String,
    },

    /// `nat #true` on a VLAN without a gateway: there is no host address to route
    /// through.
    #[error("VLAN `{vlan}` has `nat #true` but no gateway")]
    #[diagnostic(
        code(vmctl::schema::nat_without_gateway),
        help("give the VLAN a `gateway` (e.g. `gateway \"10.100.0.1/24\"`): its guests route through it, or remove `nat`")
    )]
    NatWithoutGateway {
        vlan: String,
        #[label("needs a gateway")]
        span: SourceSpan,
    },

    /// `nat-via` on a VLAN without `nat #true`.
    #[error("VLAN `{vlan}` has `nat-via` but not `nat #true`")]
    #[diagnostic(
        code(vmctl::schema::nat_via_without_nat),
        help(
            "`nat-via` names the uplink NAT leaves through: add `nat #true`, or remove `nat-via`"
        )
    )]
    NatViaWithoutNat {
        vlan: String,
        #[label("without `nat #true`")]
        span: SourceSpan,
    },

    /// A `route-to` the host cannot route: to the VLAN itself, from or to a VLAN
    /// without a gateway, or between gateways on different hosts.
    #[error("VLAN `{vlan}` cannot route to `{target}`: {problem}")]
    #[diagnostic(code(vmctl::schema::route_to))]
    RouteTo {
        vlan: String,
        target: String,
        problem: String,
        #[label("this route")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// More VM memory or vCPUs on a host than it can give.
    #[error("host `{host}` is over capacity: {what}")]
    #[diagnostic(code(vmctl::schema::over_capacity), help("{help}"))]
    OverCapacity {
        host: String,
        what: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        help: String,
    },

    /// `count` on a node whose name has no `{n}`: every instance would have one name.
    #[error("{kind} `{name}` has `count` but no `{{n}}` in its name")]
    #[diagnostic(code(vmctl::schema::count_without_placeholder))]
    CountWithoutPlaceholder {
        kind: &'static str,
        name: String,
        #[label("no `{{n}}` in this name")]
        span: SourceSpan,
        #[label("count given here")]
        count: SourceSpan,
        #[help]
        help: String,
    },

    /// `{n}` in a node without `count` (or in a template of a vm without one).
    #[error("`{{n}}` in {kind} `{name}`, which has no `count`")]
    #[diagnostic(code(vmctl::schema::placeholder_without_count))]
    PlaceholderWithoutCount {
        kind: &'static str,
        name: String,
        #[label("`{{n}}` is only replaced in a node with `count`")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    /// More instances than a file may expand to.
    #[error("the counts of this file make more than {limit} resources")]
    #[diagnostic(
        code(vmctl::schema::too_many_instances),
        help("split the resources over several files, or use smaller counts")
    )]
    TooManyInstances {
        limit: u32,
        #[label("the count that passes the limit")]
        span: SourceSpan,
    },

    /// Templates that name each other in a loop through `template=`.
    #[error("template cycle: {cycle}")]
    #[diagnostic(
        code(vmctl::schema::template_cycle),
        help("a template may start from another, but not from itself: remove one `template=` of the cycle")
    )]
    TemplateCycle {
        cycle: String,
        #[label("this `template=` closes the cycle")]
        span: SourceSpan,
    },

    /// A template that no VM uses (a warning: nothing is wrong, but nothing uses it).
    #[error("template `{name}` is not used by any vm")]
    #[diagnostic(
        code(vmctl::schema::unused_template),
        severity(Warning),
        help("use it with `vm \"…\" template=\"{name}\"`, or remove it")
    )]
    UnusedTemplate {
        name: String,
        #[label("not used")]
        span: SourceSpan,
    },

    /// VMs that depend on each other in a loop.
    #[error("depends-on cycle: {cycle}")]
    #[diagnostic(
        code(vmctl::schema::dependency_cycle),
        help("remove one `depends-on` of the cycle")
    )]
    DependencyCycle {
        cycle: String,
        #[label("this dependency closes the cycle")]
        span: SourceSpan,
    },
}

/// What `expected` reads as in [`SchemaError::WrongType`] for a boolean.
pub const BOOLEAN: &str = "#true or #false";

/// The help line of a KDL v1 boolean (`prevent-destroy true`, `"true"`).
pub const KDL_V2_BOOLEANS: &str = "KDL v2 writes booleans as #true / #false";

impl SchemaError {
    /// `field` holds `found` where it needs `expected`; the help says what to write.
    pub fn wrong_type(
        field: &'static str,
        expected: &'static str,
        found: String,
        span: SourceSpan,
    ) -> SchemaError {
        let help = match expected {
            BOOLEAN => format!("write `{field} #true` or `{field} #false`: {KDL_V2_BOOLEANS}"),
            "a child node" => format!(
                "write `{field}` as a child node inside this node's braces: `{{ {field} … }}`"
            ),
            _ => format!("write {expected} here"),
        };
        SchemaError::WrongType {
            field,
            expected,
            found,
            span,
            help,
        }
    }
}
