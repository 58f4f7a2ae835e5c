//! Named dimensions, coordinates and attributes, as netCDF-4 keeps them in HDF5.
//!
//! Inputs: each axis's dimension is the dimension scale attached to it (netCDF-4 and
//! h5netcdf attach one to every axis; its dataset's name is the dimension's name, and
//! it holds the coordinate's values unless it is a bare netCDF dimension), else the
//! input's decoded time coordinate for its time axis, else `dim_<axis>`. The variable's
//! `units`, `long_name`, `standard_name` and `cell_methods` are kept for outputs.
//!
//! Outputs ([`write_labels`]): every axis gets a dimension scale at the file's root,
//! shared by the outputs of the file that agree on its name, length and coordinate (a
//! clash is renamed `name_2`, ...). A coordinate's values are the input coordinate's,
//! picked as the output picks that axis (its attributes copied), or a grouped
//! reduction's groups (`month` 1..12, `season` names, ...); an axis without one gets a
//! bare netCDF dimension. Scales are made and attached with the HDF5 high-level
//! library (H5DS), as netCDF-C and h5py do.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::path::PathBuf;

use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenUnicode};
use hdf5_sys::h5::herr_t;
use hdf5_sys::h5i::hid_t;

use super::coords::{TimeInfo, attr_string};
use crate::exec::calendar::GroupBy;
use crate::exec::meta::Pick;

unsafe extern "C" {
    fn H5DSset_scale(dsid: hid_t, dimname: *const c_char) -> herr_t;
    fn H5DSattach_scale(did: hid_t, dsid: hid_t, idx: c_uint) -> herr_t;
    fn H5DSget_num_scales(did: hid_t, dim: c_uint) -> c_int;
    fn H5DSiterate_scales(
        did: hid_t,
        dim: c_uint,
        idx: *mut c_int,
        visitor: Option<unsafe extern "C" fn(hid_t, c_uint, hid_t, *mut c_void) -> herr_t>,
        visitor_data: *mut c_void,
    ) -> herr_t;
    fn H5DSget_scale_name(did: hid_t, name: *mut c_char, size: usize) -> isize;
    fn H5DSis_scale(did: hid_t) -> c_int;
}

/// netCDF-C's NAME of a dimension scale that is a dimension only, not a variable.
const BARE_DIM: &str = "This is a netCDF dimension but not a netCDF variable.";

/// Attributes of a coordinate that are about its place in its own file.
const NOT_COPIED: &[&str] = &[
    "CLASS",
    "NAME",
    "REFERENCE_LIST",
    "DIMENSION_LIST",
    "_Netcdf4Dimid",
    "_Netcdf4Coordinates",
    "_nc3_strict",
    "_NCProperties",
    "bounds",
];

/// The variable attributes an output derived from one input carries.
pub const CARRIED: &[&str] = &["units", "long_name", "standard_name"];

/// One axis of an input: its dimension's name, and the dataset holding its coordinate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputDim {
    pub name: String,
    pub coord: Option<String>,
}

/// An input variable's attributes worth carrying (`CARRIED`, then `cell_methods`).
#[derive(Clone, Debug, Default)]
pub struct VarAttrs {
    pub carried: Vec<(String, String)>,
    pub cell_methods: Option<String>,
}

/// The path (in its file) of an HDF5 object.
fn path_of(id: hid_t) -> Option<String> {
    // SAFETY: H5Iget_name with a null buffer returns the length; then fills a buffer
    // of that length plus the NUL.
    unsafe {
        let n = hdf5_sys::h5i::H5Iget_name(id, std::ptr::null_mut(), 0);
        if n <= 0 {
            return None;
        }
        let mut buf = vec![0u8; n as usize + 1];
        hdf5_sys::h5i::H5Iget_name(id, buf.as_mut_ptr().cast(), buf.len());
        CStr::from_bytes_until_nul(&buf).ok().map(|c| c.to_string_lossy().into_owned())
    }
}

