//! Writes the generated CRD manifests: `crdgen` writes `crds/computejob.yaml` and
//! `crds/gpunode.yaml` (or into the directory given as the first argument); `crdgen --print`
//! writes both to stdout as one multi-document stream.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = env::args().nth(1);
    if arg.as_deref() == Some("--print") {
        print!("{}", crds::manifests::all_yaml()?);
        return Ok(());
    }
    let dir = arg.map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    for (file, yaml) in crds::manifests::files()? {
        let path = dir.join(file);
        fs::write(&path, yaml)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
