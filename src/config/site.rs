//! Site files: how to get workers from a batch system.
//!
//! ```toml
//! scheduler = "slurm"        # slurm | pbs | sge | lsf | htcondor | local
//! queue = "debug"
//! account = "m1234"
//! cores = 32                 # per job
//! memory = "64 GiB"          # per job
//! processes = 4              # workers per job (each with cores/processes threads)
//! nodes = 1
//! walltime = "01:00:00"      # HH:MM:SS or D-HH:MM:SS
//! interface = "hsn0"         # address the workers dial
//! shared_fs = true            # workers write output chunks through the shared file system
//! transport = "tcp"           # auto (default) | quic | tcp: how workers dial the server (auto: its Unix socket on its host)
//! ```
//!
//! Validated once, at load: unknown keys (with a suggestion), units, ranges.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{did_you_mean, toml_error_line};

/// A bad site file.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("cannot read site file \"{path}\": {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid site file {0}")]
    Toml(String),
    #[error("{path}: unknown key \"{key}\"{hint}; known keys: {known}")]
    UnknownKey {
        path: String,
        key: String,
        hint: String,
        known: String,
    },
    #[error("{path}: {key} = {value}: {problem}")]
    BadValue {
        path: String,
        key: &'static str,
        value: String,
        problem: String,
    },
    #[error("no site named \"{name}\"{hint}; `drover sites` lists the bundled ones, or pass a file path")]
    UnknownSite { name: String, hint: String },
}

/// Which batch system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Slurm,
    Pbs,
    Sge,
    Lsf,
    Htcondor,
    Local,
}

impl Scheduler {
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Slurm => "slurm",
            Scheduler::Pbs => "pbs",
            Scheduler::Sge => "sge",
            Scheduler::Lsf => "lsf",
            Scheduler::Htcondor => "htcondor",
            Scheduler::Local => "local",
        }
    }
}

/// PBS variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PbsFlavor {
    /// PBS Pro / OpenPBS: `-l select=`, `-J` arrays.
    #[default]
    Pro,
    /// Torque: `-l nodes=N:ppn=C`, `-t` arrays.
    Torque,
}

/// Bytes, parsed from "64 GiB", "500MB", "2TB", "1048576".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Bytes(pub u64);

