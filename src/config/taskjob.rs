//! What a task job's command line says (issue 13): index sets (`--array 1-1000:2`,
//! `1,5,9-12`), time limits (`90s`, `10m`, `2h`, `HH:MM:SS`) and the `{task}`, `{job}`
//! and `{entry}` placeholders of arguments and log paths. Each bad value is refused
//! with a one-line message that quotes it and says what is accepted.

use std::time::Duration;

use super::site::Walltime;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TaskSpecError {
    #[error("--array \"{spec}\": {why}; use ranges and numbers like \"1-1000\", \"0-99:10\" or \"1,5,9-12\"")]
    Array { spec: String, why: String },
    #[error("--time-limit \"{0}\": not a duration; use 90s, 10m, 2h or HH:MM:SS")]
    TimeLimit(String),
    #[error(
        "\"{text}\": unknown placeholder {{{name}}}; the placeholders are {{task}}, {{job}} and {{entry}} (write {{{{ and }}}} for braces)"
    )]
    Placeholder { text: String, name: String },
    #[error("\"{0}\": a brace that opens no placeholder; write {{{{ and }}}} for literal braces")]
    Brace(String),
}

/// The most indices one array may have.
pub const MAX_ARRAY: u64 = 10_000_000;

/// The indices of an `--array` spec, in the order written (ranges ascending by their
/// step), duplicates refused.
pub fn parse_array(spec: &str) -> Result<Vec<u64>, TaskSpecError> {
    let err = |why: String| TaskSpecError::Array {
        spec: spec.to_string(),
        why,
    };
    let num = |s: &str| -> Result<u64, TaskSpecError> {
        let t = s.trim();
        if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit()) {
            return Err(err(format!("\"{t}\" is not a whole number")));
        }
        t.parse().map_err(|_| err(format!("\"{t}\" is too large")))
    };
    if spec.trim().is_empty() {
        return Err(err("it is empty".into()));
    }
    // Counted first, then laid out in one exact allocation: growing the vector as
    // parts come would double it past the bound (the fuzzer saw 144 MB for 9 million
    // indices followed by one more).
    let (mut ranges, mut total) = (Vec::new(), 0u64);
    for part in spec.split(',') {
        let (range, step) = match part.split_once(':') {
            Some((r, s)) => (r, num(s)?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(err("a step of 0".into()));
        }
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None if part.contains(':') => return Err(err(format!("a step needs a range, not \"{}\"", part.trim()))),
            None => {
                let n = num(range)?;
                (n, n)
            }
        };
        if last < first {
            return Err(err(format!("the range \"{}\" ends before it starts", range.trim())));
        }
        // Saturating: "0-18446744073709551615" has 2^64 indices.
        total = total.saturating_add((last - first) / step).saturating_add(1);
        if total > MAX_ARRAY {
            return Err(err(format!("more than {MAX_ARRAY} tasks")));
        }
        ranges.push((first, last, step));
    }
    let mut out = Vec::with_capacity(total as usize);
    for (first, last, step) in ranges {
        out.extend((first..=last).step_by(step as usize));
    }
    let mut sorted = out.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(err(format!("{} is given twice", w[0])));
    }
    Ok(out)
}

/// A time limit: `90s`, `10m`, `2h`, `1d`, or a walltime (`HH:MM:SS`, `D-HH:MM:SS`).
pub fn parse_time_limit(s: &str) -> Result<Duration, TaskSpecError> {
    let t = s.trim();
    let bad = || TaskSpecError::TimeLimit(s.to_string());
    if let Some(unit) = t.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
        let per = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        // A limit past u64 seconds is no limit a user means (and must not wrap).
        return match n.checked_mul(per) {
            Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
            _ => Err(bad()),
        };
    }
    if !t.contains(':') {
        return Err(bad());
    }
    Walltime::parse(t).map(Walltime::duration).map_err(|_| bad())
}

/// What the placeholders of one task stand for.
pub struct Vars<'a> {
    pub task: u64,
    pub job: u64,
    pub entry: &'a str,
}

