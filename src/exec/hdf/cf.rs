//! CF decoding of inputs, as xarray's `open_dataset` does by default (mask and scale):
//! stored values equal to `_FillValue` or to any `missing_value` become NaN, the others
//! become `value * scale_factor + add_offset`, in float64.
//!
//! The attributes are read once, when the plan inspects the input; the workers get
//! them in the plan ([`Cf`] in `InputSpec`) and apply them to every region they read.

use serde::{Deserialize, Serialize};

use super::Dtype;

/// The CF attributes of an input that change its values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cf {
    /// `_FillValue` (scalar or 1-element array), in the stored type.
    pub fill_value: Option<f64>,
    /// `missing_value` (one or several), in the stored type.
    pub missing_values: Vec<f64>,
    pub scale_factor: Option<f64>,
    pub add_offset: Option<f64>,
}

/// A CF attribute drover cannot use (not numeric, or empty where a value is needed).
#[derive(Debug, thiserror::Error)]
#[error("attribute {name} {problem}")]
pub struct BadAttribute {
    pub name: &'static str,
    pub problem: String,
}

impl Cf {
    /// The CF attributes of `ds`, `None` when it has none of them (its values are
    /// used as stored).
    pub fn of(ds: &hdf5::Dataset, dtype: Dtype) -> Result<Option<Cf>, BadAttribute> {
        let names = ds.attr_names().unwrap_or_default();
        let read = |name: &'static str| -> Result<Option<Vec<f64>>, BadAttribute> {
            if !names.iter().any(|n| n == name) {
                return Ok(None);
            }
            let bad = |problem: String| BadAttribute { name, problem };
            let attr = ds.attr(name).map_err(|e| bad(format!("cannot be opened: {e}")))?;
            let numeric = attr.dtype().and_then(|t| t.to_descriptor()).is_ok_and(|d| {
                matches!(
                    d,
                    hdf5::types::TypeDescriptor::Integer(_)
                        | hdf5::types::TypeDescriptor::Unsigned(_)
                        | hdf5::types::TypeDescriptor::Float(_)
                )
            });
            if !numeric {
                return Err(bad("is not a number (CF needs a number of the data's type)".into()));
            }
            let values = attr.read_raw::<f64>().map_err(|e| bad(format!("cannot be read: {e}")))?;
            if values.is_empty() {
                return Err(bad("is empty".into()));
            }
            Ok(Some(values))
        };
        let one = |name: &'static str| -> Result<Option<f64>, BadAttribute> {
            match read(name)? {
                None => Ok(None),
                Some(v) if v.len() == 1 => Ok(Some(v[0])),
                Some(v) => Err(BadAttribute {
                    name,
                    problem: format!("holds {} values {v:?}; CF allows one", v.len()),
                }),
            }
        };
        let fill_value = one("_FillValue")?;
        let missing_values = read("missing_value")?.unwrap_or_default();
        let scale_factor = one("scale_factor")?;
        let add_offset = one("add_offset")?;
        if fill_value.is_none() && missing_values.is_empty() && scale_factor.is_none() && add_offset.is_none() {
            return Ok(None);
        }
        Ok(Some(Cf {
            fill_value: fill_value.map(|v| in_stored_type(v, dtype)),
            missing_values: missing_values.into_iter().map(|v| in_stored_type(v, dtype)).collect(),
            scale_factor,
            add_offset,
        }))
    }

    /// The attributes present, for messages and reports.
    pub fn attributes(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.fill_value.is_some() {
            v.push("_FillValue");
        }
        if !self.missing_values.is_empty() {
            v.push("missing_value");
        }
        if self.scale_factor.is_some() {
            v.push("scale_factor");
        }
        if self.add_offset.is_some() {
            v.push("add_offset");
        }
        v
    }

    /// The stored values that mean "missing" (NaN ones dropped: those are NaN already).
    pub fn fill_values(&self) -> Vec<f64> {
        self.fill_value
            .iter()
            .chain(&self.missing_values)
            .copied()
            .filter(|v| !v.is_nan())
            .collect()
    }

    /// One stored value (converted to f64 exactly) decoded as [`Cf::apply`] decodes
    /// it, for folds over stored values; `None` with several fill values.
    pub fn decoder(&self) -> Option<impl Fn(f64) -> f64 + Copy> {
        let fills = self.fill_values();
        if fills.len() > 1 {
            return None;
        }
        let fill = fills.first().copied().unwrap_or(f64::NAN);
        let scale = self.scale_factor.unwrap_or(1.0);
        let offset = self.add_offset.unwrap_or(0.0);
        // As `apply`: values pass untouched only when nothing at all is decoded.
        let scaled = self.scale_factor.is_some() || self.add_offset.is_some() || !fills.is_empty();
        Some(move |v: f64| {
            if v == fill {
                f64::NAN
            } else if scaled {
                v * scale + offset
            } else {
                v
            }
        })
    }

    /// Decode stored values (converted to f64 exactly) in place.
    pub fn apply(&self, values: &mut [f64]) {
        let fills = self.fill_values();
        let scale = self.scale_factor.unwrap_or(1.0);
        let offset = self.add_offset.unwrap_or(0.0);
        let scaled = self.scale_factor.is_some() || self.add_offset.is_some();
        match (fills.as_slice(), scaled) {
            ([], false) => {}
            ([], true) => values.iter_mut().for_each(|v| *v = *v * scale + offset),
            (&[f], _) => values
                .iter_mut()
                .for_each(|v| *v = if *v == f { f64::NAN } else { *v * scale + offset }),
            (fills, _) => values
                .iter_mut()
                .for_each(|v| *v = if fills.contains(v) { f64::NAN } else { *v * scale + offset }),
        }
    }
}

