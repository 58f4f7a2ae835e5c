//! HDF5 filter pipelines decoded by drover itself.
//!
//! A compressed chunk is read as stored (its bytes in the mapped file) and decoded
//! here, in the calling worker thread, without the HDF5 library and its global lock:
//! every thread decodes in parallel. The filters are the ones HDF5 and the usual
//! plugins (h5py, hdf5plugin, netCDF) write:
//!
//! | id | filter | decoder |
//! |---|---|---|
//! | 1 | deflate (gzip) | libdeflate |
//! | 2 | shuffle | [`unshuffle`] |
//! | 3 | fletcher32 | [`fletcher32`] (checked) |
//! | 32001 | blosc (blosclz, lz4, lz4hc, zlib, zstd; shuffle, bitshuffle) | c-blosc |
//! | 32004 | lz4 (the HDF5 lz4 filter's framing) | lz4_flex |
//! | 32008 | bitshuffle (none, lz4, zstd) | [`bitunshuffle`] + lz4_flex / zstd |
//! | 32015 | zstd | libzstd |
//!
//! A pipeline is decoded in the reverse of the order it was written in. A chunk's
//! filter mask (bit `i` set: filter `i` was skipped when the chunk was written) is
//! honoured. Anything else (szip, n-bit, scale-offset, other plugins) is left to the
//! HDF5 library when it has the filter ([`Pipeline::for_dataset`] says which).

use std::cell::RefCell;

use hdf5::filters::Filter;

/// Filter ids of the HDF5 registry.
pub const DEFLATE: u32 = 1;
pub const SHUFFLE: u32 = 2;
pub const FLETCHER32: u32 = 3;
pub const SZIP: u32 = 4;
pub const NBIT: u32 = 5;
pub const SCALEOFFSET: u32 = 6;
pub const LZF: u32 = 32000;
pub const BLOSC: u32 = 32001;
pub const LZ4: u32 = 32004;
pub const BITSHUFFLE: u32 = 32008;
pub const ZSTD: u32 = 32015;

/// The name of a registered filter, for messages.
pub fn filter_name(id: u32) -> &'static str {
    match id {
        DEFLATE => "deflate",
        SHUFFLE => "shuffle",
        FLETCHER32 => "fletcher32",
        SZIP => "szip",
        NBIT => "n-bit",
        SCALEOFFSET => "scale-offset",
        LZF => "lzf",
        BLOSC => "blosc",
        LZ4 => "lz4",
        BITSHUFFLE => "bitshuffle",
        ZSTD => "zstd",
        307 => "bzip2",
        32013 => "zfp",
        32017 => "sz",
        32026 => "blosc2",
        _ => "unregistered",
    }
}

/// One decoding step.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Deflate,
    /// Byte shuffle of elements of this many bytes.
    Shuffle(usize),
    Fletcher32,
    Blosc,
    Lz4,
    /// Bit shuffle of elements of `elem` bytes in blocks of `block` elements (0: the
    /// default), then compressed with `codec` (0 none, 2 lz4, 3 zstd).
    Bitshuffle {
        elem: usize,
        block: usize,
        codec: u32,
    },
    Zstd,
}

/// The filters of a dataset that drover decodes, in the order they were applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    steps: Vec<Step>,
}

/// Why a chunk could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("corrupted chunk: its fletcher32 checksum {stored:#010x} does not match the data's {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("corrupted chunk: {filter} could not decode it ({reason})")]
    Codec { filter: &'static str, reason: String },
    #[error("corrupted chunk: decoded to {got} bytes, expected {expected}")]
    Size { got: usize, expected: usize },
}

fn codec_err(filter: &'static str, reason: impl ToString) -> DecodeError {
    DecodeError::Codec {
        filter,
        reason: reason.to_string(),
    }
}

/// How the chunks of a dataset are decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoding {
    /// No filters: chunks are stored as plain bytes.
    None,
    /// drover decodes every filter.
    Drover(Pipeline),
    /// The HDF5 library decodes (it has a filter drover does not decode).
    Library,
    /// Neither can: the first such filter's id.
    Unsupported(u32),
}

