//! Output files: checked before any work starts, and written atomically, so that a bad path costs nothing and an
//! interruption never leaves a half-written file.

use std::path::Path;
use vqgrad::Error;

/// Checks, before any work, that `path` can be written: it is not a directory, and its directory exists and takes
/// a new file. `what` names the flag in the error.
pub fn check_writable(path: &Path, what: &str) -> Result<(), Error> {
    if path.is_dir() {
        return Err(Error::Input(format!("{what} {} is a directory, not a file", path.display())));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Error::Input(format!("{what} {}: the directory {} does not exist", path.display(), dir.display())));
    }
    let probe = dir.join(format!(".vqgrad-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::Input(format!("{what} {}: cannot write in {}: {e}", path.display(), dir.display()))),
    }
}

/// Creates the output directory `dir` (and its parents), as bad input when that fails. `what` names the flag.
pub fn ensure_dir(dir: &Path, what: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Input(format!("{what} {}: cannot create it: {e}", dir.display())))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Input(format!("writing {}: {e}", path.display())).into());
    }
    Ok(())
}
