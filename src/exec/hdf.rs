//! HDF5 access: inspecting inputs, reading blocks as f64, writing outputs.
//!
//! The HDF5 library serializes all calls behind one lock; callers keep HDF5 work on
//! their own threads (never on the async runtime's threads).

use std::ops::Range;
use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Hyperslab, Selection, SliceOrIndex};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::config::workload::OutDtype;

/// Element type of an input dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dtype {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::I8 | Dtype::U8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    fn from_descriptor(d: &TypeDescriptor) -> Result<Self, String> {
        let int = |s: &IntSize, signed: bool| match (s, signed) {
            (IntSize::U1, true) => Dtype::I8,
            (IntSize::U2, true) => Dtype::I16,
            (IntSize::U4, true) => Dtype::I32,
            (IntSize::U8, true) => Dtype::I64,
            (IntSize::U1, false) => Dtype::U8,
            (IntSize::U2, false) => Dtype::U16,
            (IntSize::U4, false) => Dtype::U32,
            (IntSize::U8, false) => Dtype::U64,
        };
        Ok(match d {
            TypeDescriptor::Integer(s) => int(s, true),
            TypeDescriptor::Unsigned(s) => int(s, false),
            TypeDescriptor::Float(FloatSize::U4) => Dtype::F32,
            TypeDescriptor::Float(FloatSize::U8) => Dtype::F64,
            TypeDescriptor::Boolean => return Err("booleans".into()),
            TypeDescriptor::Enum(_) => return Err("enumerations".into()),
            TypeDescriptor::Compound(_) => return Err("compound records".into()),
            TypeDescriptor::FixedArray(..) | TypeDescriptor::VarLenArray(_) => return Err("arrays per element".into()),
            TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) => return Err("fixed-length strings".into()),
            TypeDescriptor::VarLenAscii | TypeDescriptor::VarLenUnicode => return Err("variable-length strings".into()),
            TypeDescriptor::Reference(_) => return Err("object references".into()),
            #[allow(unreachable_patterns)]
            _ => return Err("a non-numeric type".into()),
        })
    }
}

/// Why an input cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("file \"{0}\" does not exist")]
    NoFile(PathBuf),
    #[error("cannot open \"{path}\" as HDF5: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("dataset \"{dataset}\" not found in \"{path}\"{listing}")]
    NoDataset { path: PathBuf, dataset: String, listing: String },
    #[error("dataset \"{dataset}\" in \"{path}\" holds {what}, not numbers; drover computes on integer and float datasets")]
    NotNumeric { path: PathBuf, dataset: String, what: String },
    #[error("cannot inspect dataset \"{dataset}\" in \"{path}\": {reason}")]
    Inspect { path: PathBuf, dataset: String, reason: String },
}

/// What drover needs to know of an input dataset.
#[derive(Clone, Debug)]
pub struct DatasetInfo {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// HDF5 chunk shape, `None` when contiguous.
    pub chunk: Option<Vec<usize>>,
}

fn list_datasets(group: &hdf5::Group, prefix: &str, out: &mut Vec<String>) {
    if out.len() > 20 {
        return;
    }
    if let Ok(names) = group.member_names() {
        for n in names {
            let path = format!("{prefix}/{n}");
            if let Ok(g) = group.group(&n) {
                list_datasets(&g, &path, out);
            } else if group.dataset(&n).is_ok() {
                out.push(path);
            }
        }
    }
}

