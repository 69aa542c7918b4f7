//! Loading the config for a command: its warnings (a template no vm uses) printed on
//! stderr as diagnostics, its errors returned as the command's error.

use std::path::Path;

use vmctl_schema::Loaded;

use crate::error::CommandError;
use crate::render::Style;

/// Loads the config at `path`, printing its warnings.
pub fn load(path: &Path, style: &Style) -> Result<Loaded, CommandError> {
    let loaded = vmctl_schema::load(path)?;
    warn(&loaded, style);
    Ok(loaded)
}

/// Prints the warnings of a loaded config.
pub fn warn(loaded: &Loaded, style: &Style) {
    for warning in &loaded.warnings {
        eprint!("{}", style.diagnostic(warning));
        eprintln!();
    }
}
