//! CF time coordinates: `<unit> since <date>` in the CF calendars, decoded to dates,
//! and the groupings of time steps that reductions take (`by="month"`, ...), in the
//! order xarray's `groupby("time.month")` gives them (sorted labels).

use serde::{Deserialize, Serialize};

/// A CF calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Calendar {
    /// Julian before 1582-10-15, Gregorian from then (CF "standard", "gregorian").
    Standard,
    ProlepticGregorian,
    Julian,
    NoLeap,
    AllLeap,
    Day360,
}

pub const CALENDARS: &str = "standard, gregorian, proleptic_gregorian, julian, noleap, 365_day, all_leap, 366_day, 360_day";

impl Calendar {
    pub fn parse(name: &str) -> Option<Calendar> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "standard" | "gregorian" => Calendar::Standard,
            "proleptic_gregorian" => Calendar::ProlepticGregorian,
            "julian" => Calendar::Julian,
            "noleap" | "365_day" => Calendar::NoLeap,
            "all_leap" | "366_day" => Calendar::AllLeap,
            "360_day" => Calendar::Day360,
            _ => return None,
        })
    }

    fn leap(self, y: i64) -> bool {
        match self {
            Calendar::ProlepticGregorian => y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0),
            Calendar::Julian => y.rem_euclid(4) == 0,
            Calendar::Standard => {
                if y > 1582 {
                    Calendar::ProlepticGregorian.leap(y)
                } else {
                    Calendar::Julian.leap(y)
                }
            }
            Calendar::NoLeap | Calendar::Day360 => false,
            Calendar::AllLeap => true,
        }
    }

    fn month_days(self, y: i64, m: u32) -> i64 {
        if self == Calendar::Day360 {
            return 30;
        }
        match m {
            2 if self.leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Day number of a date (any fixed origin: only differences are used).
    fn day_number(self, y: i64, m: u32, d: u32) -> i64 {
        match self {
            Calendar::Day360 => y * 360 + (m as i64 - 1) * 30 + d as i64 - 1,
            Calendar::NoLeap | Calendar::AllLeap => {
                let per = if self == Calendar::NoLeap { 365 } else { 366 };
                y * per + (1..m).map(|k| self.month_days(y, k)).sum::<i64>() + d as i64 - 1
            }
            Calendar::ProlepticGregorian => gregorian_jdn(y, m, d),
            Calendar::Julian => julian_jdn(y, m, d),
            Calendar::Standard => {
                if (y, m, d) >= (1582, 10, 15) {
                    gregorian_jdn(y, m, d)
                } else {
                    julian_jdn(y, m, d)
                }
            }
        }
    }

    /// The date of a day number.
    fn date(self, n: i64) -> (i64, u32, u32) {
        match self {
            Calendar::Day360 => {
                let y = n.div_euclid(360);
                let r = n.rem_euclid(360);
                (y, (r / 30) as u32 + 1, (r % 30) as u32 + 1)
            }
            Calendar::NoLeap | Calendar::AllLeap => {
                let per = if self == Calendar::NoLeap { 365 } else { 366 };
                let y = n.div_euclid(per);
                let mut r = n.rem_euclid(per);
                let mut m = 1;
                while r >= self.month_days(y, m) {
                    r -= self.month_days(y, m);
                    m += 1;
                }
                (y, m, r as u32 + 1)
            }
            Calendar::ProlepticGregorian => from_gregorian_jdn(n),
            Calendar::Julian => from_julian_jdn(n),
            Calendar::Standard => {
                if n >= 2_299_161 {
                    from_gregorian_jdn(n)
                } else {
                    from_julian_jdn(n)
                }
            }
        }
    }
}

// Julian day numbers (Fliegel & Van Flandern's arithmetic, for any year).
fn gregorian_jdn(y: i64, m: u32, d: u32) -> i64 {
    let a = (14 - m as i64) / 12;
    let yy = y + 4800 - a;
    let mm = m as i64 + 12 * a - 3;
    d as i64 + (153 * mm + 2) / 5 + 365 * yy + yy.div_euclid(4) - yy.div_euclid(100) + yy.div_euclid(400) - 32045
}

fn julian_jdn(y: i64, m: u32, d: u32) -> i64 {
    let a = (14 - m as i64) / 12;
    let yy = y + 4800 - a;
    let mm = m as i64 + 12 * a - 3;
    d as i64 + (153 * mm + 2) / 5 + 365 * yy + yy.div_euclid(4) - 32083
}

fn from_gregorian_jdn(j: i64) -> (i64, u32, u32) {
    let a = j + 32044;
    let b = (4 * a + 3).div_euclid(146_097);
    let c = a - 146_097 * b / 4;
    let d = (4 * c + 3) / 1461;
    let e = c - 1461 * d / 4;
    let m = (5 * e + 2) / 153;
    let day = e - (153 * m + 2) / 5 + 1;
    let month = m + 3 - 12 * (m / 10);
    let year = 100 * b + d - 4800 + m / 10;
    (year, month as u32, day as u32)
}

fn from_julian_jdn(j: i64) -> (i64, u32, u32) {
    let c = j + 32082;
    let d = (4 * c + 3).div_euclid(1461);
    let e = c - 1461 * d / 4;
    let m = (5 * e + 2) / 153;
    let day = e - (153 * m + 2) / 5 + 1;
    let month = m + 3 - 12 * (m / 10);
    let year = d - 4800 + m / 10;
    (year, month as u32, day as u32)
}

/// A decoded time step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub dayofyear: u32,
}

