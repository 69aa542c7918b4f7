//! The shape of the language: which nodes exist, which settings each takes, and in
//! which order. Decoding, formatting (property order) and the reference test read this
//! one table.
//!
//! Every resource node takes `count` (expansion, see `decode/expand.rs`); a `vm` takes
//! `template`, and `template` nodes take every setting of a `vm` but `count`, none of
//! them required (`decode/template.rs`).

/// What a setting's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A string.
    Text,
    /// A file path; relative paths resolve against the declaring file.
    Path,
    /// A non-negative integer.
    Integer,
    /// A number (integer or decimal).
    Number,
    /// A size: `512MiB`, `4GiB`, `4G`, or an integer number of bytes.
    Size,
    /// A percentage string (`8%`) or a fraction (`0.08`).
    Percent,
    /// `#true` or `#false`.
    Bool,
    /// The name of another resource.
    Reference,
    /// A child node with its own properties (`nic`).
    Node(&'static NodeKind),
}

/// One setting of a node: given as a property (`host="local"`) or as a child node with
/// one argument (`cpus 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: ValueKind,
    pub required: bool,
    /// May appear more than once (as child nodes), in order.
    pub repeated: bool,
}

/// A node of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeKind {
    pub name: &'static str,
    /// Whether the node's first argument is its name.
    pub named: bool,
    pub fields: &'static [Field],
}

impl NodeKind {
    pub fn field(&self, name: &str) -> Option<(usize, &'static Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }

    pub fn field_names(&self) -> impl Iterator<Item = &'static str> {
        self.fields.iter().map(|f| f.name)
    }
}

const fn f(name: &'static str, kind: ValueKind) -> Field {
    Field {
        name,
        kind,
        required: false,
        repeated: false,
    }
}

const fn required(name: &'static str, kind: ValueKind) -> Field {
    Field {
        name,
        kind,
        required: true,
        repeated: false,
    }
}

const fn repeated(name: &'static str, kind: ValueKind) -> Field {
    Field {
        name,
        kind,
        required: false,
        repeated: true,
    }
}

use ValueKind::*;

pub static PROJECT: NodeKind = NodeKind {
    name: "project",
    named: true,
    fields: &[],
};

pub static HOST: NodeKind = NodeKind {
    name: "host",
    named: true,
    fields: &[
        f("count", Integer),
        f("ssh", Text),
        f("sudo", Bool),
        f("state-dir", Path),
        f("netns", Text),
        f("cpus", Integer),
        f("memory", Size),
        f("reserve-memory", Percent),
        f("cpu-overcommit", Number),
        f("underlay", Text),
        repeated("cpuid-mask", Text),
        f("migration-downtime", Text),
    ],
};

pub static NETWORK: NodeKind = NodeKind {
    name: "network",
    named: true,
    fields: &[
        f("count", Integer),
        f("host", Reference),
        repeated("hosts", Reference),
        f("bridge", Text),
        f("uplink", Text),
    ],
};

pub static VLAN: NodeKind = NodeKind {
    name: "vlan",
    named: true,
    fields: &[
        f("count", Integer),
        required("network", Reference),
        required("id", Integer),
        f("vni", Integer),
        f("gateway", Text),
        f("subnet", Text),
        f("gateway-host", Reference),
        f("dhcp", Bool),
        f("nat", Bool),
        f("nat-via", Text),
        repeated("route-to", Reference),
    ],
};

pub static POOL: NodeKind = NodeKind {
    name: "pool",
    named: true,
    fields: &[
        f("count", Integer),
        required("host", Reference),
        required("type", Text),
        required("path", Path),
    ],
};

pub static VOLUME: NodeKind = NodeKind {
    name: "volume",
    named: true,
    fields: &[
        f("count", Integer),
        required("pool", Reference),
        required("size", Size),
        f("from", Path),
        f("prevent-destroy", Bool),
    ],
};

pub static NIC: NodeKind = NodeKind {
    name: "nic",
    named: false,
    fields: &[required("vlan", Reference), f("mac", Text), f("ip", Text)],
};

/// The settings of a `vm`; a template takes the same but `count` (the first).
const VM_FIELDS: [Field; 16] = [
    f("count", Integer),
    f("template", Reference),
    required("host", Reference),
    required("cpus", Integer),
    required("memory", Size),
    required("kernel", Path),
    f("initrd", Path),
    f("cmdline", Text),
    f("ip-cmdline", Bool),
    repeated("disk", Reference),
    repeated("nic", Node(&NIC)),
    f("cpuset", Text),
    f("state", Text),
    repeated("depends-on", Reference),
    f("migrate", Bool),
    f("migration-downtime", Text),
];

pub static VM: NodeKind = NodeKind {
    name: "vm",
    named: true,
    fields: &VM_FIELDS,
};

/// A `vm`'s settings without `count`, none required: a template may give any of them.
const fn template_fields(vm: [Field; 16]) -> [Field; 15] {
    let mut out = [f("", Text); 15];
    let mut i = 1;
    while i < vm.len() {
        out[i - 1] = Field {
            required: false,
            ..vm[i]
        };
        i += 1;
    }
    out
}

const TEMPLATE_FIELDS: [Field; 15] = template_fields(VM_FIELDS);

/// Settings and children that `vm` nodes start from (`template="NAME"`); never planned.
pub static TEMPLATE: NodeKind = NodeKind {
    name: "template",
    named: true,
    fields: &TEMPLATE_FIELDS,
};

/// Every top-level node, in the order the reference documents them.
pub static TOP_LEVEL: &[&NodeKind] = &[
    &PROJECT, &HOST, &NETWORK, &VLAN, &POOL, &VOLUME, &VM, &TEMPLATE,
];

/// The top-level node kind called `name`.
pub fn top_level(name: &str) -> Option<&'static NodeKind> {
    TOP_LEVEL.iter().copied().find(|k| k.name == name)
}

/// The kind of a node at any depth: top level, or a field of `parent` that is a node.
pub fn child_kind(parent: &NodeKind, name: &str) -> Option<&'static NodeKind> {
    match parent.field(name)?.1.kind {
        Node(kind) => Some(kind),
        _ => None,
    }
}