/// Open an input file and inspect one dataset.
pub fn inspect(path: &Path, dataset: &str) -> Result<DatasetInfo, InputError> {
    if !path.exists() {
        return Err(InputError::NoFile(path.to_path_buf()));
    }
    let file = hdf5::File::open(path).map_err(|e| InputError::Open {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let ds = match file.dataset(dataset) {
        Ok(ds) => ds,
        Err(_) => {
            let mut found = Vec::new();
            list_datasets(&file, "", &mut found);
            let listing = if found.is_empty() {
                "; the file holds no datasets".to_string()
            } else {
                format!("; datasets there: {}", found.join(", "))
            };
            return Err(InputError::NoDataset {
                path: path.into(),
                dataset: dataset.into(),
                listing,
            });
        }
    };
    let inspect_err = |e: hdf5::Error| InputError::Inspect {
        path: path.into(),
        dataset: dataset.into(),
        reason: e.to_string(),
    };
    let desc = ds.dtype().and_then(|t| t.to_descriptor()).map_err(inspect_err)?;
    let dtype = Dtype::from_descriptor(&desc).map_err(|what| InputError::NotNumeric {
        path: path.into(),
        dataset: dataset.into(),
        what,
    })?;
    Ok(DatasetInfo {
        shape: ds.shape(),
        dtype,
        chunk: ds.chunk(),
    })
}

fn hyperslab(region: &[Range<usize>]) -> Selection {
    let dims: Vec<SliceOrIndex> = region
        .iter()
        .map(|r| SliceOrIndex::SliceTo {
            start: r.start,
            step: 1,
            end: r.end,
            block: 1,
        })
        .collect();
    Selection::from(Hyperslab::from(dims))
}

/// Read a region of a dataset, converted to f64 by the HDF5 library.
///
/// With the dataset's HDF5 chunk shape, a region spanning several chunks is read one
/// chunk at a time: HDF5 then reads each chunk straight into a contiguous buffer
/// instead of scattering every chunk row through a strided selection, which was
/// several times slower.
pub fn read_region(ds: &hdf5::Dataset, region: &[Range<usize>], chunk: Option<&[usize]>) -> hdf5::Result<ArrayD<f64>> {
    if region.is_empty() {
        let v: f64 = ds.as_reader().read_scalar()?;
        return Ok(ArrayD::from_elem(IxDyn(&[]), v));
    }
    let Some(chunk) = chunk.filter(|c| c.len() == region.len() && c.iter().all(|&n| n > 0)) else {
        return ds.as_reader().read_slice::<f64, _, IxDyn>(hyperslab(region));
    };
    // Chunk-grid cells the region touches, per dimension.
    let cells: Vec<Range<usize>> = region.iter().zip(chunk).map(|(r, &c)| r.start / c..r.end.div_ceil(c)).collect();
    if cells.iter().all(|c| c.len() <= 1) {
        return ds.as_reader().read_slice::<f64, _, IxDyn>(hyperslab(region));
    }
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    let mut out = ArrayD::<f64>::zeros(IxDyn(&shape));
    let mut idx: Vec<usize> = cells.iter().map(|c| c.start).collect();
    loop {
        let sub: Vec<Range<usize>> = idx
            .iter()
            .zip(chunk)
            .zip(region)
            .map(|((&i, &c), r)| (i * c).max(r.start)..((i + 1) * c).min(r.end))
            .collect();
        let part = ds.as_reader().read_slice::<f64, _, IxDyn>(hyperslab(&sub))?;
        let mut view = out.view_mut();
        for (d, (s, r)) in sub.iter().zip(region).enumerate() {
            view.slice_axis_inplace(ndarray::Axis(d), ndarray::Slice::from(s.start - r.start..s.end - r.start));
        }
        view.assign(&part);
        // Next cell, last dimension fastest (the file's order).
        let mut d = idx.len();
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < cells[d].end {
                break;
            }
            idx[d] = cells[d].start;
        }
    }
}

/// Create an output dataset (intermediate groups included).
pub fn create_output(
    file: &hdf5::File,
    dataset: &str,
    shape: &[usize],
    chunk: Option<&[usize]>,
    dtype: OutDtype,
) -> hdf5::Result<hdf5::Dataset> {
    let builder = match dtype {
        OutDtype::F64 => file.new_dataset::<f64>(),
        OutDtype::F32 => file.new_dataset::<f32>(),
    };
    let mut builder = builder.shape(shape.to_vec());
    if let Some(c) = chunk
        && !shape.is_empty()
        && shape.iter().all(|&s| s > 0)
    {
        builder = builder.chunk(c.to_vec());
    }
    let lcpl = hdf5::plist::LinkCreate::build().create_intermediate_group(true).finish()?;
    builder.set_link_create_plist(&lcpl).create(dataset)
}

/// Write a region of an output from f64 or f32 little-endian bytes.
pub fn write_region(ds: &hdf5::Dataset, region: &[Range<usize>], dtype: OutDtype, bytes: &[u8]) -> hdf5::Result<()> {
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    match dtype {
        OutDtype::F64 => {
            let v: Vec<f64> = bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
            let a = ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| hdf5::Error::from(e.to_string()))?;
            write_array(ds, region, &a)
        }
        OutDtype::F32 => {
            let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            let a = ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| hdf5::Error::from(e.to_string()))?;
            write_array(ds, region, &a)
        }
    }
}

fn write_array<T: hdf5::H5Type>(ds: &hdf5::Dataset, region: &[Range<usize>], a: &ArrayD<T>) -> hdf5::Result<()> {
    if region.is_empty() {
        return ds.as_writer().write_scalar(a.first().expect("0-d array has one element"));
    }
    if a.is_empty() {
        return Ok(());
    }
    ds.as_writer().write_slice(a, hyperslab(region))
}
