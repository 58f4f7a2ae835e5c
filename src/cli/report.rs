//! Report files: `drover run --report FILE` and `drover report JOB`.

use std::path::{Path, PathBuf};

use anyhow::anyhow;

use super::{Failure, input, runtime};

/// Refuse a report path whose folder does not exist (before anything runs).
pub fn check_path(flag: &str, path: &Path) -> Result<(), Failure> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if dir.is_dir() {
        return Ok(());
    }
    Err(input(anyhow!(
        "{flag} \"{}\": the folder \"{}\" does not exist; create it or choose another path",
        path.display(),
        dir.display()
    )))
}

/// Write a report whole or not at all (a temporary file renamed into place).
pub fn write(flag: &str, path: &Path, html: &str) -> Result<(), Failure> {
    let tmp = path.with_extension("html.drover-tmp");
    std::fs::write(&tmp, html).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        runtime(anyhow!("{flag} \"{}\": cannot write it: {e}", path.display()))
    })?;
    eprintln!("drover: report written to {}", path.display());
    Ok(())
}

/// `drover report JOB`: the report of a job of a running server.
pub fn report(dir: &Path, job: u64, output: Option<PathBuf>) -> Result<(), Failure> {
    let path = output.unwrap_or_else(|| PathBuf::from(format!("drover-report-{job}.html")));
    check_path("--output", &path)?;
    let html = super::tasks::ask(dir, async |s| s.report(job).await)?;
    write("--output", &path, &html)
}
