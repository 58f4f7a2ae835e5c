//! Outputs: creating datasets, writing regions (the driver's writer), and writing
//! whole chunks straight into the file (workers on the driver's host).

use std::ops::Range;

use ndarray::{ArrayD, IxDyn};

use super::shared_fs::{Seen, SharedFs, may_write, parallel_fs};
use super::{for_each_cell, hyperslab};
use crate::config::workload::OutDtype;
use crate::exec::geometry::for_each_row;

/// The file offsets of every chunk of an output dataset, row-major over its chunk
/// grid, when all are allocated and stored raw (created by [`create_output`] with
/// early allocation): blocks can then be written by other processes straight into
/// the file. `None` otherwise.
pub fn chunk_table(ds: &hdf5::Dataset, elem: usize) -> Option<Vec<u64>> {
    if !ds.filters().is_empty() || ds.dtype().ok()?.size() != elem {
        return None;
    }
    super::index::ChunkIndex::read(ds, false).ok()?.all_addresses()
}

/// Writes blocks of an output straight into the chunks of its (temporary) file, for a
/// worker on the host that holds it ([`crate::proto::DirectOutput`]): no bytes cross
/// the network and the driver's single writer is not in the way. Each block covers
/// whole chunks, so no two workers ever write the same bytes.
pub struct ChunkSink {
    file: std::fs::File,
    /// Through another mount of a shared file system: each block is flushed to it
    /// before it is reported done.
    remote: bool,
    shape: Vec<usize>,
    chunk: Vec<usize>,
    grid: Vec<usize>,
    addrs: Vec<u64>,
    elem: usize,
}