/// CF time units: seconds per unit and the reference day number and second of day.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeUnits {
    seconds: f64,
    calendar: Calendar,
    ref_day: i64,
    ref_second: f64,
}

impl TimeUnits {
    /// `"days since 1850-01-01"`, `"hours since 1900-01-01 00:00:00"`, ... in `calendar`.
    pub fn parse(units: &str, calendar: Calendar) -> Result<TimeUnits, String> {
        let (unit, date) = units
            .split_once(" since ")
            .ok_or_else(|| format!("units \"{units}\" are not CF time units (\"<unit> since <date>\", e.g. \"days since 1850-01-01\")"))?;
        let seconds = match unit.trim().to_ascii_lowercase().as_str() {
            "days" | "day" | "d" => 86400.0,
            "hours" | "hour" | "hr" | "hrs" | "h" => 3600.0,
            "minutes" | "minute" | "min" | "mins" => 60.0,
            "seconds" | "second" | "sec" | "secs" | "s" => 1.0,
            "milliseconds" | "millisecond" | "msec" | "ms" => 1e-3,
            other => {
                return Err(format!(
                    "units \"{units}\": unit \"{other}\" is not decoded (days, hours, minutes, seconds or milliseconds; months and years have no fixed length)"
                ));
            }
        };
        let bad = || format!("units \"{units}\": the date \"{}\" is not YYYY-MM-DD[ hh:mm:ss]", date.trim());
        let date = date.trim().trim_end_matches('Z').trim_end_matches("UTC").trim();
        let (day_part, time_part) = match date.split_once(['T', ' ']) {
            Some((d, t)) => (d, t.trim()),
            None => (date, ""),
        };
        let (neg, body) = match day_part.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, day_part),
        };
        let mut ymd = body.split('-');
        let mut next = || ymd.next().and_then(|v| v.parse::<i64>().ok());
        let (y, m, d) = (next().ok_or_else(bad)?, next().unwrap_or(1), next().unwrap_or(1));
        let y = if neg { -y } else { y };
        if !(1..=12).contains(&m) || d < 1 || d > calendar.month_days(y, m as u32) {
            return Err(bad());
        }
        let time_part = time_part.split(['+']).next().unwrap_or("").trim();
        let ref_second = if time_part.is_empty() {
            0.0
        } else {
            let hms: Vec<f64> = time_part
                .split(':')
                .map(|v| v.parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad())?;
            hms.iter().zip([3600.0, 60.0, 1.0]).map(|(v, s)| v * s).sum()
        };
        Ok(TimeUnits {
            seconds,
            calendar,
            ref_day: calendar.day_number(y, m as u32, d as u32),
            ref_second,
        })
    }

    /// The date of a time value (NaN or an unrepresentable value: `None`).
    pub fn date(&self, value: f64) -> Option<Date> {
        if !value.is_finite() {
            return None;
        }
        let total = self.ref_second + value * self.seconds;
        // Round to the millisecond so 0.9999999 days lands on the next day, not 23:59.
        let total = (total * 1000.0).round() / 1000.0;
        let days = (total / 86400.0).floor();
        let n = self.ref_day.checked_add(days as i64)?;
        let (year, month, day) = self.calendar.date(n);
        let hour = ((total - days * 86400.0) / 3600.0).floor() as u32;
        let dayofyear = (n - self.calendar.day_number(year, 1, 1)) as u32 + 1;
        Some(Date {
            year,
            month,
            day,
            hour,
            dayofyear,
        })
    }
}

