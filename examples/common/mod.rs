//! What the benchmarks under `examples/` share.

use std::path::Path;

/// The `[daemon]` section of an in-process benchmark's `csmd.toml`: the
/// store in `data_dir`, an ephemeral port, an empty customers folder under
/// `dir`, the shipped connector profiles and quiet logs.
pub fn daemon_section(dir: &Path, data_dir: &Path) -> anyhow::Result<String> {
    let customers = dir.join("customers");
    std::fs::create_dir_all(&customers)?;
    let connectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
    Ok(format!(
        r#"
[daemon]
data_dir = {data_dir:?}
listen = "127.0.0.1:0"
customers_dir = {customers:?}
connector_dirs = [{connectors:?}]
log_level = "warn"
"#
    ))
}