impl Bytes {
    pub fn parse(s: &str) -> Result<Bytes, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        if num.is_empty() {
            return Err("expected a number with a unit, like \"64 GiB\" or \"500MB\"".into());
        }
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "m" | "mb" => 1000u64.pow(2),
            "g" | "gb" => 1000u64.pow(3),
            "t" | "tb" => 1000u64.pow(4),
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => {
                return Err(format!("unknown unit \"{unit}\"; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"));
            }
        };
        let v: f64 = num.parse().map_err(|_| format!("\"{num}\" is not a number"))?;
        let bytes = (v * mult as f64).round();
        if bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err("must be at least 1 byte".into());
        }
        Ok(Bytes(bytes as u64))
    }

    /// Whole units of `unit` bytes, rounded up (never below what was asked).
    pub fn ceil_in(self, unit: u64) -> u64 {
        self.0.div_ceil(unit)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// Walltime parsed from "HH:MM:SS" or "D-HH:MM:SS" (also "MM:SS" and plain minutes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Walltime(pub u64);

impl Walltime {
    pub fn parse(s: &str) -> Result<Walltime, String> {
        let t = s.trim();
        let hint = "use HH:MM:SS or D-HH:MM:SS, like \"01:30:00\" or \"2-00:00:00\"";
        let (days, rest) = match t.split_once('-') {
            Some((d, r)) => (d.parse::<u64>().map_err(|_| format!("\"{d}\" is not a number of days; {hint}"))?, r),
            None => (0, t),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let nums: Vec<u64> = parts
            .iter()
            .map(|p| {
                if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
                    None
                } else {
                    p.parse().ok()
                }
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("not a time; {hint}"))?;
        let (h, m, sec) = match nums.as_slice() {
            [h, m, s] => (*h, *m, *s),
            [m, s] if days == 0 => (0, *m, *s),
            [m] if days == 0 => (0, *m, 0),
            _ => return Err(format!("not a time; {hint}")),
        };
        if m >= 60 || sec >= 60 || (days > 0 && h >= 24) {
            return Err(format!("minutes and seconds must be below 60 (hours below 24 with days); {hint}"));
        }
        let total = days
            .checked_mul(86400)
            .zip(h.checked_mul(3600))
            .and_then(|(d, h)| d.checked_add(h)?.checked_add(m * 60 + sec))
            .ok_or_else(|| format!("too long; {hint}"))?;
        if total == 0 {
            return Err("must be longer than zero".into());
        }
        Ok(Walltime(total))
    }

    pub fn seconds(self) -> u64 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// HH:MM:SS with hours possibly above 24 (PBS, SGE).
    pub fn hms(self) -> String {
        format!("{:02}:{:02}:{:02}", self.0 / 3600, self.0 % 3600 / 60, self.0 % 60)
    }

    /// D-HH:MM:SS (SLURM).
    pub fn dhms(self) -> String {
        let d = self.0 / 86400;
        let r = self.0 % 86400;
        if d > 0 {
            format!("{d}-{:02}:{:02}:{:02}", r / 3600, r % 3600 / 60, r % 60)
        } else {
            self.hms()
        }
    }

    /// Whole minutes, rounded up.
    pub fn ceil_minutes(self) -> u64 {
        self.0.div_ceil(60)
    }
}

/// A validated site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub name: String,
    pub scheduler: Scheduler,
    pub queue: Option<String>,
    pub account: Option<String>,
    /// Cores per job (per node for multi-node jobs).
    pub cores: u32,
    /// Memory per job (per node for multi-node jobs).
    pub memory: Option<Bytes>,
    /// Workers per job (per node for multi-node jobs).
    pub processes: u32,
    pub nodes: u32,
    pub walltime: Option<Walltime>,
    pub gpus: u32,
    pub interface: Option<String>,
    pub log_dir: Option<PathBuf>,
    pub job_name: String,
    pub prologue: Vec<String>,
    pub job_extra_directives: Vec<String>,
    pub submit_extra_args: Vec<String>,
    pub array: bool,
    pub template: Option<PathBuf>,
    /// SGE parallel environment for multi-core jobs.
    pub pe: Option<String>,
    /// SGE resource for the per-slot memory request (default h_vmem; some sites use mem).
    pub memory_resource: Option<String>,
    pub pbs_flavor: PbsFlavor,
    /// LSF's LSF_UNIT_FOR_LIMITS (unit of -M): KB (default), MB, GB, TB.
    pub lsf_unit: String,
    /// Seconds a worker keeps trying to reach a lost server before exiting.
    pub death_timeout: u64,
    /// Size the pool from the backlog between these bounds (`adapt = { min, max }`).
    pub adapt: Option<crate::pool::Adapt>,
    /// Workers write output chunks into the output file through the shared file
    /// system (`true`), never (`false`), or when they recognise it (unset: the same
    /// host, Lustre, GPFS, BeeGFS, WekaFS).
    pub shared_fs: Option<bool>,
    /// How workers dial the server: QUIC falling back to TCP (auto), or one of them.
    pub transport: crate::transport::Transport,
}

const KEYS: &[&str] = &[
    "scheduler",
    "queue",
    "account",
    "cores",
    "memory",
    "processes",
    "nodes",
    "walltime",
    "gpus",
    "interface",
    "log_dir",
    "job_name",
    "prologue",
    "job_extra_directives",
    "submit_extra_args",
    "array",
    "template",
    "pe",
    "memory_resource",
    "pbs_flavor",
    "lsf_unit",
    "death_timeout",
    "adapt",
    "shared_fs",
    "transport",
];

#[derive(Deserialize)]
struct RawSite {
    scheduler: Option<String>,
    queue: Option<String>,
    account: Option<String>,
    cores: Option<i64>,
    memory: Option<toml::Value>,
    processes: Option<i64>,
    nodes: Option<i64>,
    walltime: Option<toml::Value>,
    gpus: Option<i64>,
    interface: Option<String>,
    log_dir: Option<PathBuf>,
    job_name: Option<String>,
    prologue: Option<StringOrList>,
    job_extra_directives: Option<Vec<String>>,
    submit_extra_args: Option<Vec<String>>,
    array: Option<bool>,
    template: Option<PathBuf>,
    pe: Option<String>,
    memory_resource: Option<String>,
    pbs_flavor: Option<String>,
    lsf_unit: Option<String>,
    death_timeout: Option<i64>,
    adapt: Option<toml::Value>,
    shared_fs: Option<bool>,
    transport: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// Site files shipped inside the binary (from site-configs/).
pub const BUNDLED: &[(&str, &str)] = &[
    ("local", include_str!("../../site-configs/local.toml")),
    ("slurm", include_str!("../../site-configs/slurm.toml")),
    ("pbs", include_str!("../../site-configs/pbs.toml")),
    ("torque", include_str!("../../site-configs/torque.toml")),
    ("sge", include_str!("../../site-configs/sge.toml")),
    ("lsf", include_str!("../../site-configs/lsf.toml")),
    ("htcondor", include_str!("../../site-configs/htcondor.toml")),
    ("perlmutter", include_str!("../../site-configs/perlmutter.toml")),
    ("frontier", include_str!("../../site-configs/frontier.toml")),
    ("polaris", include_str!("../../site-configs/polaris.toml")),
    ("aurora", include_str!("../../site-configs/aurora.toml")),
    ("archer2", include_str!("../../site-configs/archer2.toml")),
    ("derecho", include_str!("../../site-configs/derecho.toml")),
    ("lumi", include_str!("../../site-configs/lumi.toml")),
    ("lxplus", include_str!("../../site-configs/lxplus.toml")),
    ("myriad", include_str!("../../site-configs/myriad.toml")),
];

impl Site {
    /// Values left as placeholders in a bundled site (`account = "mXXXX"`): `key =
    /// "value"` for each, to be set before anything is submitted.
    pub fn placeholders(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut check = |key: &str, v: &str| {
            if v.contains("XXXX") {
                found.push(format!("{key} = \"{v}\""));
            }
        };
        for (key, v) in [("account", &self.account), ("queue", &self.queue), ("interface", &self.interface)] {
            if let Some(v) = v {
                check(key, v);
            }
        }
        for (key, list) in [
            ("prologue", &self.prologue),
            ("job_extra_directives", &self.job_extra_directives),
            ("submit_extra_args", &self.submit_extra_args),
        ] {
            list.iter().for_each(|v| check(key, v));
        }
        found
    }

    /// A bundled site by name, or a site file by path.
    pub fn resolve(name_or_path: &str) -> Result<Site, SiteError> {
        let as_path = Path::new(name_or_path);
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") || as_path.exists() {
            let text = std::fs::read_to_string(as_path).map_err(|source| SiteError::Read {
                path: as_path.into(),
                source,
            })?;
            let stem = as_path
                .file_stem()
                .map_or_else(|| "site".into(), |s| s.to_string_lossy().into_owned());
            let mut site = Site::parse(&as_path.display().to_string(), &stem, &text)?;
            if let Some(t) = &site.template
                && t.is_relative()
            {
                site.template = Some(as_path.parent().unwrap_or(Path::new(".")).join(t));
            }
            return Ok(site);
        }
        match BUNDLED.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, text)) => Site::parse(&format!("site-configs/{n}.toml"), n, text),
            None => {
                let hint = did_you_mean(name_or_path, BUNDLED.iter().map(|(n, _)| *n))
                    .map(|s| format!(" (did you mean \"{s}\"?)"))
                    .unwrap_or_default();
                Err(SiteError::UnknownSite {
                    name: name_or_path.into(),
                    hint,
                })
            }
        }
    }

    /// Parse and validate site TOML; `origin` names it in messages.
    pub fn parse(origin: &str, name: &str, text: &str) -> Result<Site, SiteError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| SiteError::Toml(toml_error_line(Path::new(origin), text, &e)))?;
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                let hint = did_you_mean(key, KEYS.iter().copied())
                    .map(|s| format!(" (did you mean \"{s}\"?)"))
                    .unwrap_or_default();
                return Err(SiteError::UnknownKey {
                    path: origin.into(),
                    key: key.clone(),
                    hint,
                    known: KEYS.join(", "),
                });
            }
        }
        let raw: RawSite = toml::from_str(text).map_err(|e| SiteError::Toml(toml_error_line(Path::new(origin), text, &e)))?;
        let bad = |key: &'static str, value: String, problem: String| SiteError::BadValue {
            path: origin.into(),
            key,
            value,
            problem,
        };
        let scheduler = match raw.scheduler.as_deref() {
            None => {
                return Err(bad(
                    "scheduler",
                    "(missing)".into(),
                    "say which batch system: slurm, pbs, sge, lsf, htcondor or local".into(),
                ));
            }
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "slurm" => Scheduler::Slurm,
                "pbs" | "pbspro" | "openpbs" => Scheduler::Pbs,
                "torque" => Scheduler::Pbs,
                "sge" | "gridengine" | "uge" => Scheduler::Sge,
                "lsf" => Scheduler::Lsf,
                "htcondor" | "condor" => Scheduler::Htcondor,
                "local" => Scheduler::Local,
                _ => {
                    let hint = did_you_mean(s, ["slurm", "pbs", "sge", "lsf", "htcondor", "local"])
                        .map(|h| format!(" (did you mean \"{h}\"?)"))
                        .unwrap_or_default();
                    return Err(bad(
                        "scheduler",
                        format!("\"{s}\""),
                        format!("unknown batch system{hint}; use slurm, pbs, sge, lsf, htcondor or local"),
                    ));
                }
            },
        };
        let positive = |key: &'static str, v: Option<i64>, default: i64| -> Result<u32, SiteError> {
            let v = v.unwrap_or(default);
            if v < 1 || v > i64::from(u32::MAX) {
                return Err(bad(key, v.to_string(), "must be a whole number of at least 1".into()));
            }
            Ok(v as u32)
        };
        let cores = positive("cores", raw.cores, 1)?;
        let processes = positive("processes", raw.processes, 1)?;
        let nodes = positive("nodes", raw.nodes, 1)?;
        if processes > cores {
            return Err(bad(
                "processes",
                processes.to_string(),
                format!("more worker processes than cores ({cores}) per job; each worker needs at least one core"),
            ));
        }
        let gpus = match raw.gpus {
            None => 0,
            Some(g) if g >= 0 && g <= i64::from(u32::MAX) => g as u32,
            Some(g) => return Err(bad("gpus", g.to_string(), "must be 0 or more".into())),
        };
        let memory = match raw.memory {
            None => None,
            Some(toml::Value::String(s)) => Some(Bytes::parse(&s).map_err(|p| bad("memory", format!("\"{s}\""), p))?),
            Some(toml::Value::Integer(i)) if i > 0 => Some(Bytes(i as u64)),
            Some(v) => return Err(bad("memory", v.to_string(), "use a size with a unit, like \"64 GiB\"".into())),
        };
        let walltime = match raw.walltime {
            None => None,
            Some(toml::Value::String(s)) => Some(Walltime::parse(&s).map_err(|p| bad("walltime", format!("\"{s}\""), p))?),
            Some(v) => return Err(bad("walltime", v.to_string(), "use a string like \"01:00:00\"".into())),
        };
        let pbs_flavor = match (raw.scheduler.as_deref(), raw.pbs_flavor.as_deref()) {
            (Some("torque"), _) | (_, Some("torque")) => PbsFlavor::Torque,
            (_, None) | (_, Some("pro")) | (_, Some("openpbs")) => PbsFlavor::Pro,
            (_, Some(f)) => return Err(bad("pbs_flavor", format!("\"{f}\""), "use \"pro\" or \"torque\"".into())),
        };
        let lsf_unit = raw.lsf_unit.unwrap_or_else(|| "KB".into()).to_ascii_uppercase();
        if !["KB", "MB", "GB", "TB"].contains(&lsf_unit.as_str()) {
            return Err(bad(
                "lsf_unit",
                format!("\"{lsf_unit}\""),
                "use KB, MB, GB or TB (your LSF_UNIT_FOR_LIMITS)".into(),
            ));
        }
        if scheduler == Scheduler::Sge && nodes > 1 {
            return Err(bad(
                "nodes",
                nodes.to_string(),
                "multi-node jobs are not supported on SGE; use array = true for many workers".into(),
            ));
        }
        if scheduler == Scheduler::Htcondor && nodes > 1 {
            return Err(bad(
                "nodes",
                nodes.to_string(),
                "multi-node jobs are not supported on HTCondor; use array = true".into(),
            ));
        }
        let death_timeout = match raw.death_timeout {
            None => 60,
            Some(d) if d >= 1 => d as u64,
            Some(d) => return Err(bad("death_timeout", d.to_string(), "must be at least 1 (seconds)".into())),
        };
        let adapt = match raw.adapt {
            None => None,
            Some(toml::Value::Table(t)) => {
                let get = |k: &str| t.get(k).and_then(|v| v.as_integer());
                match (get("min"), get("max")) {
                    (Some(min), Some(max)) if 0 <= min && min <= max && max >= 1 && max <= i64::from(u32::MAX) && t.len() == 2 => {
                        Some(crate::pool::Adapt {
                            min: min as u32,
                            max: max as u32,
                        })
                    }
                    _ => {
                        return Err(bad(
                            "adapt",
                            toml::Value::Table(t).to_string(),
                            "use adapt = { min = 1, max = 20 } with 0 <= min <= max and max >= 1".into(),
                        ));
                    }
                }
            }
            Some(v) => return Err(bad("adapt", v.to_string(), "use adapt = { min = 1, max = 20 }".into())),
        };
        let transport = match raw.transport.as_deref() {
            None => crate::transport::Transport::Auto,
            Some(t) => t
                .parse()
                .map_err(|_| bad("transport", format!("\"{t}\""), "use \"auto\", \"quic\" or \"tcp\"".into()))?,
        };
        let job_name = raw.job_name.unwrap_or_else(|| "drover-worker".into());
        if job_name.is_empty() || job_name.chars().any(|c| c.is_whitespace() || c == '\'' || c == '"') {
            return Err(bad(
                "job_name",
                format!("\"{job_name}\""),
                "use a name without spaces or quotes".into(),
            ));
        }
        Ok(Site {
            name: name.into(),
            scheduler,
            queue: raw.queue,
            account: raw.account,
            cores,
            memory,
            processes,
            nodes,
            walltime,
            gpus,
            interface: raw.interface,
            shared_fs: raw.shared_fs,
            transport,
            log_dir: raw.log_dir,
            job_name,
            prologue: match raw.prologue {
                None => vec![],
                Some(StringOrList::One(s)) => s.lines().map(str::to_string).collect(),
                Some(StringOrList::Many(v)) => v,
            },
            job_extra_directives: raw.job_extra_directives.unwrap_or_default(),
            submit_extra_args: raw.submit_extra_args.unwrap_or_default(),
            array: raw.array.unwrap_or(false),
            template: raw.template,
            pe: raw.pe,
            memory_resource: raw.memory_resource,
            pbs_flavor,
            lsf_unit,
            death_timeout,
            adapt,
        })
    }

    /// Each worker process's share of the job's `memory`, in bytes.
    pub fn memory_per_worker(&self) -> Option<u64> {
        self.memory.map(|m| m.0 / u64::from(self.processes.max(1)))
    }

    /// Worker threads per worker process.
    pub fn threads_per_worker(&self) -> u32 {
        (self.cores / self.processes).max(1)
    }

    /// Workers one job brings (all nodes).
    pub fn workers_per_job(&self) -> u32 {
        self.processes * self.nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(text: &str) -> Result<Site, SiteError> {
        Site::parse("t.toml", "t", text)
    }

    #[test]
    fn memory_units_are_exact() {
        assert_eq!(Bytes::parse("20 GiB").unwrap(), Bytes(20 << 30));
        assert_eq!(Bytes::parse("1.5GB").unwrap(), Bytes(1_500_000_000));
        assert_eq!(Bytes::parse("512MiB").unwrap(), Bytes(512 << 20));
        assert_eq!(Bytes::parse("2 TB").unwrap(), Bytes(2_000_000_000_000));
        assert_eq!(Bytes::parse("100 KB").unwrap(), Bytes(100_000));
        assert!(Bytes::parse("20 GiG").unwrap_err().contains("\"GiG\""));
        assert!(Bytes::parse("GB").is_err());
        assert_eq!(Bytes(1_000_001).ceil_in(1 << 20), 1);
        assert_eq!(Bytes((1 << 20) + 1).ceil_in(1 << 20), 2);
    }

    #[test]
    fn walltimes() {
        assert_eq!(Walltime::parse("01:30:00").unwrap().seconds(), 5400);
        assert_eq!(Walltime::parse("2-00:00:01").unwrap().seconds(), 2 * 86400 + 1);
        assert_eq!(Walltime::parse("48:00:00").unwrap().hms(), "48:00:00");
        assert_eq!(Walltime::parse("48:00:00").unwrap().dhms(), "2-00:00:00");
        assert_eq!(Walltime::parse("00:00:61").map_err(|e| e.contains("below 60")), Err(true));
        assert!(Walltime::parse("1h").is_err());
        assert!(Walltime::parse("00:00:00").is_err());
        assert_eq!(Walltime::parse("00:01:01").unwrap().ceil_minutes(), 2);
    }

    #[test]
    fn validation_quotes_and_suggests() {
        let e = site("scheduler = \"slurm\"\nqueu = \"x\"").unwrap_err().to_string();
        assert!(e.contains("\"queu\"") && e.contains("did you mean \"queue\""), "{e}");
        let e = site("scheduler = \"slurm\"\nmemory = \"20 GiG\"").unwrap_err().to_string();
        assert!(e.contains("\"20 GiG\"") && e.contains("GiB"), "{e}");
        let e = site("scheduler = \"slurm\"\ncores = 2\nprocesses = 4").unwrap_err().to_string();
        assert!(e.contains("processes = 4"), "{e}");
        let e = site("scheduler = \"slurmm\"").unwrap_err().to_string();
        assert!(e.contains("did you mean \"slurm\""), "{e}");
        let e = site("scheduler = \"sge\"\nnodes = 2").unwrap_err().to_string();
        assert!(e.contains("nodes = 2"), "{e}");
        let e = site("scheduler = \"slurm\"\nadapt = { min = 5, max = 2 }").unwrap_err().to_string();
        assert!(e.contains("adapt") && e.contains("min <= max"), "{e}");
        assert_eq!(
            site("scheduler = \"slurm\"\nadapt = { min = 0, max = 4 }").unwrap().adapt,
            Some(crate::pool::Adapt { min: 0, max: 4 })
        );
        let e = site("scheduler = \"slurm\"\nwalltime = \"25:61:00\"").unwrap_err().to_string();
        assert!(e.contains("\"25:61:00\""), "{e}");
    }

    #[test]
    fn every_bundled_site_is_valid() {
        for (name, text) in BUNDLED {
            let s = Site::parse(name, name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(s.processes <= s.cores);
        }
    }
}