/// How time steps are grouped (`by=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupBy {
    Month,
    Season,
    Year,
    DayOfYear,
    Hour,
    /// Not a calendar grouping: consecutive segments of equal length (a scan's
    /// carries, [`Groups::segments`]).
    Segment,
}

pub const GROUPINGS: &str = "\"month\", \"season\", \"year\", \"dayofyear\", \"hour\"";

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "month" => GroupBy::Month,
            "season" => GroupBy::Season,
            "year" => GroupBy::Year,
            "dayofyear" => GroupBy::DayOfYear,
            "hour" => GroupBy::Hour,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Month => "month",
            GroupBy::Season => "season",
            GroupBy::Year => "year",
            GroupBy::DayOfYear => "dayofyear",
            GroupBy::Hour => "hour",
            GroupBy::Segment => "segment",
        }
    }

    /// The sort key of a date's group; seasons sort by name, as xarray's do.
    fn key(self, d: &Date) -> i64 {
        match self {
            GroupBy::Month => d.month as i64,
            GroupBy::Year => d.year,
            GroupBy::DayOfYear => d.dayofyear as i64,
            GroupBy::Hour => d.hour as i64,
            GroupBy::Segment => unreachable!("segments are made by Groups::segments"),
            // DJF, JJA, MAM, SON: alphabetical
            GroupBy::Season => match d.month {
                12 | 1 | 2 => 0,
                6..=8 => 1,
                3..=5 => 2,
                _ => 3,
            },
        }
    }

    pub fn label(self, key: i64) -> String {
        match self {
            GroupBy::Season => ["DJF", "JJA", "MAM", "SON"][key as usize].to_string(),
            _ => key.to_string(),
        }
    }
}

/// Time steps grouped: each step's group (position among the groups present, in
/// sorted order) and each group's key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Groups {
    pub by: GroupBy,
    pub of_step: Vec<u32>,
    pub keys: Vec<i64>,
}

impl Groups {
    pub fn new(by: GroupBy, dates: &[Date]) -> Groups {
        let mut keys: Vec<i64> = dates.iter().map(|d| by.key(d)).collect();
        keys.sort_unstable();
        keys.dedup();
        let of_step = dates
            .iter()
            .map(|d| keys.binary_search(&by.key(d)).expect("every key is present") as u32)
            .collect();
        Groups { by, of_step, keys }
    }

