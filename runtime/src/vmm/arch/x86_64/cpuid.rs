//! The CPUID a vCPU sees: what KVM supports (`KVM_GET_SUPPORTED_CPUID`), fixed up per
//! vCPU the way Firecracker does for the leaves a Linux guest reads to find its CPUs —
//! APIC ids (leaf 0x1, 0xB, 0x1F), topology (one thread per core, one socket: leaves
//! 0x4, 0xB, 0x1F), the hypervisor bit and leaf (0x40000000, "KVMKVMKVM") — and the
//! user's feature mask applied (names as in /proc/cpuinfo: `sse4_2`, `avx`, `xsave`, …).

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Errors building a vCPU's CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// A feature name in the CPUID mask is not one vmctl knows.
    #[error("unknown CPUID feature `{name}` (known: {known})")]
    UnknownFeature {
        /// The name given.
        name: String,
        /// The names vmctl knows, comma separated.
        known: String,
    },
    /// The CPUID table is full.
    #[error("cannot add CPUID leaf {leaf:#x}: the table is full")]
    TableFull {
        /// The leaf.
        leaf: u32,
    },
}

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

/// Where a feature flag lives: leaf, subleaf, register, bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureBit {
    /// The leaf (EAX input).
    pub leaf: u32,
    /// The subleaf (ECX input).
    pub subleaf: u32,
    /// The output register.
    pub reg: Reg,
    /// The bit.
    pub bit: u8,
}

use Reg::{Ebx, Ecx, Edx};

/// The features that can be masked, by their /proc/cpuinfo names.
const FEATURES: &[(&str, u32, u32, Reg, u8)] = &[
    ("sse3", 1, 0, Ecx, 0),
    ("pclmulqdq", 1, 0, Ecx, 1),
    ("ssse3", 1, 0, Ecx, 9),
    ("fma", 1, 0, Ecx, 12),
    ("cx16", 1, 0, Ecx, 13),
    ("pcid", 1, 0, Ecx, 17),
    ("sse4_1", 1, 0, Ecx, 19),
    ("sse4_2", 1, 0, Ecx, 20),
    ("x2apic", 1, 0, Ecx, 21),
    ("movbe", 1, 0, Ecx, 22),
    ("popcnt", 1, 0, Ecx, 23),
    ("tsc_deadline_timer", 1, 0, Ecx, 24),
    ("aes", 1, 0, Ecx, 25),
    ("xsave", 1, 0, Ecx, 26),
    ("avx", 1, 0, Ecx, 28),
    ("f16c", 1, 0, Ecx, 29),
    ("rdrand", 1, 0, Ecx, 30),
    ("mce", 1, 0, Edx, 7),
    ("mtrr", 1, 0, Edx, 12),
    ("pat", 1, 0, Edx, 16),
    ("pse36", 1, 0, Edx, 17),
    ("clflush", 1, 0, Edx, 19),
    ("mmx", 1, 0, Edx, 23),
    ("sse", 1, 0, Edx, 25),
    ("sse2", 1, 0, Edx, 26),
    ("ht", 1, 0, Edx, 28),
    ("fsgsbase", 7, 0, Ebx, 0),
    ("bmi1", 7, 0, Ebx, 3),
    ("hle", 7, 0, Ebx, 4),
    ("avx2", 7, 0, Ebx, 5),
    ("smep", 7, 0, Ebx, 7),
    ("bmi2", 7, 0, Ebx, 8),
    ("erms", 7, 0, Ebx, 9),
    ("invpcid", 7, 0, Ebx, 10),
    ("rtm", 7, 0, Ebx, 11),
    ("mpx", 7, 0, Ebx, 14),
    ("avx512f", 7, 0, Ebx, 16),
    ("avx512dq", 7, 0, Ebx, 17),
    ("rdseed", 7, 0, Ebx, 18),
    ("adx", 7, 0, Ebx, 19),
    ("smap", 7, 0, Ebx, 20),
    ("avx512ifma", 7, 0, Ebx, 21),
    ("clflushopt", 7, 0, Ebx, 23),
    ("clwb", 7, 0, Ebx, 24),
    ("avx512cd", 7, 0, Ebx, 28),
    ("sha_ni", 7, 0, Ebx, 29),
    ("avx512bw", 7, 0, Ebx, 30),
    ("avx512vl", 7, 0, Ebx, 31),
    ("avx512vbmi", 7, 0, Ecx, 1),
    ("umip", 7, 0, Ecx, 2),
    ("pku", 7, 0, Ecx, 3),
    ("waitpkg", 7, 0, Ecx, 5),
    ("avx512_vbmi2", 7, 0, Ecx, 6),
    ("gfni", 7, 0, Ecx, 8),
    ("vaes", 7, 0, Ecx, 9),
    ("vpclmulqdq", 7, 0, Ecx, 10),
    ("avx512_vnni", 7, 0, Ecx, 11),
    ("avx512_bitalg", 7, 0, Ecx, 12),
    ("avx512_vpopcntdq", 7, 0, Ecx, 14),
    ("la57", 7, 0, Ecx, 16),
    ("rdpid", 7, 0, Ecx, 22),
    ("xsaveopt", 0xd, 1, Reg::Eax, 0),
    ("xsavec", 0xd, 1, Reg::Eax, 1),
    ("xgetbv1", 0xd, 1, Reg::Eax, 2),
    ("xsaves", 0xd, 1, Reg::Eax, 3),
    ("lahf_lm", 0x8000_0001, 0, Ecx, 0),
    ("abm", 0x8000_0001, 0, Ecx, 5),
    ("sse4a", 0x8000_0001, 0, Ecx, 6),
    ("3dnowprefetch", 0x8000_0001, 0, Ecx, 8),
    ("nx", 0x8000_0001, 0, Edx, 20),
    ("pdpe1gb", 0x8000_0001, 0, Edx, 26),
    ("rdtscp", 0x8000_0001, 0, Edx, 27),
];