impl Pipeline {
    /// How chunks of a dataset with these filters (in pipeline order) and elements of
    /// `elem` bytes are decoded; `library_has(id)` tells whether the HDF5 library can
    /// decode filter `id`.
    pub fn for_dataset(filters: &[Filter], elem: usize, library_has: impl Fn(u32) -> bool) -> Decoding {
        if filters.is_empty() {
            return Decoding::None;
        }
        let mut steps = Vec::new();
        let mut foreign = None;
        for f in filters {
            let step = match f {
                Filter::Deflate(_) => Step::Deflate,
                Filter::Shuffle => Step::Shuffle(elem),
                Filter::Fletcher32 => Step::Fletcher32,
                Filter::User(id, cd) => match *id as u32 {
                    BLOSC => Step::Blosc,
                    LZ4 => Step::Lz4,
                    ZSTD => Step::Zstd,
                    BITSHUFFLE => Step::Bitshuffle {
                        elem: cd.get(2).map_or(elem, |&e| e as usize).max(1),
                        block: cd.get(3).map_or(0, |&b| b as usize),
                        codec: cd.get(4).copied().unwrap_or(0),
                    },
                    other => {
                        foreign.get_or_insert(other);
                        continue;
                    }
                },
                other => {
                    foreign.get_or_insert(other.id() as u32);
                    continue;
                }
            };
            steps.push(step);
        }
        match foreign {
            None => Decoding::Drover(Pipeline { steps }),
            Some(_) => {
                let ids: Vec<u32> = filters.iter().map(|f| f.id() as u32).collect();
                match ids.iter().find(|&&id| !library_has(id)) {
                    None => Decoding::Library,
                    Some(&id) => Decoding::Unsupported(id),
                }
            }
        }
    }

    /// Decode a stored chunk into `out`, which is `expected` bytes long on success.
    /// `mask` is the chunk's filter mask (bit `i` set: filter `i` was skipped).
    pub fn decode(&self, stored: &[u8], mask: u32, expected: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let active: Vec<&Step> = self
            .steps
            .iter()
            .enumerate()
            .filter(|(i, _)| *i >= 32 || mask & (1 << i) == 0)
            .map(|(_, s)| s)
            .collect();
        // Each step reads `cur` (at first the stored bytes) and writes `next`, then
        // the two swap: two buffers whatever the pipeline's length.
        let mut cur = SCRATCH.take();
        let mut next = std::mem::take(out);
        let mut decoded = false;
        let mut result = Ok(());
        for (k, step) in active.iter().rev().enumerate() {
            // The last step must give the chunk's size; earlier ones at most that
            // plus the checksums later steps drop.
            let bound = if k + 1 == active.len() {
                expected
            } else {
                expected + 4 * active.len()
            };
            let src: &[u8] = if decoded { &cur } else { stored };
            result = step.apply(src, &mut next, bound);
            if result.is_err() {
                break;
            }
            std::mem::swap(&mut cur, &mut next);
            decoded = true;
        }
        if !decoded {
            std::mem::swap(&mut cur, &mut next);
            cur.clear();
            cur.extend_from_slice(stored);
        }
        *out = cur;
        SCRATCH.set(next);
        result?;
        if out.len() != expected {
            return Err(DecodeError::Size { got: out.len(), expected });
        }
        Ok(())
    }
}