    /// Steps `0..n` in segments of `seg` (the last one shorter).
    pub fn segments(n: usize, seg: usize) -> Groups {
        let count = n.div_ceil(seg.max(1));
        Groups {
            by: GroupBy::Segment,
            of_step: (0..n).map(|i| (i / seg.max(1)) as u32).collect(),
            keys: (0..count as i64).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The groups of steps `range` only (group ids unchanged).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Groups {
        Groups {
            by: self.by,
            of_step: self.of_step[range].to_vec(),
            keys: self.keys.clone(),
        }
    }

    /// The groups present in steps `range`, ascending.
    pub fn present(&self, range: std::ops::Range<usize>) -> Vec<u32> {
        let mut g: Vec<u32> = self.of_step[range].to_vec();
        g.sort_unstable();
        g.dedup();
        g
    }

    /// Each step's position within its group.
    pub fn ranks(&self) -> Vec<usize> {
        let mut seen = vec![0usize; self.keys.len()];
        self.of_step
            .iter()
            .map(|&g| {
                let r = seen[g as usize];
                seen[g as usize] += 1;
                r
            })
            .collect()
    }

    /// How many steps each group has.
    pub fn sizes(&self) -> Vec<usize> {
        let mut n = vec![0usize; self.keys.len()];
        for &g in &self.of_step {
            n[g as usize] += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(u: &TimeUnits, v: f64) -> (i64, u32, u32, u32) {
        let d = u.date(v).expect("a date");
        (d.year, d.month, d.day, d.hour)
    }

    #[test]
    fn calendars_decode_as_cftime() {
        let std = TimeUnits::parse("days since 1850-01-01", Calendar::Standard).unwrap();
        assert_eq!(ymd(&std, 0.0), (1850, 1, 1, 0));
        assert_eq!(ymd(&std, 59.0), (1850, 3, 1, 0));
        assert_eq!(ymd(&std, 365.0 * 150.0 + 37.0), (2000, 1, 2, 0)); // leap days counted (Python's datetime)
        let hrs = TimeUnits::parse("hours since 1900-01-01 00:00:00.0", Calendar::ProlepticGregorian).unwrap();
        assert_eq!(ymd(&hrs, 1_000_000.0), (2014, 1, 29, 16));
        let noleap = TimeUnits::parse("days since 2000-01-01", Calendar::NoLeap).unwrap();
        assert_eq!(ymd(&noleap, 365.0), (2001, 1, 1, 0));
        assert_eq!(ymd(&noleap, 59.0), (2000, 3, 1, 0), "no Feb 29 in noleap");
        let d360 = TimeUnits::parse("days since 2000-01-01", Calendar::Day360).unwrap();
        assert_eq!(ymd(&d360, 59.0), (2000, 2, 30, 0));
        assert_eq!(ymd(&d360, 360.5), (2001, 1, 1, 12));
        assert_eq!(d360.date(359.0).unwrap().dayofyear, 360);
        let leap = TimeUnits::parse("days since 2001-01-01", Calendar::AllLeap).unwrap();
        assert_eq!(ymd(&leap, 59.0), (2001, 2, 29, 0));
        // the Julian/Gregorian switch: 1582-10-04 is followed by 1582-10-15
        let sw = TimeUnits::parse("days since 1582-10-04", Calendar::Standard).unwrap();
        assert_eq!(ymd(&sw, 1.0), (1582, 10, 15, 0));
        let jul = TimeUnits::parse("days since 1900-02-28", Calendar::Julian).unwrap();
        assert_eq!(ymd(&jul, 1.0), (1900, 2, 29, 0), "1900 is a Julian leap year");
        assert_eq!(std.date(f64::NAN), None);
    }

    #[test]
    fn bad_units_are_quoted() {
        assert!(
            TimeUnits::parse("months since 2000-01-01", Calendar::Standard)
                .unwrap_err()
                .contains("\"months\"")
        );
        assert!(TimeUnits::parse("K", Calendar::Standard).unwrap_err().contains("\"K\""));
        assert!(
            TimeUnits::parse("days since 2000-13-01", Calendar::Standard)
                .unwrap_err()
                .contains("2000-13-01")
        );
        assert!(TimeUnits::parse("days since 2000-02-30", Calendar::NoLeap).is_err());
        assert!(TimeUnits::parse("days since 2000-02-30", Calendar::Day360).is_ok());
    }

    #[test]
    fn groups_are_sorted_as_xarray_sorts_them() {
        let u = TimeUnits::parse("days since 2000-11-15", Calendar::Standard).unwrap();
        let dates: Vec<Date> = (0..120).map(|k| u.date(k as f64).unwrap()).collect();
        let g = Groups::new(GroupBy::Month, &dates);
        assert_eq!(g.keys, vec![1, 2, 3, 11, 12]);
        assert_eq!(g.of_step[0], 3);
        let s = Groups::new(GroupBy::Season, &dates);
        assert_eq!(
            s.keys.iter().map(|&k| GroupBy::Season.label(k)).collect::<Vec<_>>(),
            vec!["DJF", "MAM", "SON"]
        );
        assert_eq!(g.sizes().iter().sum::<usize>(), 120);
        assert_eq!(g.ranks()[16], 0);
    }
}
