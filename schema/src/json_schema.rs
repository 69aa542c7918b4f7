//! The JSON Schema of the validated model, for editors and CI linters.

use crate::model::Config;

/// The JSON Schema (draft 2020-12) of [`Config`].
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_describes_the_config() {
        let schema = json_schema();
        assert_eq!(schema["title"], "Config");
        assert!(schema["properties"]["vms"].is_object());
        assert!(schema["$defs"]["Vm"]["properties"]["depends-on"].is_object());
    }
}
