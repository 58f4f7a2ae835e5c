//! Coordinates of an input: its time axis, found and decoded at plan time.
//!
//! The time coordinate is named on the input (`time = "/time"`) or found next to the
//! variable: a 1-D dataset in the variable's group or the file's root with CF time
//! units (`<unit> since <date>`) that is marked as time (`axis = "T"`,
//! `standard_name = "time"`, or named `time`), whose length is one of the variable's
//! dimensions (the first such dimension: CF orders time first). netCDF4 writes its
//! coordinates so (dimension scales named after their dimension).

use std::path::Path;

use crate::exec::calendar::{CALENDARS, Calendar, Date, TimeUnits};

/// An input's time axis, or what was found instead (for error messages).
#[derive(Clone, Debug, Default)]
pub struct TimeInfo {
    /// The axis of the variable and each step's date.
    pub axis: Option<(usize, Vec<Date>)>,
    /// The coordinate dataset used.
    pub coordinate: String,
    /// Why there is no time axis (empty when there is one).
    pub why_not: String,
}

pub(super) fn attr_string(ds: &hdf5::Dataset, name: &str) -> Option<String> {
    if !ds.attr_names().ok()?.iter().any(|n| n == name) {
        return None;
    }
    let a = ds.attr(name).ok()?;
    if let Ok(s) = a.read_scalar::<hdf5::types::VarLenUnicode>() {
        return Some(s.as_str().to_string());
    }
    if let Ok(s) = a.read_scalar::<hdf5::types::VarLenAscii>() {
        return Some(s.as_str().to_string());
    }
    // Fixed-length strings (netCDF-C writes these): the raw bytes up to a NUL.
    let t = a.dtype().ok()?;
    let n = t.size();
    if let Ok(hdf5::types::TypeDescriptor::FixedAscii(_) | hdf5::types::TypeDescriptor::FixedUnicode(_)) = t.to_descriptor() {
        let mut buf = vec![0u8; n];
        // SAFETY: reading a scalar fixed-length string attribute into a buffer of its size.
        let ok = hdf5::sync::sync(|| unsafe { hdf5_sys::h5a::H5Aread(a.id(), t.id(), buf.as_mut_ptr().cast()) }) >= 0;
        if ok {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(n);
            return Some(String::from_utf8_lossy(&buf[..end]).trim().to_string());
        }
    }
    None
}

/// Whether `ds` looks like a CF time coordinate.
fn is_time(name: &str, ds: &hdf5::Dataset) -> bool {
    let units = attr_string(ds, "units").unwrap_or_default();
    units.contains(" since ")
        && (name == "time"
            || attr_string(ds, "axis").is_some_and(|a| a == "T")
            || attr_string(ds, "standard_name").is_some_and(|s| s == "time"))
}

/// Decode a time coordinate's values with its units and calendar.
fn decode(ds: &hdf5::Dataset, path: &str) -> Result<Vec<Date>, String> {
    let units = attr_string(ds, "units").ok_or_else(|| format!("time coordinate \"{path}\" has no units attribute"))?;
    let cal_name = attr_string(ds, "calendar").unwrap_or_else(|| "standard".into());
    let calendar = Calendar::parse(&cal_name)
        .ok_or_else(|| format!("time coordinate \"{path}\" has calendar \"{cal_name}\", which drover does not know ({CALENDARS})"))?;
    let units = TimeUnits::parse(&units, calendar).map_err(|e| format!("time coordinate \"{path}\": {e}"))?;
    let values = ds
        .read_raw::<f64>()
        .map_err(|e| format!("cannot read time coordinate \"{path}\": {e}"))?;
    values
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            units
                .date(v)
                .ok_or_else(|| format!("time coordinate \"{path}\": step {k} holds {v}, which is not a date"))
        })
        .collect()
}

/// The time axis of `dataset` (of `shape`) in `file`; `explicit`: the coordinate
/// named on the input.
pub fn time_axis(file: &hdf5::File, path: &Path, dataset: &str, shape: &[usize], explicit: Option<&str>) -> TimeInfo {
    let mut info = TimeInfo::default();
    let candidates: Vec<String> = match explicit {
        Some(t) => vec![t.to_string()],
        None => {
            let parent = dataset.rsplit_once('/').map_or("/", |(p, _)| if p.is_empty() { "/" } else { p });
            let mut names = Vec::new();
            for group in [parent, "/"] {
                if let Ok(g) = file.group(group) {
                    for n in g.member_names().unwrap_or_default() {
                        let full = if group == "/" { format!("/{n}") } else { format!("{group}/{n}") };
                        if !names.contains(&full) {
                            names.push(full);
                        }
                    }
                }
            }
            names
        }
    };
    let mut best: Option<(usize, String)> = None;
    for cand in &candidates {
        let Ok(ds) = file.dataset(cand) else {
            if explicit.is_some() {
                info.why_not = format!("time = \"{cand}\" is not a dataset in \"{}\"", path.display());
                return info;
            }
            continue;
        };
        let name = cand.rsplit('/').next().unwrap_or(cand);
        let s = ds.shape();
        if s.len() != 1 || (explicit.is_none() && !is_time(name, &ds)) {
            if explicit.is_some() {
                info.why_not = format!("time = \"{cand}\" has shape {s:?}; a time coordinate is 1-D");
                return info;
            }
            continue;
        }
        let Some(axis) = shape.iter().position(|&n| n == s[0]) else {
            if explicit.is_some() {
                info.why_not = format!(
                    "time = \"{cand}\" has {} steps, which no axis of \"{dataset}\" (shape {shape:?}) has",
                    s[0]
                );
                return info;
            }
            continue;
        };
        if best.as_ref().is_none_or(|b| axis < b.0) {
            best = Some((axis, cand.clone()));
        }
    }
    let Some((axis, coord)) = best else {
        info.why_not = format!(
            "found no 1-D dataset with CF time units (\"<unit> since <date>\") and axis = \"T\", standard_name = \"time\" or the name time next to \"{dataset}\" whose length is one of its axes; name the coordinate with time = \"/path\" on the input"
        );
        return info;
    };
    let ds = file.dataset(&coord).expect("found above");
    match decode(&ds, &coord) {
        Ok(dates) => {
            info.axis = Some((axis, dates));
            info.coordinate = coord;
        }
        Err(e) => info.why_not = e,
    }
    info
}