unsafe extern "C" fn first_scale(_did: hid_t, _dim: c_uint, scale: hid_t, data: *mut c_void) -> herr_t {
    // SAFETY: `data` is the `Option<(String, bool)>` passed by `scale_of`.
    let out = unsafe { &mut *data.cast::<Option<(String, bool)>>() };
    let Some(path) = path_of(scale) else { return 0 };
    // SAFETY: as in `path_of`, for the scale's NAME.
    let name = unsafe {
        let n = H5DSget_scale_name(scale, std::ptr::null_mut(), 0);
        if n > 0 {
            let mut buf = vec![0u8; n as usize + 1];
            H5DSget_scale_name(scale, buf.as_mut_ptr().cast(), buf.len());
            CStr::from_bytes_until_nul(&buf)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    *out = Some((path, name.starts_with(BARE_DIM)));
    1 // stop at the first scale
}

/// The dimension scale attached to axis `axis` of `ds`: its path, and whether it is a
/// bare dimension (no values).
fn scale_of(ds: &hdf5::Dataset, axis: usize) -> Option<(String, bool)> {
    let mut found: Option<(String, bool)> = None;
    hdf5::sync::sync(|| {
        // SAFETY: valid dataset id; the visitor only writes `found`.
        unsafe {
            if H5DSget_num_scales(ds.id(), axis as c_uint) <= 0 {
                return;
            }
            H5DSiterate_scales(
                ds.id(),
                axis as c_uint,
                std::ptr::null_mut(),
                Some(first_scale),
                (&mut found as *mut Option<(String, bool)>).cast(),
            );
        }
    });
    found
}

fn basename(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// The dimensions of the axes of `ds` (at `dataset` in its file).
pub fn input_dims(ds: &hdf5::Dataset, dataset: &str, time: &TimeInfo) -> Vec<InputDim> {
    let rank = ds.ndim();
    // SAFETY: valid dataset id.
    let own_scale = rank == 1 && hdf5::sync::sync(|| unsafe { H5DSis_scale(ds.id()) }) > 0;
    (0..rank)
        .map(|axis| {
            if own_scale {
                return InputDim {
                    name: basename(dataset),
                    coord: Some(dataset.to_string()),
                };
            }
            if let Some((path, bare)) = scale_of(ds, axis) {
                return InputDim {
                    name: basename(&path),
                    coord: (!bare).then_some(path),
                };
            }
            match &time.axis {
                Some((a, _)) if *a == axis => InputDim {
                    name: basename(&time.coordinate),
                    coord: Some(time.coordinate.clone()),
                },
                _ => InputDim {
                    name: format!("dim_{axis}"),
                    coord: None,
                },
            }
        })
        .collect()
}

/// The attributes of a variable that outputs derived from it carry.
pub fn var_attrs(ds: &hdf5::Dataset) -> VarAttrs {
    VarAttrs {
        carried: CARRIED
            .iter()
            .filter_map(|&n| attr_string(ds, n).map(|v| (n.to_string(), v)))
            .collect(),
        cell_methods: attr_string(ds, "cell_methods"),
    }
}

/// The coordinate of an output axis.
#[derive(Clone, Debug, PartialEq)]
pub enum Coord {
    None,
    /// Values of a 1-D dataset of an input file, picked.
    Input {
        file: PathBuf,
        dataset: String,
        pick: Pick,
    },
    /// The groups of a grouped reduction, picked.
    Groups {
        by: GroupBy,
        keys: Vec<i64>,
        pick: Pick,
    },
    /// Values of its own (the quantiles of a tuple `q`).
    Values(Vec<f64>),
}

/// One axis of an output.
#[derive(Clone, Debug, PartialEq)]
pub struct DimSpec {
    pub name: String,
    pub len: usize,
    pub coord: Coord,
}

/// What an output is written with besides its values.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    pub dims: Vec<DimSpec>,
    /// String attributes of the data variable.
    pub attrs: Vec<(String, String)>,
}

fn h5err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Copy the attributes of `src` to `dst` that are numbers or strings (not those that
/// describe `src`'s place in its file).
fn copy_attrs(src: hid_t, dst: hid_t) {
    use hdf5_sys::h5a::*;
    use hdf5_sys::h5o::{H5O_info2_t, H5Oget_info3};
    use hdf5_sys::h5t::*;
    hdf5::sync::sync(|| {
        // SAFETY: ids are valid; each attribute's value is read into a buffer of its
        // type's size times its elements, written with the same type, and variable-
        // length parts the library allocated are reclaimed.
        unsafe {
            let mut info: H5O_info2_t = std::mem::zeroed();
            if H5Oget_info3(src, &mut info, hdf5_sys::h5o::H5O_INFO_NUM_ATTRS) < 0 {
                return;
            }
            for i in 0..info.num_attrs {
                let a = H5Aopen_by_idx(
                    src,
                    c".".as_ptr(),
                    hdf5_sys::h5::H5_index_t::H5_INDEX_NAME,
                    hdf5_sys::h5::H5_iter_order_t::H5_ITER_INC,
                    i,
                    hdf5_sys::h5p::H5P_DEFAULT,
                    hdf5_sys::h5p::H5P_DEFAULT,
                );
                if a < 0 {
                    continue;
                }
                let mut name = vec![0u8; 256];
                let n = H5Aget_name(a, name.len(), name.as_mut_ptr().cast());
                let name = CStr::from_bytes_until_nul(&name)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let t = H5Aget_type(a);
                let class = H5Tget_class(t);
                let copyable = matches!(class, H5T_class_t::H5T_INTEGER | H5T_class_t::H5T_FLOAT | H5T_class_t::H5T_STRING);
                if n > 0 && copyable && !NOT_COPIED.contains(&name.as_str()) {
                    let space = H5Aget_space(a);
                    let count = hdf5_sys::h5s::H5Sget_simple_extent_npoints(space).max(1) as usize;
                    let mut buf = vec![0u8; H5Tget_size(t) * count];
                    if H5Aread(a, t, buf.as_mut_ptr().cast()) >= 0 {
                        let cname = CString::new(name).expect("no NUL in a name read to its NUL");
                        let b = H5Acreate2(
                            dst,
                            cname.as_ptr(),
                            t,
                            space,
                            hdf5_sys::h5p::H5P_DEFAULT,
                            hdf5_sys::h5p::H5P_DEFAULT,
                        );
                        if b >= 0 {
                            H5Awrite(b, t, buf.as_ptr().cast());
                            H5Aclose(b);
                        }
                        if H5Tis_variable_str(t) > 0 {
                            H5Treclaim(t, space, hdf5_sys::h5p::H5P_DEFAULT, buf.as_mut_ptr().cast());
                        }
                    }
                    hdf5_sys::h5s::H5Sclose(space);
                }
                H5Tclose(t);
                H5Aclose(a);
            }
        }
    });
}

/// Write `values` (picked) as a new 1-D dataset `name` of the element type of `desc`.
fn write_numbers(file: &hdf5::File, name: &str, src: &hdf5::Dataset, pick: &Pick) -> Result<Option<hdf5::Dataset>, String> {
    let desc = src
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| h5err("coordinate type", e))?;
    macro_rules! picked {
        ($t:ty) => {{
            let all = src.read_raw::<$t>().map_err(|e| h5err("coordinate values", e))?;
            // A coordinate shorter than the axis it names: none written.
            let Some(v) = (0..pick.len()).map(|i| all.get(pick.at(i)).copied()).collect::<Option<Vec<$t>>>() else {
                return Ok(None);
            };
            file.new_dataset_builder()
                .with_data(&v)
                .create(name)
                .map_err(|e| h5err("coordinate", e))?
        }};
    }
    let ds = match desc {
        TypeDescriptor::Float(FloatSize::U8) => picked!(f64),
        TypeDescriptor::Float(FloatSize::U4) => picked!(f32),
        TypeDescriptor::Integer(IntSize::U1) => picked!(i8),
        TypeDescriptor::Integer(IntSize::U2) => picked!(i16),
        TypeDescriptor::Integer(IntSize::U4) => picked!(i32),
        TypeDescriptor::Integer(IntSize::U8) => picked!(i64),
        TypeDescriptor::Unsigned(IntSize::U1) => picked!(u8),
        TypeDescriptor::Unsigned(IntSize::U2) => picked!(u16),
        TypeDescriptor::Unsigned(IntSize::U4) => picked!(u32),
        TypeDescriptor::Unsigned(IntSize::U8) => picked!(u64),
        _ => return Ok(None), // strings and others: a bare dimension
    };
    copy_attrs(src.id(), ds.id());
    Ok(Some(ds))
}

/// Create the dimension-scale dataset of `dim` as `name` at the root of `file`.
fn create_scale(file: &hdf5::File, name: &str, dim: &DimSpec) -> Result<hdf5::Dataset, String> {
    let coordinate = match &dim.coord {
        Coord::None => None,
        Coord::Input { file: path, dataset, pick } => {
            let src = hdf5::File::open(path).map_err(|e| h5err(&format!("cannot open \"{}\"", path.display()), e))?;
            let ds = src.dataset(dataset).map_err(|e| h5err(&format!("coordinate \"{dataset}\""), e))?;
            write_numbers(file, name, &ds, pick)?
        }
        Coord::Groups { by, keys, pick } => {
            let picked: Vec<i64> = (0..pick.len()).map(|i| keys[pick.at(i)]).collect();
            let ds = if *by == GroupBy::Season {
                let labels: Vec<VarLenUnicode> = picked
                    .iter()
                    .map(|&k| by.label(k).parse().expect("season names are ASCII"))
                    .collect();
                file.new_dataset_builder().with_data(&labels).create(name)
            } else {
                file.new_dataset_builder().with_data(&picked).create(name)
            };
            Some(ds.map_err(|e| h5err("group coordinate", e))?)
        }
        Coord::Values(v) => Some(
            file.new_dataset_builder()
                .with_data(v)
                .create(name)
                .map_err(|e| h5err("coordinate", e))?,
        ),
    };
    let (ds, scale_name) = match coordinate {
        Some(ds) => (ds, name.to_string()),
        None => {
            let ds = file
                .new_dataset::<f32>()
                .shape(dim.len)
                .create(name)
                .map_err(|e| h5err("dimension", e))?;
            (ds, format!("{BARE_DIM}{:10}", dim.len))
        }
    };
    let cname = CString::new(scale_name).map_err(|e| h5err("dimension name", e))?;
    // SAFETY: valid dataset id and a NUL-terminated name.
    let rc = hdf5::sync::sync(|| unsafe { H5DSset_scale(ds.id(), cname.as_ptr()) });
    if rc < 0 {
        return Err(format!("cannot make \"{name}\" a dimension scale"));
    }
    Ok(ds)
}

fn string_attr(loc: &hdf5::Dataset, name: &str, value: &str) -> Result<(), String> {
    let v: VarLenUnicode = value.parse().map_err(|e| h5err(&format!("attribute {name}"), e))?;
    loc.new_attr::<VarLenUnicode>()
        .create(name)
        .and_then(|a| a.write_scalar(&v))
        .map_err(|e| h5err(&format!("attribute {name}"), e))
}

/// Name the dimensions of the outputs of one new file, write their coordinates, and
/// the outputs' attributes (`_FillValue` NaN on float outputs).
pub fn write_labels(file: &hdf5::File, outputs: &[(&hdf5::Dataset, &str, &Labels, bool)]) -> Result<(), String> {
    let taken: Vec<String> = outputs
        .iter()
        .map(|(_, path, ..)| path.trim_start_matches('/').to_string())
        .collect();
    let mut made: Vec<(String, DimSpec, hdf5::Dataset)> = Vec::new();
    for (ds, _, labels, float) in outputs {
        for (axis, dim) in labels.dims.iter().enumerate() {
            let at = match made.iter().position(|(_, d, _)| d == dim) {
                Some(at) => at,
                None => {
                    let mut name = dim.name.clone();
                    let mut k = 1;
                    while made.iter().any(|(n, ..)| *n == name) || taken.contains(&name) {
                        k += 1;
                        name = format!("{}_{k}", dim.name);
                    }
                    let scale = create_scale(file, &name, dim)?;
                    made.push((name, dim.clone(), scale));
                    made.len() - 1
                }
            };
            let (name, _, scale) = &made[at];
            // SAFETY: valid dataset ids; `axis` is an axis of `ds`.
            let rc = hdf5::sync::sync(|| unsafe { H5DSattach_scale(ds.id(), scale.id(), axis as c_uint) });
            if rc < 0 {
                return Err(format!("cannot attach dimension \"{name}\""));
            }
        }
        if *float {
            let fill = ds.dtype().map(|t| t.size()).unwrap_or(8);
            let r = if fill == 4 {
                ds.new_attr::<f32>().create("_FillValue").and_then(|a| a.write_scalar(&f32::NAN))
            } else {
                ds.new_attr::<f64>().create("_FillValue").and_then(|a| a.write_scalar(&f64::NAN))
            };
            r.map_err(|e| h5err("attribute _FillValue", e))?;
        }
        for (k, v) in &labels.attrs {
            string_attr(ds, k, v)?;
        }
    }
    Ok(())
}
