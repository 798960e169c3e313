//! Writes the seed inputs of every fuzz target under `fuzz/corpus/<target>/seed-*`:
//! `cargo run -p cairn-fuzz --example seeds [VECTORS_DIR ...]` (default: the published
//! vectors and field cases in `../shared`).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        dirs = vec![root.join("../../shared/vectors/fhir"), root.join("../../shared/field-cases")];
    }
    let mut written = 0;
    let mut seen = std::collections::HashSet::new();
    for dir in &dirs {
        for (target, name, bytes) in cairn_fuzz::seeds(dir) {
            if !seen.insert((target, name.clone())) {
                continue;
            }
            let out = root.join("corpus").join(target);
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join(format!("seed-{name}")), bytes)?;
            written += 1;
        }
    }
    eprintln!("wrote {written} seeds under {}", root.join("corpus").display());
    Ok(())
}