/// `text` with `{task}`, `{job}` and `{entry}` replaced (`{{` and `}}` are braces).
/// Checked the same way at submission, so that no task fails on it later.
pub fn substitute(text: &str, vars: &Vars) -> Result<String, TaskSpecError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{{") {
            out.push('{');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("}}") {
            out.push('}');
            rest = t;
        } else if tail.starts_with('}') {
            return Err(TaskSpecError::Brace(text.to_string()));
        } else {
            let end = tail.find('}').ok_or_else(|| TaskSpecError::Brace(text.to_string()))?;
            match &tail[1..end] {
                "task" => out.push_str(&vars.task.to_string()),
                "job" => out.push_str(&vars.job.to_string()),
                "entry" => out.push_str(vars.entry),
                name => {
                    return Err(TaskSpecError::Placeholder {
                        text: text.to_string(),
                        name: name.to_string(),
                    });
                }
            }
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_of_ranges_steps_and_lists() {
        assert_eq!(parse_array("1-5").unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(parse_array("0-10:5").unwrap(), vec![0, 5, 10]);
        assert_eq!(parse_array("1,5,9-12").unwrap(), vec![1, 5, 9, 10, 11, 12]);
        assert_eq!(parse_array(" 7 ").unwrap(), vec![7]);
        assert_eq!(parse_array("1-1000").unwrap().len(), 1000);
        // Laid out in one exact allocation, whatever the order of the parts.
        let big = parse_array("1-9000000,0").unwrap();
        assert_eq!(big.len(), 9_000_001);
        assert_eq!(big.capacity(), 9_000_001);
    }

    #[test]
    fn bad_arrays_are_quoted_with_what_is_accepted() {
        for (spec, why) in [
            ("", "it is empty"),
            ("1-", "\"\" is not a whole number"),
            ("a-3", "\"a\" is not a whole number"),
            ("5-1", "ends before it starts"),
            ("1-9:0", "a step of 0"),
            ("3:2", "a step needs a range"),
            ("1-3,2", "2 is given twice"),
            ("0-99999999999", "more than"),
            ("0-18446744073709551615", "more than"),
            ("5,0-18446744073709551615:1", "more than"),
        ] {
            let e = parse_array(spec).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--array \"{spec}\": ")), "{e}");
            assert!(e.contains(why) && e.contains("\"1,5,9-12\""), "{spec}: {e}");
        }
    }

    #[test]
    fn time_limits_in_units_or_as_walltimes() {
        assert_eq!(parse_time_limit("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_time_limit("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_time_limit("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_time_limit("01:30:00").unwrap(), Duration::from_secs(5400));
        // The last ones overflow u64 seconds (found by the fuzzer: they wrapped).
        for bad in [
            "",
            "0s",
            "10",
            "5x",
            "1.5h",
            "-3m",
            "99:99:99",
            "80000000000000000h",
            "18446744073709551615d",
            "5124095576030432:00:00",
            "213503982334602-00:00:00",
        ] {
            let e = parse_time_limit(bad).unwrap_err().to_string();
            assert_eq!(e, format!("--time-limit \"{bad}\": not a duration; use 90s, 10m, 2h or HH:MM:SS"));
        }
    }

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_refused() {
        let v = Vars {
            task: 7,
            job: 3,
            entry: "a b.nc",
        };
        assert_eq!(substitute("out/{job}/{task}.log", &v).unwrap(), "out/3/7.log");
        assert_eq!(substitute("--in={entry}", &v).unwrap(), "--in=a b.nc");
        assert_eq!(substitute("{{task}} {{}}", &v).unwrap(), "{task} {}");
        let e = substitute("x{tsk}", &v).unwrap_err().to_string();
        assert!(
            e.starts_with("\"x{tsk}\": unknown placeholder {tsk}; the placeholders are {task}, {job} and {entry}"),
            "{e}"
        );
        assert!(
            substitute("a{task", &v)
                .unwrap_err()
                .to_string()
                .contains("a brace that opens no placeholder")
        );
        assert!(substitute("a}b", &v).is_err());
    }
}
