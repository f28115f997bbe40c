//! The one interface-name rule (`config/name.rs`): wg-quick's, for names
//! given on the command line and names derived from a config path.

use std::path::Path;

use super::{ConfigError, ConfigErrorKind};
/// Checks an interface name like wg-quick: `^[a-zA-Z0-9_=+.-]{1,15}$`.
pub fn validate_interface_name(name: &str) -> Result<(), ConfigErrorKind> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigErrorKind::InterfaceName(name.to_owned()))
    }
}

/// The interface name wg-quick derives from a config path: the file name
/// without its `.conf` extension (`/etc/wireguard/wg0.conf` → `wg0`).
pub fn interface_name_from_path(path: &Path) -> Result<String, ConfigError> {
    let err = |kind| ConfigError {
        file: path.display().to_string(),
        line: None,
        kind,
    };
    let file_name = path
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or_else(|| err(ConfigErrorKind::InterfaceName(path.display().to_string())))?;
    let stem = file_name.strip_suffix(".conf").unwrap_or_else(|| {
        path.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(file_name)
    });
    validate_interface_name(stem).map_err(err)?;
    Ok(stem.to_owned())
}