/// A fill value compared as xarray compares it (stored values == the attribute's
/// value): a value the stored type cannot hold exactly matches nothing (NaN), so a
/// float64 fill of -99.9 on float32 data masks nothing, as in xarray and netCDF4-python.
fn in_stored_type(v: f64, dtype: Dtype) -> f64 {
    let int = |lo: f64, hi: f64| if v.fract() == 0.0 && v >= lo && v <= hi { v } else { f64::NAN };
    match dtype {
        Dtype::F64 => v,
        Dtype::F32 if v as f32 as f64 == v || v.is_infinite() => v,
        Dtype::F32 => f64::NAN,
        Dtype::I8 => int(i8::MIN as f64, i8::MAX as f64),
        Dtype::I16 => int(i16::MIN as f64, i16::MAX as f64),
        Dtype::I32 => int(i32::MIN as f64, i32::MAX as f64),
        Dtype::I64 => int(i64::MIN as f64, i64::MAX as f64),
        Dtype::U8 => int(0.0, u8::MAX as f64),
        Dtype::U16 => int(0.0, u16::MAX as f64),
        Dtype::U32 => int(0.0, u32::MAX as f64),
        Dtype::U64 => int(0.0, u64::MAX as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_then_scales_in_float64() {
        let cf = Cf {
            fill_value: Some(-32767.0),
            missing_values: vec![-32768.0, f64::NAN],
            scale_factor: Some(0.5f32 as f64),
            add_offset: Some(280.0),
        };
        let mut v = vec![-32767.0, -32768.0, 0.0, 2.0, f64::NAN];
        cf.apply(&mut v);
        assert!(v[0].is_nan() && v[1].is_nan() && v[4].is_nan());
        assert_eq!(&v[2..4], &[280.0, 281.0]);
    }

    #[test]
    fn one_value_decodes_as_a_region_does() {
        let cfs = [
            Cf {
                fill_value: Some(-32767.0),
                missing_values: vec![],
                scale_factor: Some(0.01f32 as f64),
                add_offset: Some(273.15f32 as f64),
            },
            Cf {
                fill_value: None,
                missing_values: vec![7.0],
                scale_factor: None,
                add_offset: None,
            },
        ];
        let stored = [-32767.0, -1.0, 0.0, 7.0, 12345.0, -0.0];
        for cf in cfs {
            let dec = cf.decoder().expect("one fill value");
            let mut region = stored.to_vec();
            cf.apply(&mut region);
            for (s, r) in stored.iter().zip(&region) {
                let d = dec(*s);
                assert!(d.to_bits() == r.to_bits(), "{s} -> {d}, apply gives {r}");
            }
        }
        let two = Cf {
            fill_value: Some(1.0),
            missing_values: vec![2.0],
            scale_factor: None,
            add_offset: None,
        };
        assert!(two.decoder().is_none(), "several fill values: regions decode");
    }

    #[test]
    fn fill_values_follow_the_stored_type() {
        assert_eq!(in_stored_type(1e20f32 as f64, Dtype::F32), 1e20f32 as f64);
        assert!(
            in_stored_type(1e20, Dtype::F32).is_nan(),
            "float32 cannot hold 1e20 exactly: xarray masks nothing"
        );
        assert!(
            in_stored_type(1e20, Dtype::I16).is_nan(),
            "an int16 cannot hold 1e20: it matches nothing"
        );
        assert!(in_stored_type(-1.5, Dtype::I32).is_nan());
        assert_eq!(in_stored_type(-32767.0, Dtype::I16), -32767.0);
        assert_eq!(in_stored_type(255.0, Dtype::U8), 255.0);
    }

    #[test]
    fn only_a_fill_masks_without_scaling() {
        let cf = Cf {
            fill_value: Some(9.0),
            missing_values: vec![],
            scale_factor: None,
            add_offset: None,
        };
        let mut v = vec![9.0, 8.0];
        cf.apply(&mut v);
        assert!(v[0].is_nan());
        assert_eq!(v[1], 8.0);
        assert_eq!(cf.attributes(), vec!["_FillValue"]);
    }
}
