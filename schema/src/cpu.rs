//! The CPU features a config may name (a host's `cpuid-mask`): the names of the CPUID
//! feature bits the engine can hide from a guest, as Linux's `/proc/cpuinfo` spells
//! them. The engine's table (`runtime::vmm::arch::x86_64::cpuid`) gives each its leaf,
//! register and bit; a runtime test keeps the two lists the same.

/// Every feature name, in the engine's table order.
pub const FEATURES: &[&str] = &[
    "sse3",
    "pclmulqdq",
    "ssse3",
    "fma",
    "cx16",
    "pcid",
    "sse4_1",
    "sse4_2",
    "x2apic",
    "movbe",
    "popcnt",
    "tsc_deadline_timer",
    "aes",
    "xsave",
    "avx",
    "f16c",
    "rdrand",
    "mce",
    "mtrr",
    "pat",
    "pse36",
    "clflush",
    "mmx",
    "sse",
    "sse2",
    "ht",
    "fsgsbase",
    "bmi1",
    "hle",
    "avx2",
    "smep",
    "bmi2",
    "erms",
    "invpcid",
    "rtm",
    "mpx",
    "avx512f",
    "avx512dq",
    "rdseed",
    "adx",
    "smap",
    "avx512ifma",
    "clflushopt",
    "clwb",
    "avx512cd",
    "sha_ni",
    "avx512bw",
    "avx512vl",
    "avx512vbmi",
    "umip",
    "pku",
    "waitpkg",
    "avx512_vbmi2",
    "gfni",
    "vaes",
    "vpclmulqdq",
    "avx512_vnni",
    "avx512_bitalg",
    "avx512_vpopcntdq",
    "la57",
    "rdpid",
    "xsaveopt",
    "xsavec",
    "xgetbv1",
    "xsaves",
    "lahf_lm",
    "abm",
    "sse4a",
    "3dnowprefetch",
    "nx",
    "pdpe1gb",
    "rdtscp",
];

/// A feature name as the tables spell it: lower case, `-` and `.` read as `_`.
pub fn normalize(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['-', '.'], "_")
}

/// Whether `name` (in any spelling [`normalize`] accepts) is a known feature.
pub fn is_feature(name: &str) -> bool {
    FEATURES.contains(&normalize(name).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_known_in_any_spelling() {
        assert!(is_feature("avx512f"));
        assert!(is_feature("AVX512F"));
        assert!(is_feature("sse4.2"));
        assert!(is_feature("avx512-vnni"));
        assert!(!is_feature("avx1024"));
    }
}
