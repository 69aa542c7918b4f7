//! Attribute values as people read them: sizes in binary units, strings quoted, lists
//! and NICs compact.

use serde_json::Value;

/// Attributes whose numbers are bytes.
fn is_bytes(attr: &str) -> bool {
    matches!(attr, "memory" | "size")
}

/// `536870912` → `512MiB`: the largest binary unit that divides the size exactly.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, factor) in UNITS {
        if bytes >= factor && bytes & (factor - 1) == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// One value on one line.
pub fn format_value(attr: &str, value: &Value) -> String {
    match value {
        Value::Number(n) if is_bytes(attr) => match n.as_u64() {
            Some(bytes) => format!("{:?}", format_bytes(bytes)),
            None => n.to_string(),
        },
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|v| format_value("", v)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            // Who chose a NIC's address is for the plan's NIC blocks, not a value.
            let fields: Vec<String> = map
                .iter()
                .filter(|(k, _)| k.as_str() != "ip-allocated")
                .map(|(k, v)| format!("{k} = {}", format_value(k, v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

/// The elements of a list, each on its own line; `None` when the value is no list.
pub fn list_lines(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => Some(items.iter().map(|v| format_value("", v)).collect()),
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values() {
        let table = [
            ("memory", json!(536870912u64), r#""512MiB""#),
            ("size", json!(4u64 << 30), r#""4GiB""#),
            ("size", json!(1000), r#""1000B""#),
            ("cpus", json!(2), "2"),
            ("cmdline", json!("a b"), r#""a b""#),
            ("initrd", json!(null), "null"),
            ("disks", json!(["a", "b"]), r#"["a", "b"]"#),
            (
                "nics",
                json!([{"vlan": "front", "mac": "52:54:00:00:00:01"}]),
                r#"[{ mac = "52:54:00:00:00:01", vlan = "front" }]"#,
            ),
        ];
        for (attr, value, shown) in table {
            assert_eq!(format_value(attr, &value), shown, "{attr}");
        }
    }
}
