//! First-run set-up of credentials: the API key `agora dev` prints and writes to `DATA_DIR/api-key`.

use std::{io::Write, path::Path};

use anyhow::Context;

use crate::{ids, store::Store};

/// Makes sure `tenant` exists and holds the key stored in `key_file`, creating a new key (and the
/// file, readable by its owner only) when the file does not exist. Returns the key.
pub async fn ensure_api_key(
    store: &Store,
    tenant: &str,
    key_file: &Path,
) -> anyhow::Result<String> {
    let key = match std::fs::read_to_string(key_file) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
        Ok(_) => anyhow::bail!(
            "{} is empty; delete it to get a new key",
            key_file.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ids::secret("agora_");
            write_private(key_file, &key)
                .with_context(|| format!("writing {}", key_file.display()))?;
            key
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", key_file.display())),
    };
    let tenant_id = store.ensure_tenant(tenant).await?;
    store.add_api_key(&tenant_id, &key).await?;
    Ok(key)
}

fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{secret}")
}