thread_local! {
    /// The intermediate buffer of each thread's pipeline (kept: chunks are alike).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static INFLATE: RefCell<Option<libdeflater::Decompressor>> = const { RefCell::new(None) };
    static UNZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Size `dst` to `len` bytes without initialising what it will overwrite.
fn sized(dst: &mut Vec<u8>, len: usize) {
    if dst.len() < len {
        dst.resize(len, 0);
    } else {
        dst.truncate(len);
    }
}

fn be32(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn be64(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
}

impl Step {
    /// Undo this step: `src` → `dst` (`dst` ends up exactly the decoded bytes).
    /// `bound` is the largest output allowed.
    fn apply(&self, src: &[u8], dst: &mut Vec<u8>, bound: usize) -> Result<(), DecodeError> {
        match self {
            Step::Deflate => {
                sized(dst, bound);
                let n = INFLATE.with_borrow_mut(|d| {
                    d.get_or_insert_with(libdeflater::Decompressor::new)
                        .zlib_decompress(src, dst)
                        .map_err(|e| codec_err("deflate", e))
                })?;
                dst.truncate(n);
            }
            Step::Shuffle(elem) => {
                sized(dst, src.len());
                unshuffle(src, dst, *elem);
            }
            Step::Fletcher32 => {
                let Some(n) = src.len().checked_sub(4) else {
                    return Err(codec_err("fletcher32", "shorter than its checksum"));
                };
                let stored = u32::from_le_bytes(src[n..].try_into().expect("4 bytes"));
                let computed = fletcher32(&src[..n]);
                // HDF5 1.6 wrote the checksum with its 16-bit halves byte-swapped;
                // the library accepts both, so do we.
                let swapped = ((computed & 0x00ff_00ff) << 8) | ((computed >> 8) & 0x00ff_00ff);
                if stored != computed && stored != swapped {
                    return Err(DecodeError::Checksum { stored, computed });
                }
                dst.clear();
                dst.extend_from_slice(&src[..n]);
            }
            Step::Zstd => {
                dst.clear();
                dst.reserve(bound);
                UNZSTD.with_borrow_mut(|d| {
                    let d = match d {
                        Some(d) => d,
                        None => d.insert(zstd::bulk::Decompressor::new().map_err(|e| codec_err("zstd", e))?),
                    };
                    d.decompress_to_buffer(src, dst).map_err(|e| codec_err("zstd", e))
                })?;
            }
            Step::Lz4 => lz4_hdf5(src, dst, bound)?,
            Step::Blosc => unblosc(src, dst, bound)?,
            Step::Bitshuffle { elem, block, codec } => bitshuffle_filter(src, dst, *elem, *block, *codec, bound)?,
        }
        if dst.len() > bound {
            return Err(DecodeError::Size {
                got: dst.len(),
                expected: bound,
            });
        }
        Ok(())
    }
}

/// The HDF5 lz4 filter's framing: the original size (u64, big-endian), the block size
/// (u32), then per block its compressed size (u32) and bytes; a block whose
/// compressed size equals its size is stored as is.
fn lz4_hdf5(src: &[u8], dst: &mut Vec<u8>, bound: usize) -> Result<(), DecodeError> {
    let bad = |why: &str| codec_err("lz4", why);
    let total = be64(src, 0).ok_or_else(|| bad("no header"))?;
    let block = be32(src, 8).ok_or_else(|| bad("no header"))?;
    if total > bound {
        return Err(bad("larger than the chunk"));
    }
    let block = if block == 0 || block > total { total.max(1) } else { block };
    sized(dst, total);
    let (mut at, mut done) = (12usize, 0usize);
    while done < total {
        let this = block.min(total - done);
        let csize = be32(src, at).ok_or_else(|| bad("truncated"))?;
        at += 4;
        let data = src.get(at..at + csize).ok_or_else(|| bad("truncated"))?;
        let out = &mut dst[done..done + this];
        if csize == this {
            out.copy_from_slice(data);
        } else {
            let n = lz4_flex::block::decompress_into(data, out).map_err(|e| codec_err("lz4", e))?;
            if n != this {
                return Err(bad("a block decoded to the wrong size"));
            }
        }
        at += csize;
        done += this;
    }
    Ok(())
}

/// A blosc (version 1) frame; c-blosc reads its own header.
fn unblosc(src: &[u8], dst: &mut Vec<u8>, bound: usize) -> Result<(), DecodeError> {
    let mut nbytes = 0usize;
    // SAFETY: `src` is a valid slice; validate reads the 16-byte header (after
    // checking that `src.len()` covers it) and compares its sizes with `src.len()`.
    let ok = unsafe { blosc_src::blosc_cbuffer_validate(src.as_ptr().cast(), src.len(), &mut nbytes) };
    if ok < 0 || nbytes > bound {
        return Err(codec_err("blosc", "not a valid blosc frame for this chunk"));
    }
    sized(dst, nbytes);
    if nbytes == 0 {
        return Ok(());
    }
    // SAFETY: the frame was validated against `src.len()`; c-blosc writes at most
    // `nbytes` bytes into `dst`, which holds that many.
    let n = unsafe { blosc_src::blosc_decompress_ctx(src.as_ptr().cast(), dst.as_mut_ptr().cast(), nbytes, 1) };
    if n < 0 || n as usize != nbytes {
        return Err(codec_err("blosc", format!("decoder returned {n}")));
    }
    Ok(())
}

/// bitshuffle's default block: about 8 KiB, a multiple of 8 elements, at least 128.
fn default_bitshuffle_block(elem: usize) -> usize {
    ((8192 / elem) / 8 * 8).max(128)
}

/// The bitshuffle filter (32008): with a codec, a header (decoded size u64 BE, block
/// size in bytes u32 BE) and per block a compressed size (u32 BE) and bytes; without,
/// the bit-shuffled bytes. The blocks' last `n % 8` elements are stored as they are.
fn bitshuffle_filter(src: &[u8], dst: &mut Vec<u8>, elem: usize, block: usize, codec: u32, bound: usize) -> Result<(), DecodeError> {
    let bad = |why: &str| codec_err("bitshuffle", why);
    let (total, block, mut at) = if codec == 0 {
        (src.len(), block, 0usize)
    } else {
        let total = be64(src, 0).ok_or_else(|| bad("no header"))?;
        let block = be32(src, 8).ok_or_else(|| bad("no header"))? / elem;
        (total, block, 12usize)
    };
    if total > bound || total % elem != 0 {
        return Err(bad("size does not fit the chunk"));
    }
    let block = if block == 0 { default_bitshuffle_block(elem) } else { block };
    if block % 8 != 0 {
        return Err(bad("block size not a multiple of 8"));
    }
    let n = total / elem;
    sized(dst, total);
    let mut tmp = Vec::new();
    let mut done = 0usize; // elements
    let last = n % block - n % block % 8;
    let sizes = std::iter::repeat_n(block, n / block).chain((last > 0).then_some(last));
    for size in sizes {
        let bytes = size * elem;
        let out = &mut dst[done * elem..done * elem + bytes];
        let shuffled: &[u8] = match codec {
            0 => {
                let s = src.get(at..at + bytes).ok_or_else(|| bad("truncated"))?;
                at += bytes;
                s
            }
            2 | 3 => {
                let csize = be32(src, at).ok_or_else(|| bad("truncated"))?;
                let data = src.get(at + 4..at + 4 + csize).ok_or_else(|| bad("truncated"))?;
                at += 4 + csize;
                sized(&mut tmp, bytes);
                let got = if codec == 2 {
                    lz4_flex::block::decompress_into(data, &mut tmp).map_err(|e| codec_err("bitshuffle/lz4", e))?
                } else {
                    zstd::bulk::decompress_to_buffer(data, &mut tmp[..]).map_err(|e| codec_err("bitshuffle/zstd", e))?
                };
                if got != bytes {
                    return Err(bad("a block decoded to the wrong size"));
                }
                &tmp
            }
            other => return Err(codec_err("bitshuffle", format!("unknown codec {other}"))),
        };
        bitunshuffle(shuffled, out, size, elem);
        done += size;
    }
    // Trailing elements (fewer than 8) are stored as they are.
    let rest = (n - done) * elem;
    let tail = src.get(at..at + rest).ok_or_else(|| bad("truncated"))?;
    dst[done * elem..].copy_from_slice(tail);
    Ok(())
}

/// Transpose an 8x8 bit matrix held in a u64 (byte `r` = row `r`, bit `c` of it =
/// column `c`): afterwards byte `c` bit `r` holds what byte `r` bit `c` held.
#[inline]
fn transpose8(mut x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^= t ^ (t << 28);
    x
}

/// Undo bitshuffle's transform of `n` elements of `elem` bytes (`n` a multiple of 8):
/// the input holds, for bit `k` of byte `j` of the elements, a row of `n` bits (row
/// `8 j + k`, element `i` at bit `i % 8` of byte `i / 8`).
pub fn bitunshuffle(src: &[u8], dst: &mut [u8], n: usize, elem: usize) {
    debug_assert_eq!(n % 8, 0);
    let row = n / 8;
    for j in 0..elem {
        let rows = &src[j * 8 * row..(j + 1) * 8 * row];
        for g in 0..row {
            let mut x = 0u64;
            for k in 0..8 {
                x |= (rows[k * row + g] as u64) << (8 * k);
            }
            let y = transpose8(x).to_le_bytes();
            for (i, b) in y.iter().enumerate() {
                dst[(8 * g + i) * elem + j] = *b;
            }
        }
    }
}

/// Undo HDF5's byte shuffle: `src` holds byte 0 of every element, then byte 1, ...;
/// bytes beyond the last whole element are stored as they are.
pub fn unshuffle(src: &[u8], dst: &mut [u8], elem: usize) {
    assert_eq!(src.len(), dst.len(), "unshuffle keeps the size");
    let n = src.len() / elem.max(1);
    if elem <= 1 || n <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    // The vector loops take whole groups of 16 elements; the rest is done byte by byte.
    let done = match elem {
        #[cfg(target_arch = "x86_64")]
        2 | 4 | 8 => {
            // SAFETY: SSE2 is part of x86_64; `simd::unshuffle` reads and writes only
            // within the slices, which hold `n` elements of `elem` bytes.
            unsafe { simd::unshuffle(src, dst, n, elem) }
        }
        _ => 0,
    };
    for j in 0..elem {
        let stream = &src[j * n..(j + 1) * n];
        for i in done..n {
            dst[i * elem + j] = stream[i];
        }
    }
    let whole = n * elem;
    dst[whole..].copy_from_slice(&src[whole..]);
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! Byte unshuffle with SSE2 byte/word/dword interleaves: 16 elements per step.
    use std::arch::x86_64::*;

    /// Unshuffle the first `n - n % 16` of `n` elements of `elem` (2, 4 or 8) bytes;
    /// returns how many elements were done.
    ///
    /// # Safety
    /// `src` and `dst` hold at least `n * elem` bytes.
    pub unsafe fn unshuffle(src: &[u8], dst: &mut [u8], n: usize, elem: usize) -> usize {
        assert!(src.len() >= n * elem && dst.len() >= n * elem);
        let groups = n / 16;
        let s = src.as_ptr();
        let d = dst.as_mut_ptr().cast::<__m128i>();
        // SAFETY (all loads and stores below): group `g` reads bytes g*16..g*16+16 of
        // each of the `elem` streams of `n` bytes, and writes the 16 * elem bytes of
        // elements g*16..g*16+16; both lie inside the slices checked above.
        unsafe {
            let ld = |j: usize, g: usize| _mm_loadu_si128(s.add(j * n + g * 16).cast());
            for g in 0..groups {
                let out = d.add(g * elem);
                match elem {
                    2 => {
                        let (a, b) = (ld(0, g), ld(1, g));
                        _mm_storeu_si128(out, _mm_unpacklo_epi8(a, b));
                        _mm_storeu_si128(out.add(1), _mm_unpackhi_epi8(a, b));
                    }
                    4 => {
                        let (a, b, c, e) = (ld(0, g), ld(1, g), ld(2, g), ld(3, g));
                        let (ab0, ab1) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
                        let (ce0, ce1) = (_mm_unpacklo_epi8(c, e), _mm_unpackhi_epi8(c, e));
                        _mm_storeu_si128(out, _mm_unpacklo_epi16(ab0, ce0));
                        _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(ab0, ce0));
                        _mm_storeu_si128(out.add(2), _mm_unpacklo_epi16(ab1, ce1));
                        _mm_storeu_si128(out.add(3), _mm_unpackhi_epi16(ab1, ce1));
                    }
                    _ => {
                        let v: [__m128i; 8] = std::array::from_fn(|j| ld(j, g));
                        // bytes of pairs of streams, then words of pairs, then dwords.
                        let b: [__m128i; 8] = std::array::from_fn(|k| {
                            let (p, hi) = (k / 2, k % 2 == 1);
                            let (x, y) = (v[2 * p], v[2 * p + 1]);
                            if hi { _mm_unpackhi_epi8(x, y) } else { _mm_unpacklo_epi8(x, y) }
                        });
                        // b[2p] holds elements 0..8 of streams 2p, 2p+1; b[2p+1] 8..16.
                        let w: [__m128i; 8] = std::array::from_fn(|k| {
                            // k = 4 * half + 2 * q + hi: streams 4q..4q+4, elements
                            // half*8 + hi*4 .. +4
                            let (half, q, hi) = (k / 4, (k / 2) % 2, k % 2 == 1);
                            let (x, y) = (b[4 * q + half], b[4 * q + 2 + half]);
                            if hi { _mm_unpackhi_epi16(x, y) } else { _mm_unpacklo_epi16(x, y) }
                        });
                        // w[4h + 2q + hi]: 4 elements (h*8 + hi*4 ..) x 4 streams (4q..).
                        for h in 0..2 {
                            for hi in 0..2 {
                                let (x, y) = (w[4 * h + hi], w[4 * h + 2 + hi]);
                                let base = h * 8 + hi * 4; // first element of these four
                                _mm_storeu_si128(out.add(base / 2), _mm_unpacklo_epi32(x, y));
                                _mm_storeu_si128(out.add(base / 2 + 1), _mm_unpackhi_epi32(x, y));
                            }
                        }
                    }
                }
            }
        }
        groups * 16
    }
}

/// HDF5's Fletcher-32: 16-bit big-endian words, sums folded every 360 words, an odd
/// last byte as the high byte of a word.
pub fn fletcher32(data: &[u8]) -> u32 {
    let (mut s1, mut s2) = (0u32, 0u32);
    let words = data.chunks_exact(2);
    let odd = words.remainder().first().copied();
    let mut left = data.len() / 2;
    let mut it = words;
    while left > 0 {
        let n = left.min(360);
        left -= n;
        for w in it.by_ref().take(n) {
            s1 += u32::from(w[0]) << 8 | u32::from(w[1]);
            s2 += s1;
        }
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    if let Some(b) = odd {
        s1 += u32::from(b) << 8;
        s2 += s1;
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    s1 = (s1 & 0xffff) + (s1 >> 16);
    s2 = (s2 & 0xffff) + (s2 >> 16);
    (s2 << 16) | s1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshuffle_inverts_shuffle_with_a_tail() {
        for (elem, n) in [1usize, 2, 3, 4, 8].into_iter().flat_map(|e| [(e, 5), (e, 37), (e, 1000)]) {
            // HDF5 leaves the bytes past the last whole element (fewer than one) in place.
            let plain: Vec<u8> = (0..n * elem + elem - 1).map(|i| (i * 7 + 1) as u8).collect();
            // Shuffle as HDF5 does.
            let mut shuffled = vec![0u8; plain.len()];
            for j in 0..elem {
                for i in 0..n {
                    shuffled[j * n + i] = plain[i * elem + j];
                }
            }
            shuffled[n * elem..].copy_from_slice(&plain[n * elem..]);
            let mut back = vec![0u8; plain.len()];
            unshuffle(&shuffled, &mut back, elem);
            assert_eq!(back, plain, "elem {elem}");
        }
    }

    #[test]
    fn bitunshuffle_inverts_the_bit_transpose() {
        let (n, elem) = (64usize, 4usize);
        let plain: Vec<u8> = (0..n * elem).map(|i| (i * 37 + 11) as u8).collect();
        // The transform by its definition, one bit at a time.
        let mut shuffled = vec![0u8; plain.len()];
        for i in 0..n {
            for j in 0..elem {
                for k in 0..8 {
                    let bit = (plain[i * elem + j] >> k) & 1;
                    let row = 8 * j + k;
                    shuffled[row * (n / 8) + i / 8] |= bit << (i % 8);
                }
            }
        }
        let mut back = vec![0u8; plain.len()];
        bitunshuffle(&shuffled, &mut back, n, elem);
        assert_eq!(back, plain);
    }

    #[test]
    fn fletcher32_known_values() {
        // Worked by hand from the definition: words 0x0102, 0x0304.
        assert_eq!(fletcher32(&[1, 2, 3, 4]), ((0x0102 + 0x0406) << 16) | 0x0406);
        // Odd length: the last byte is a high byte.
        assert_eq!(fletcher32(&[1, 2, 3]), ((0x0102 + 0x0402) << 16) | 0x0402);
        assert_eq!(fletcher32(&[]), 0);
    }

    #[test]
    fn a_pipeline_decodes_in_reverse_and_honours_the_mask() {
        let plain: Vec<u8> = (0..4000u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
        // shuffle, then deflate, as h5py writes `compression="gzip", shuffle=True`.
        let mut shuffled = vec![0u8; plain.len()];
        let n = plain.len() / 4;
        for j in 0..4 {
            for i in 0..n {
                shuffled[j * n + i] = plain[i * 4 + j];
            }
        }
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut z = vec![0u8; c.zlib_compress_bound(shuffled.len())];
        let zn = c.zlib_compress(&shuffled, &mut z).unwrap();
        z.truncate(zn);
        let p = Pipeline {
            steps: vec![Step::Shuffle(4), Step::Deflate],
        };
        let mut out = Vec::new();
        p.decode(&z, 0, plain.len(), &mut out).unwrap();
        assert_eq!(out, plain);
        // Deflate skipped for this chunk (mask bit 1): the stored bytes are shuffled only.
        p.decode(&shuffled, 0b10, plain.len(), &mut out).unwrap();
        assert_eq!(out, plain);
        // A wrong size is an error, not garbage.
        assert!(matches!(p.decode(&z, 0, plain.len() + 8, &mut out), Err(DecodeError::Size { .. })));
    }

    #[test]
    fn fletcher32_mismatch_is_reported() {
        let data = b"abcdefgh".to_vec();
        let mut stored = data.clone();
        stored.extend_from_slice(&fletcher32(&data).to_le_bytes());
        let p = Pipeline {
            steps: vec![Step::Fletcher32],
        };
        let mut out = Vec::new();
        p.decode(&stored, 0, 8, &mut out).unwrap();
        assert_eq!(out, data);
        stored[3] ^= 1;
        assert!(matches!(p.decode(&stored, 0, 8, &mut out), Err(DecodeError::Checksum { .. })));
    }

    #[test]
    fn lz4_framing_with_a_raw_block() {
        let plain: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
        let mut framed = Vec::new();
        framed.extend_from_slice(&(plain.len() as u64).to_be_bytes());
        framed.extend_from_slice(&4096u32.to_be_bytes());
        for (k, part) in plain.chunks(4096).enumerate() {
            if k == 1 {
                // stored as is
                framed.extend_from_slice(&(part.len() as u32).to_be_bytes());
                framed.extend_from_slice(part);
            } else {
                let c = lz4_flex::block::compress(part);
                framed.extend_from_slice(&(c.len() as u32).to_be_bytes());
                framed.extend_from_slice(&c);
            }
        }
        let mut out = Vec::new();
        lz4_hdf5(&framed, &mut out, plain.len()).unwrap();
        assert_eq!(out, plain);
        assert!(lz4_hdf5(&framed[..framed.len() - 1], &mut out, plain.len()).is_err());
    }
}
