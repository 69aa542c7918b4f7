//! Sizes in binary units (`512MiB`, `4GiB`, `4G` = GiB), percentages (`8%`) and MAC
//! addresses: one parser each, with one set of rules, for the config and for the VMM's
//! spec (`vmctl vmm run`), which calls these.

/// Why a size string was refused; the caller turns it into a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeError {
    /// Not a number followed by a unit.
    Syntax,
    /// A decimal unit (`MB`, `GB`) where vmctl wants binary ones.
    DecimalUnit { suggestion: String },
    /// More than `u64::MAX` bytes.
    TooLarge,
}

const UNITS: &[(&str, u32)] = &[
    ("", 0),
    ("b", 0),
    ("k", 10),
    ("kib", 10),
    ("m", 20),
    ("mib", 20),
    ("g", 30),
    ("gib", 30),
    ("t", 40),
    ("tib", 40),
    ("p", 50),
    ("pib", 50),
];

/// Parses `512MiB`, `4GiB`, `4G`, `4096` (bytes) into bytes. Units are binary and
/// case-insensitive; decimal units (`MB`) are refused with a suggestion.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(SizeError::Syntax);
    }
    let (number, unit) = text.split_at(digits);
    let unit_lower = unit.trim_start().to_ascii_lowercase();
    let Some(&(_, shift)) = UNITS.iter().find(|(u, _)| *u == unit_lower) else {
        if let Some(prefix) = unit_lower.strip_suffix('b') {
            if let Some(&(_, _)) = UNITS.iter().find(|(u, _)| *u == prefix && !u.is_empty()) {
                return Err(SizeError::DecimalUnit {
                    suggestion: format!("{number}{}iB", prefix.to_ascii_uppercase()),
                });
            }
        }
        return Err(SizeError::Syntax);
    };
    let value: u64 = number.parse().map_err(|_| SizeError::TooLarge)?;
    value.checked_mul(1u64 << shift).ok_or(SizeError::TooLarge)
}

/// Renders bytes in the largest binary unit that divides them exactly.
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [
        ("PiB", 50),
        ("TiB", 40),
        ("GiB", 30),
        ("MiB", 20),
        ("KiB", 10),
    ] {
        let scale = 1u64 << shift;
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

/// Parses `8%` into `0.08`. Values must be in `0%..100%`.
/// A short duration in whole milliseconds: `"50ms"`, `"2s"`, `"1.5s"`. `None` when it is
/// not one.
pub fn parse_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    let number = number.trim();
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let millis = value * scale;
    (millis.is_finite() && millis.fract() == 0.0 && millis <= u64::MAX as f64)
        .then_some(millis as u64)
}

pub fn parse_percent(text: &str) -> Option<f64> {
    let number = text.trim().strip_suffix('%')?.trim();
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && (0.0..100.0).contains(&value)).then_some(value / 100.0)
}

/// Parses a MAC address, six hex bytes separated by colons (`52:54:00:AB:cd:ef`, any
/// case), into bytes. Whether it is unicast is the caller's check.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:ef"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
        );
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:ef:01"), None);
        assert_eq!(parse_mac("52-54-00-ab-cd-ef"), None);
        assert_eq!(parse_mac("5:54:00:ab:cd:eff"), None);
        // `from_str_radix` alone takes a sign.
        assert_eq!(parse_mac("+2:54:00:ab:cd:ef"), None);
    }

    #[test]
    fn parses_binary_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("16 KiB"), Ok(16 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
    }

    #[test]
    fn refuses_bad_sizes() {
        assert_eq!(parse_size(""), Err(SizeError::Syntax));
        assert_eq!(parse_size("GiB"), Err(SizeError::Syntax));
        assert_eq!(parse_size("1.5GiB"), Err(SizeError::Syntax));
        assert_eq!(parse_size("-1GiB"), Err(SizeError::Syntax));
        assert_eq!(parse_size("4 parsecs"), Err(SizeError::Syntax));
        assert_eq!(
            parse_size("4GB"),
            Err(SizeError::DecimalUnit {
                suggestion: "4GiB".into()
            })
        );
        assert_eq!(parse_size("99999999999PiB"), Err(SizeError::TooLarge));
        assert_eq!(
            parse_size("99999999999999999999999999"),
            Err(SizeError::TooLarge)
        );
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(format_size(4 << 30), "4GiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn parses_percentages() {
        assert_eq!(parse_percent("8%"), Some(0.08));
        assert_eq!(parse_percent("0%"), Some(0.0));
        assert_eq!(parse_percent("100%"), None);
        assert_eq!(parse_percent("8"), None);
        assert_eq!(parse_percent("NaN%"), None);
    }

    #[test]
    fn parses_milliseconds() {
        assert_eq!(parse_millis("50ms"), Some(50));
        assert_eq!(parse_millis("2s"), Some(2000));
        assert_eq!(parse_millis("1.5s"), Some(1500));
        assert_eq!(parse_millis("0.5ms"), None);
        assert_eq!(parse_millis("50"), None);
        assert_eq!(parse_millis("-5ms"), None);
        assert_eq!(parse_millis("ms"), None);
    }
}