impl ChunkSink {
    /// Open the file if this worker may write into it (see [`super::shared_fs`]):
    /// the one the server described (same device and inode), or the same inode on a
    /// shared parallel file system; `None` otherwise (another host, the file gone, or
    /// direct writes turned off).
    pub fn open(d: &crate::proto::DirectOutput, shape: &[usize], elem: usize, policy: SharedFs) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        if policy == SharedFs::Off {
            return None;
        }
        let meta = std::fs::metadata(&d.path).ok()?;
        let seen = Seen::of(meta.dev(), meta.ino(), d.dev, d.ino);
        let parallel = if seen == Seen::SameInode { parallel_fs(&d.path) } else { None };
        if !may_write(policy, seen, parallel) || d.chunk.len() != shape.len() || d.chunk.contains(&0) {
            return None;
        }
        let grid: Vec<usize> = shape.iter().zip(&d.chunk).map(|(s, c)| s.div_ceil(*c)).collect();
        if grid.iter().product::<usize>() != d.addrs.len() {
            return None;
        }
        let file = std::fs::OpenOptions::new().write(true).open(&d.path).ok()?;
        Some(Self {
            remote: seen == Seen::SameInode,
            file,
            shape: shape.to_vec(),
            chunk: d.chunk.clone(),
            grid,
            addrs: d.addrs.clone(),
            elem,
        })
    }

    /// Write a block (`bytes`: its values, row-major, little-endian) covering `region`.
    pub fn write_block(&self, region: &[Range<usize>], bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let e = self.elem;
        let cbytes = self.chunk.iter().product::<usize>() * e;
        let mut buf = crate::exec::buffers::PAYLOADS.take(cbytes);
        let bshape: Vec<usize> = region.iter().map(|r| r.len()).collect();
        let region_start: Vec<usize> = region.iter().map(|r| r.start).collect();
        let result = for_each_cell(region, &self.chunk, |idx, sub| {
            // The part of the chunk inside the dataset is `sub` (blocks cover whole
            // chunks); the rest is padding, zeroed.
            let inside = idx.iter().zip(&self.chunk).zip(&self.shape).all(|((&i, &c), &n)| (i + 1) * c <= n);
            if !inside {
                buf.fill(0);
            }
            let chunk_start: Vec<usize> = idx.iter().zip(&self.chunk).map(|(&i, &c)| i * c).collect();
            for_each_row(sub, (&region_start, &bshape), (&chunk_start, &self.chunk), |src, dst, run| {
                buf[dst * e..(dst + run) * e].copy_from_slice(&bytes[src * e..(src + run) * e])
            });
            let linear = idx.iter().zip(&self.grid).fold(0usize, |acc, (&i, &g)| acc * g + i);
            self.file
                .write_all_at(&buf, self.addrs[linear])
                .map_err(|e| hdf5::Error::from(e.to_string()))
        });
        crate::exec::buffers::PAYLOADS.give(buf);
        result.map_err(|e| std::io::Error::other(e.to_string()))?;
        if self.remote {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Written through another mount of a shared file system.
    pub fn remote(&self) -> bool {
        self.remote
    }
}

/// Keep the descriptor the HDF5 library opened `file` with (without `O_CLOEXEC`) out
/// of the processes the server starts: a worker of the `local` scheduler, or one a
/// batch command forks, would hold it for its whole life, and with it HDF5's lock on
/// the file and the disk space of a temporary file long removed. Whether it took.
pub fn close_on_exec(file: &hdf5::File) -> bool {
    use std::os::fd::BorrowedFd;

    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let mut handle: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: a valid file id; the default (sec2) driver's handle is its int descriptor.
    let rc = hdf5::sync::sync(|| unsafe { hdf5_sys::h5f::H5Fget_vfd_handle(file.id(), hdf5_sys::h5p::H5P_DEFAULT, &mut handle) });
    if rc < 0 || handle.is_null() {
        return false;
    }
    // SAFETY: the handle points at the descriptor, open while `file` is.
    let fd = unsafe { *(handle as *const std::ffi::c_int) };
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_ok()
}

/// Create an output dataset (intermediate groups included).
pub fn create_output(
    file: &hdf5::File,
    dataset: &str,
    shape: &[usize],
    chunk: Option<&[usize]>,
    dtype: OutDtype,
    compression: Option<crate::config::workload::Compression>,
) -> hdf5::Result<hdf5::Dataset> {
    let builder = match dtype {
        OutDtype::F64 => file.new_dataset::<f64>(),
        OutDtype::F32 => file.new_dataset::<f32>(),
        OutDtype::I8 => file.new_dataset::<i8>(),
        OutDtype::I16 => file.new_dataset::<i16>(),
        OutDtype::I32 => file.new_dataset::<i32>(),
        OutDtype::I64 => file.new_dataset::<i64>(),
        OutDtype::U8 => file.new_dataset::<u8>(),
        OutDtype::U16 => file.new_dataset::<u16>(),
        OutDtype::U32 => file.new_dataset::<u32>(),
        OutDtype::U64 => file.new_dataset::<u64>(),
        OutDtype::Bool => file.new_dataset::<bool>(),
    };
    let mut builder = builder.shape(shape.to_vec());
    // Unwritten elements of float outputs read as NaN (their `_FillValue`).
    match dtype {
        OutDtype::F64 => builder = builder.fill_value(f64::NAN),
        OutDtype::F32 => builder = builder.fill_value(f32::NAN),
        _ => {}
    }
    if let (Some(c), Some(z)) = (chunk, compression)
        && !shape.is_empty()
        && shape.iter().all(|&s| s > 0)
    {
        // Compressed chunks come whole from the workers ([`write_chunks`]); the
        // filters are declared so readers decode them.
        let mut filters = Vec::new();
        if z.shuffle {
            filters.push(hdf5::filters::Filter::shuffle());
        }
        filters.push(hdf5::filters::Filter::deflate(z.level));
        builder = builder.chunk(c.to_vec()).set_filters(&filters);
    } else if let Some(c) = chunk
        && !shape.is_empty()
        && shape.iter().all(|&s| s > 0)
    {
        // Every chunk gets its place in the file now (without writing fill values),
        // so that workers can write blocks straight into it ([`chunk_table`]).
        builder = builder
            .chunk(c.to_vec())
            .alloc_time(Some(hdf5::dataset::AllocTime::Early))
            .fill_time(hdf5::dataset::FillTime::Never);
    }
    let lcpl = hdf5::plist::LinkCreate::build().create_intermediate_group(true).finish()?;
    builder.set_link_create_plist(&lcpl).create(dataset)
}

/// Write a region of an output from its little-endian bytes (the output's dtype;
/// bool as one byte 0 or 1).
pub fn write_region(ds: &hdf5::Dataset, region: &[Range<usize>], dtype: OutDtype, bytes: &[u8]) -> hdf5::Result<()> {
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    // Written straight from the received bytes when they are aligned and native
    // little-endian (the usual case): a block is never copied to be written.
    macro_rules! numeric {
        ($t:ty) => {{
            if cfg!(target_endian = "little") {
                // SAFETY: these numeric types have no invalid bit patterns; align_to
                // puts the bytes it cannot align in the prefix and suffix, checked
                // empty here.
                let (pre, vals, post) = unsafe { bytes.align_to::<$t>() };
                if pre.is_empty() && post.is_empty() {
                    let a = ndarray::ArrayViewD::from_shape(IxDyn(&shape), vals).map_err(|e| hdf5::Error::from(e.to_string()))?;
                    if region.is_empty() {
                        return ds.as_writer().write_scalar(a.first().expect("0-d array has one element"));
                    }
                    if a.is_empty() {
                        return Ok(());
                    }
                    return ds.as_writer().write_slice(a, hyperslab(region));
                }
            }
            const W: usize = std::mem::size_of::<$t>();
            let v: Vec<$t> = bytes
                .chunks_exact(W)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("width")))
                .collect();
            let a = ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| hdf5::Error::from(e.to_string()))?;
            write_array(ds, region, &a)
        }};
    }
    match dtype {
        OutDtype::F64 => numeric!(f64),
        OutDtype::F32 => numeric!(f32),
        OutDtype::I8 => numeric!(i8),
        OutDtype::I16 => numeric!(i16),
        OutDtype::I32 => numeric!(i32),
        OutDtype::I64 => numeric!(i64),
        OutDtype::U8 => numeric!(u8),
        OutDtype::U16 => numeric!(u16),
        OutDtype::U32 => numeric!(u32),
        OutDtype::U64 => numeric!(u64),
        OutDtype::Bool => {
            let v: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
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

/// HDF5's byte shuffle: byte 0 of every element, then byte 1, ... (whole chunks hold
/// whole elements).
fn shuffle(src: &[u8], dst: &mut [u8], elem: usize) {
    let n = src.len() / elem;
    for (i, e) in src.chunks_exact(elem).enumerate() {
        for (j, &b) in e.iter().enumerate() {
            dst[j * n + i] = b;
        }
    }
}

/// A block of an output (its values, row-major, little-endian), compressed chunk by
/// chunk as HDF5's shuffle and deflate filters store chunks: each chunk of the block
/// (the chunks tile it) padded to its full shape at the dataset's edges, shuffled when
/// asked, then a zlib stream. The payload: each chunk in row-major order over the
/// block's chunks, as a little-endian u64 length and the bytes ([`write_chunks`]).
pub fn compress_block(
    region: &[Range<usize>],
    shape: &[usize],
    chunk: &[usize],
    elem: usize,
    c: crate::config::workload::Compression,
    bytes: &[u8],
) -> Vec<u8> {
    thread_local! {
        static DEFLATE: std::cell::RefCell<Option<(i32, libdeflater::Compressor)>> = const { std::cell::RefCell::new(None) };
    }
    let cbytes = chunk.iter().product::<usize>() * elem;
    let mut plain = vec![0u8; cbytes];
    let mut shuffled = vec![0u8; if c.shuffle { cbytes } else { 0 }];
    let bshape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    let region_start: Vec<usize> = region.iter().map(|r| r.start).collect();
    // A kept payload buffer when there is one (the block's previous compressed payload
    // or an earlier block's values, idle in the pool and resident all the same).
    let mut out = crate::exec::buffers::PAYLOADS
        .take_kept(bytes.len() / 2)
        .map(|mut v| {
            v.clear();
            v
        })
        .unwrap_or_else(|| Vec::with_capacity(bytes.len() / 2));
    DEFLATE.with_borrow_mut(|slot| {
        let level = i32::from(c.level);
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let lvl = libdeflater::CompressionLvl::new(level).unwrap_or_default();
            *slot = Some((level, libdeflater::Compressor::new(lvl)));
        }
        let deflate = &mut slot.as_mut().expect("set above").1;
        let _ = for_each_cell(region, chunk, |idx, sub| {
            let inside = idx.iter().zip(chunk).zip(shape).all(|((&i, &c), &n)| (i + 1) * c <= n);
            if !inside {
                plain.fill(0);
            }
            let chunk_start: Vec<usize> = idx.iter().zip(chunk).map(|(&i, &c)| i * c).collect();
            for_each_row(sub, (&region_start, &bshape), (&chunk_start, chunk), |src, dst, run| {
                plain[dst * elem..(dst + run) * elem].copy_from_slice(&bytes[src * elem..(src + run) * elem])
            });
            let input: &[u8] = if c.shuffle && elem > 1 {
                shuffle(&plain, &mut shuffled, elem);
                &shuffled
            } else {
                &plain
            };
            let at = out.len() + 8;
            out.resize(at + deflate.zlib_compress_bound(input.len()), 0);
            let n = deflate.zlib_compress(input, &mut out[at..]).expect("the bound holds the stream");
            out.truncate(at + n);
            out[at - 8..at].copy_from_slice(&(n as u64).to_le_bytes());
            Ok(())
        });
    });
    out
}

/// Store the chunks of a block compressed by [`compress_block`] as they are (HDF5
/// direct chunk writes: the single writer never compresses).
pub fn write_chunks(ds: &hdf5::Dataset, region: &[Range<usize>], chunk: &[usize], payload: &[u8]) -> hdf5::Result<()> {
    let mut off = 0usize;
    for_each_cell(region, chunk, |idx, _| {
        let len = payload
            .get(off..off + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| hdf5::Error::from("a compressed block ends early"))?;
        let data = payload
            .get(off + 8..off + 8 + len)
            .ok_or_else(|| hdf5::Error::from("a compressed chunk is cut short"))?;
        off += 8 + len;
        let offset: Vec<hdf5_sys::h5::hsize_t> = idx.iter().zip(chunk).map(|(&i, &c)| (i * c) as hdf5_sys::h5::hsize_t).collect();
        // SAFETY: the dataset is open and chunked with this chunk shape; `offset` has
        // one entry per dimension; `data` is a whole filtered chunk of `len` bytes.
        let rc = hdf5::sync::sync(|| unsafe {
            hdf5_sys::h5d::H5Dwrite_chunk(
                ds.id(),
                hdf5_sys::h5p::H5P_DEFAULT,
                0,
                offset.as_ptr(),
                data.len(),
                data.as_ptr().cast(),
            )
        });
        if rc < 0 {
            Err(hdf5::Error::from("H5Dwrite_chunk failed"))
        } else {
            Ok(())
        }
    })?;
    if off == payload.len() {
        Ok(())
    } else {
        Err(hdf5::Error::from("a compressed block has bytes past its chunks"))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::BorrowedFd;

    use nix::fcntl::{FcntlArg, FdFlag, fcntl};

    /// Whether the descriptor HDF5 holds `file` open with is close-on-exec.
    fn cloexec(file: &hdf5::File) -> bool {
        let mut handle: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: as in `close_on_exec`.
        unsafe { hdf5_sys::h5f::H5Fget_vfd_handle(file.id(), hdf5_sys::h5p::H5P_DEFAULT, &mut handle) };
        let fd = unsafe { BorrowedFd::borrow_raw(*(handle as *const std::ffi::c_int)) };
        let flags = fcntl(fd, FcntlArg::F_GETFD).expect("F_GETFD");
        FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn output_descriptors_are_not_inherited_by_processes_the_server_starts() {
        let dir = std::env::temp_dir().join(format!("drover-cloexec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.h5");
        let f = hdf5::File::create(&path).unwrap();
        assert!(!cloexec(&f), "HDF5 opens files without O_CLOEXEC (else this fix is moot)");
        assert!(super::close_on_exec(&f));
        assert!(cloexec(&f));
        drop(f);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