/// Looks a feature name up (case-insensitive; `-` and `.` read as `_`).
pub fn parse_feature(name: &str) -> Result<FeatureBit, CpuidError> {
    let normalized = name.trim().to_ascii_lowercase().replace(['-', '.'], "_");
    FEATURES
        .iter()
        .find(|f| f.0 == normalized)
        .map(|&(_, leaf, subleaf, reg, bit)| FeatureBit {
            leaf,
            subleaf,
            reg,
            bit,
        })
        .ok_or_else(|| CpuidError::UnknownFeature {
            name: name.to_string(),
            known: FEATURES.iter().map(|f| f.0).collect::<Vec<_>>().join(", "),
        })
}

fn reg_mut(entry: &mut kvm_cpuid_entry2, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Eax => &mut entry.eax,
        Reg::Ebx => &mut entry.ebx,
        Reg::Ecx => &mut entry.ecx,
        Reg::Edx => &mut entry.edx,
    }
}

/// Clears the masked feature bits.
pub fn apply_mask(entries: &mut [kvm_cpuid_entry2], mask: &[FeatureBit]) {
    for f in mask {
        for e in entries
            .iter_mut()
            .filter(|e| e.function == f.leaf && e.index == f.subleaf)
        {
            *reg_mut(e, f.reg) &= !(1u32 << f.bit);
        }
    }
}

/// The named features ([`parse_feature`]'s names, which are the config's
/// `cpuid-mask` names) that `entries` have: given KVM's supported CPUID, what a guest of
/// this host can be given (as the host reports it for migrations); given a vCPU's
/// CPUID, what its guest saw.
pub fn offered_features(entries: &[kvm_cpuid_entry2]) -> Vec<&'static str> {
    FEATURES
        .iter()
        .filter(|&&(_, leaf, subleaf, reg, bit)| {
            entries.iter().any(|e| {
                let value = match reg {
                    Reg::Eax => e.eax,
                    Reg::Ebx => e.ebx,
                    Reg::Ecx => e.ecx,
                    Reg::Edx => e.edx,
                };
                e.function == leaf && e.index == subleaf && value & (1u32 << bit) != 0
            })
        })
        .map(|f| f.0)
        .collect()
}

/// The features (by name) a guest saw in `saved` that `here` lacks: what a restore on
/// this host would take away from a running guest.
pub fn missing_features(
    saved: &[kvm_cpuid_entry2],
    here: &[kvm_cpuid_entry2],
) -> Vec<&'static str> {
    let offered = offered_features(here);
    offered_features(saved)
        .into_iter()
        .filter(|f| !offered.contains(f))
        .collect()
}

