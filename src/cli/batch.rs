//! `drover job-script` and `drover sites`.

use std::path::Path;

use anyhow::anyhow;

use super::{Failure, drover_home, input, load_site};
use crate::batch::runner::worker_command;
use crate::batch::{JobRequest, render, system_for};
use crate::config::site::{BUNDLED, Site};
use crate::server;

/// Print exactly what would be submitted on stdout (paths, never the token); how it is
/// submitted goes to stderr.
pub fn job_script(site: &str, workers: Option<u32>, dir: &Path) -> Result<(), Failure> {
    let name = site;
    let site = load_site(site)?;
    for p in site.placeholders() {
        eprintln!("warning: site {name}: {p} is a placeholder; set your own value in a copy of the site file before submitting");
    }
    let sys = system_for(&site).map_err(input)?;
    let wpj = site.workers_per_job();
    let jobs = workers.unwrap_or(wpj).div_ceil(wpj).max(1);
    let exe = std::env::current_exe().map_err(|e| input(anyhow!("cannot locate the drover executable: {e}")))?;
    let access = server::access_path(dir);
    let log_dir = site.log_dir.clone().unwrap_or_else(|| dir.join("logs"));
    let req = JobRequest {
        worker_command: worker_command(&exe, &access, &site),
        array_size: if site.array { jobs } else { 0 },
        script_stem: log_dir.join(format!("{}-1", site.job_name)),
        log_dir,
    };
    let rendered = render(sys.as_ref(), &site, &req).map_err(input)?;
    let submit = sys.submit(&site, Path::new(&format!("{}{}", req.script_stem.display(), sys.script_suffix())));
    let how = if submit.stdin {
        format!("{} < SCRIPT", submit.argv.join(" "))
    } else {
        submit.argv.join(" ")
    };
    if site.array {
        eprintln!("# one array job of {jobs} elements, {wpj} worker(s) each; when a server submits it, it saves it first and runs: {how}");
    } else {
        eprintln!("# {jobs} job(s) like this, {wpj} worker(s) each; when a server submits it, it saves it first and runs: {how}");
    }
    print!("{}", rendered.main);
    for (suffix, text) in rendered.extra {
        println!("\n# ---- {}{suffix}", req.script_stem.display());
        print!("{text}");
    }
    Ok(())
}

pub fn sites() -> Result<(), Failure> {
    println!(
        "{:<12} {:<9} {:>6} {:>10} {:>9} {:>9}  source",
        "name", "system", "cores", "memory", "processes", "walltime"
    );
    for (name, text) in BUNDLED {
        let s = Site::parse(name, name, text).map_err(input)?;
        let mem = s
            .memory
            .map_or("-".into(), |m| format!("{:.0} GiB", m.0 as f64 / (1u64 << 30) as f64));
        let wall = s.walltime.map_or("-".into(), |w| w.hms());
        let first = text.lines().next().unwrap_or("").trim_start_matches('#').trim();
        let note = shorten_at_words(first, note_width());
        println!(
            "{name:<12} {:<9} {:>6} {mem:>10} {:>9} {wall:>9}  {note}",
            s.scheduler.name(),
            s.cores,
            s.processes
        );
    }
    println!(
        "\nUse one with --site NAME, or copy it from site-configs/ and pass --site FILE. Home: {}",
        drover_home().display()
    );
    Ok(())
}

/// Room for the description column of `drover sites`: the terminal's width (`COLUMNS`,
/// else 120) less the columns before it.
fn note_width() -> usize {
    let cols = std::env::var("COLUMNS").ok().and_then(|c| c.parse::<usize>().ok()).unwrap_or(120);
    cols.saturating_sub(64).max(24)
}

/// `text` cut to at most `width` characters at a word boundary, with "..." when cut.
fn shorten_at_words(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out = String::new();
    for word in text.split_whitespace() {
        let len = out.chars().count() + usize::from(!out.is_empty()) + word.chars().count();
        if len + 3 > width {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::shorten_at_words;

    #[test]
    fn descriptions_are_shortened_between_words() {
        let t = "Workers as plain processes on this machine (the embedded local cluster)";
        assert_eq!(shorten_at_words(t, 100), t);
        let s = shorten_at_words(t, 40);
        assert_eq!(s, "Workers as plain processes on this...");
        assert!(s.chars().count() <= 40);
        assert!(t.starts_with(s.trim_end_matches("...")));
    }
}
