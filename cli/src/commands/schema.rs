//! `vmctl schema`: print the JSON Schema of the config model.

use crate::error::CommandError;

/// Print the JSON Schema of the validated config model (what `validate` builds from
/// the KDL files), for editors and CI linters.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  vmctl schema > vmctl.schema.json")]
pub struct Args {}

pub fn run(_args: &Args) -> Result<(), CommandError> {
    let schema = vmctl_schema::json_schema();
    let text = serde_json::to_string_pretty(&schema)
        .map_err(|e| CommandError::failed(format!("cannot render the schema: {e}")))?;
    println!("{text}");
    Ok(())
}