/// Number of bits needed to hold `n - 1` (the APIC-id shift for `n` items).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Fixes up the topology leaves for vCPU `apic_id` of `cpus` (one thread per core,
/// all cores in one socket) and sets the hypervisor bit.
pub fn fix_topology(entries: &mut [kvm_cpuid_entry2], apic_id: u32, cpus: u32) {
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                // EBX: [31:24] initial APIC id, [23:16] logical processors per package,
                // [15:8] CLFLUSH line size in quadwords.
                e.ebx = (apic_id << 24) | ((cpus & 0xff) << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if cpus > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 => {
                // Deterministic cache parameters: [31:26] cores per package - 1,
                // [25:14] logical processors sharing this cache - 1 (L3: all of them).
                if e.eax & 0x1f == 0 {
                    continue;
                }
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 {
                    cpus.saturating_sub(1)
                } else {
                    0
                };
                e.eax = (e.eax & 0x3fff)
                    | ((sharing & 0xfff) << 14)
                    | ((cpus.saturating_sub(1) & 0x3f) << 26);
            }
            0xb | 0x1f => {
                e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0; // threads per core: 1, no shift
                        e.ebx = 1;
                        e.ecx = (LEVEL_TYPE_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = bits_for(cpus);
                        e.ebx = cpus;
                        e.ecx = (LEVEL_TYPE_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The hypervisor leaf base: highest hypervisor leaf in EAX, "KVMKVMKVM\0\0\0" after.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;

fn hypervisor_leaf() -> kvm_cpuid_entry2 {
    let sig = *b"KVMKVMKVM\0\0\0";
    let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    kvm_cpuid_entry2 {
        function: HYPERVISOR_LEAF,
        eax: HYPERVISOR_LEAF + 1,
        ebx: word(0),
        ecx: word(4),
        edx: word(8),
        ..Default::default()
    }
}

/// Subleaves of the topology leaves 0xB and 0x1F that [`fix_topology`] fills: the
/// SMT level, the core level and the terminating invalid level.
const TOPOLOGY_SUBLEAVES: u32 = 3;

/// KVM may list only subleaf 0 of leaves 0xB and 0x1F (it does here): without the core
/// level (subleaf 1) Linux sees one thread per package and no cores. Adds the missing
/// subleaves of each of the two leaves KVM lists, for [`fix_topology`] to fill.
fn add_topology_subleaves(cpuid: &mut CpuId) -> Result<(), CpuidError> {
    for leaf in [0xb, 0x1f] {
        if !cpuid.as_slice().iter().any(|e| e.function == leaf) {
            continue;
        }
        for index in 0..TOPOLOGY_SUBLEAVES {
            let present = cpuid
                .as_slice()
                .iter()
                .any(|e| e.function == leaf && e.index == index);
            if !present {
                cpuid
                    .push(kvm_cpuid_entry2 {
                        function: leaf,
                        index,
                        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                        ..Default::default()
                    })
                    .map_err(|_| CpuidError::TableFull { leaf })?;
            }
        }
    }
    Ok(())
}

/// The CPUID of vCPU `apic_id` of `cpus`: KVM's supported CPUID, fixed up, masked.
pub fn vcpu_cpuid(
    supported: &CpuId,
    apic_id: u32,
    cpus: u32,
    mask: &[FeatureBit],
) -> Result<CpuId, CpuidError> {
    let mut cpuid = supported.clone();
    add_topology_subleaves(&mut cpuid)?;
    fix_topology(cpuid.as_mut_slice(), apic_id, cpus);
    if let Some(e) = cpuid
        .as_mut_slice()
        .iter_mut()
        .find(|e| e.function == HYPERVISOR_LEAF)
    {
        let leaf = hypervisor_leaf();
        (e.ebx, e.ecx, e.edx) = (leaf.ebx, leaf.ecx, leaf.edx);
    } else {
        cpuid
            .push(hypervisor_leaf())
            .map_err(|_| CpuidError::TableFull {
                leaf: HYPERVISOR_LEAF,
            })?;
    }
    apply_mask(cpuid.as_mut_slice(), mask);
    Ok(cpuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_features_are_those_saved_and_not_offered_here() {
        let mut saved = entry(1, 0);
        saved.ecx = (1 << 28) | (1 << 20); // avx, sse4_2
        let mut here = entry(1, 0);
        here.ecx = 1 << 20;
        assert_eq!(missing_features(&[saved], &[here]), vec!["avx"]);
        assert!(missing_features(&[here], &[saved]).is_empty());
        assert_eq!(missing_features(&[saved], &[]), vec!["sse4_2", "avx"]);
    }

    #[test]
    fn the_config_knows_exactly_the_features_the_engine_can_mask() {
        let engine: Vec<&str> = FEATURES.iter().map(|f| f.0).collect();
        assert_eq!(engine, vmctl_schema::cpu::FEATURES);
    }

    #[test]
    fn offered_features_are_the_named_bits_kvm_supports() {
        let mut leaf1 = entry(1, 0);
        leaf1.ecx = 1 << 28; // avx
        let mut leaf7 = entry(7, 0);
        leaf7.ebx = 1 << 5; // avx2
        let mut leaf7_1 = entry(7, 1);
        leaf7_1.ebx = 1 << 16; // not avx512f: another subleaf
        assert_eq!(offered_features(&[leaf1, leaf7, leaf7_1]), ["avx", "avx2"]);
    }

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_gets_apic_id_and_hypervisor_bit() {
        let mut e = [entry(1, 0)];
        e[0].ebx = 0xff00_0000;
        e[0].edx = LEAF1_EDX_HTT;
        fix_topology(&mut e, 1, 2);
        assert_eq!(e[0].ebx >> 24, 1);
        assert_eq!((e[0].ebx >> 16) & 0xff, 2);
        assert_ne!(e[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & LEAF1_EDX_HTT, 0);
        fix_topology(&mut e, 0, 1);
        assert_eq!(e[0].ebx >> 24, 0);
        assert_eq!(e[0].edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn extended_topology_describes_cores() {
        let mut e = [entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        fix_topology(&mut e, 3, 4);
        assert_eq!((e[0].eax, e[0].ebx, e[0].ecx >> 8, e[0].edx), (0, 1, 1, 3));
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx >> 8, e[1].edx), (2, 4, 2, 3));
        assert_eq!((e[2].ebx, e[2].ecx, e[2].edx), (0, 2, 3));
        assert_eq!(
            (bits_for(1), bits_for(2), bits_for(3), bits_for(5)),
            (0, 1, 2, 3)
        );
    }

    #[test]
    fn cache_leaf_counts_cores() {
        let mut e = [entry(4, 0), entry(4, 3), entry(4, 4)];
        e[0].eax = (1 << 5) | 1; // L1 data
        e[1].eax = (3 << 5) | 3; // L3 unified
        fix_topology(&mut e, 0, 4);
        assert_eq!(e[0].eax >> 26, 3);
        assert_eq!((e[0].eax >> 14) & 0xfff, 0);
        assert_eq!((e[1].eax >> 14) & 0xfff, 3);
        assert_eq!(e[2].eax, 0, "the terminating null leaf is left alone");
    }

    #[test]
    fn mask_clears_named_bits() {
        let mut e = [entry(1, 0), entry(7, 0), entry(7, 1)];
        for x in e.iter_mut() {
            (x.ebx, x.ecx) = (u32::MAX, u32::MAX);
        }
        let mask = [
            parse_feature("sse4_2").unwrap(),
            parse_feature("AVX2").unwrap(),
        ];
        apply_mask(&mut e, &mask);
        assert_eq!(e[0].ecx, !(1 << 20));
        assert_eq!(e[1].ebx, !(1 << 5));
        assert_eq!(e[2].ebx, u32::MAX, "other subleaves untouched");
        assert_eq!(parse_feature("sse4-1").unwrap().bit, 19);
        let err = parse_feature("warp_drive").unwrap_err().to_string();
        assert!(err.contains("warp_drive") && err.contains("xsave"), "{err}");
    }

    #[test]
    fn missing_topology_subleaves_are_added_and_filled() {
        // KVM here lists only subleaf 0 of 0xB and 0x1F.
        let supported = CpuId::from_entries(&[entry(0xb, 0), entry(0x1f, 0)]).unwrap();
        let c = vcpu_cpuid(&supported, 2, 4, &[]).unwrap();
        for leaf in [0xb, 0x1f] {
            let core = c
                .as_slice()
                .iter()
                .find(|e| e.function == leaf && e.index == 1)
                .expect("core level added");
            assert_eq!((core.ebx, core.ecx >> 8, core.eax, core.edx), (4, 2, 2, 2));
            let end = c
                .as_slice()
                .iter()
                .find(|e| e.function == leaf && e.index == 2)
                .expect("terminating level added");
            assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
        }
        // A leaf KVM does not list is not invented.
        let c = vcpu_cpuid(&CpuId::from_entries(&[entry(0xb, 0)]).unwrap(), 0, 2, &[]).unwrap();
        assert!(!c.as_slice().iter().any(|e| e.function == 0x1f));
    }

    #[test]
    fn hypervisor_signature() {
        let l = hypervisor_leaf();
        let mut sig = Vec::new();
        for r in [l.ebx, l.ecx, l.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig[..9], b"KVMKVMKVM");
    }

    #[test]
    fn vcpu_cpuid_adds_missing_hypervisor_leaf() {
        let supported = CpuId::from_entries(&[entry(0, 0), entry(1, 0)]).unwrap();
        let mask = [parse_feature("xsave").unwrap()];
        let c = vcpu_cpuid(&supported, 1, 2, &mask).unwrap();
        let e = c.as_slice();
        assert!(e.iter().any(|e| e.function == HYPERVISOR_LEAF));
        assert_eq!(e[1].ebx >> 24, 1);
    }
}
