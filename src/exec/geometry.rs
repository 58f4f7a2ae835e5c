//! Chunk grids: block shapes, block regions, shapes as numpy prints them.

use std::ops::Range;

/// `(3, 4)`, `(5,)`, `()`, as numpy prints shapes.
pub fn fmt_shape(shape: &[usize]) -> String {
    match shape {
        [] => "()".into(),
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// Step a multi-dimensional index through `ranges`, last dimension fastest (row-major
/// order); `false` once past the last index (the index is then back at the start).
pub fn next_index(idx: &mut [usize], ranges: &[Range<usize>]) -> bool {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        if idx[d] < ranges[d].end {
            return true;
        }
        idx[d] = ranges[d].start;
    }
    false
}

/// For each row of `sub` (a run along the last dimension), in row-major order, call
/// `f(a, b, run)` with the row's first element's row-major offset inside two boxes
/// that both contain `sub`: `a` starting at `a_origin` with extents `a_shape`, and
/// `b` likewise. This is how a region is copied between two layouts (a chunk and a
/// block, a piece and a block) one contiguous run at a time. `sub` must not be empty.
pub fn for_each_row(
    sub: &[Range<usize>],
    (a_origin, a_shape): (&[usize], &[usize]),
    (b_origin, b_shape): (&[usize], &[usize]),
    mut f: impl FnMut(usize, usize, usize),
) {
    let rank = sub.len();
    let run = sub[rank - 1].len();
    let mut pos: Vec<usize> = sub.iter().map(|r| r.start).collect();
    loop {
        let (mut a, mut b) = (0usize, 0usize);
        for d in 0..rank {
            a = a * a_shape[d] + (pos[d] - a_origin[d]);
            b = b * b_shape[d] + (pos[d] - b_origin[d]);
        }
        f(a, b, run);
        if !next_index(&mut pos[..rank - 1], &sub[..rank - 1]) {
            return;
        }
    }
}

/// The entries (extents, ranges) of the dimensions a reduction over `axes` keeps.
pub fn kept<T: Clone>(dims: &[T], axes: &[usize]) -> Vec<T> {
    dims.iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d.clone())
        .collect()
}

/// Blocks per dimension.
pub fn grid_dims(shape: &[usize], block: &[usize]) -> Vec<u64> {
    shape.iter().zip(block).map(|(&s, &b)| s.div_ceil(b.max(1)) as u64).collect()
}

/// Number of blocks of a grid (1 for a 0-d shape, 0 if any extent is 0).
pub fn block_count(shape: &[usize], block: &[usize]) -> u64 {
    grid_dims(shape, block).iter().product()
}

/// The element ranges of block number `index` (row-major over the grid).
pub fn block_region(shape: &[usize], block: &[usize], index: u64) -> Vec<Range<usize>> {
    let dims = grid_dims(shape, block);
    let mut rem = index;
    let mut out = vec![0..0; shape.len()];
    for d in (0..shape.len()).rev() {
        let i = (rem % dims[d]) as usize;
        rem /= dims[d];
        let start = i * block[d];
        out[d] = start..(start + block[d]).min(shape[d]);
    }
    out
}

/// Numpy broadcasting of two shapes, or `None` if they do not broadcast.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// A default block shape: a whole multiple of `chunk` with about `target_elems`
/// elements, grown from the last dimension to the first.
pub fn default_block(shape: &[usize], chunk: &[usize], target_elems: usize) -> Vec<usize> {
    let mut block: Vec<usize> = chunk.iter().zip(shape).map(|(&c, &s)| c.clamp(1, s.max(1))).collect();
    for d in (0..shape.len()).rev() {
        let elems: usize = block.iter().product::<usize>().max(1);
        let max_mult = shape[d].div_ceil(block[d]).max(1);
        let fit = (target_elems / elems).max(1);
        let mult = fit.min(max_mult);
        block[d] = (block[d] * mult).min(shape[d].max(1));
    }
    block
}

/// A chunk shape that tiles `block` (each length divides the block's, so blocks are
/// made of whole chunks), cut down while it holds more than `max_bytes`: the leading
/// axis first (time, in CF order, so a chunk keeps whole fields), each cut to the
/// largest divisor of the block's length at most half the current one, and the next
/// axis only once the leading ones are 1.
pub fn tiling_chunk(block: &[usize], elem: usize, max_bytes: usize) -> Vec<usize> {
    let mut chunk: Vec<usize> = block.iter().map(|&b| b.max(1)).collect();
    for d in 0..chunk.len() {
        while chunk.iter().product::<usize>() * elem > max_bytes && chunk[d] > 1 {
            let b = block[d].max(1);
            chunk[d] = (1..=chunk[d] / 2).rev().find(|&c| b % c == 0).unwrap_or(1);
        }
    }
    chunk
}

/// A block of whole `chunk`s of an array of `shape`, of about `target` elements at
/// most (one chunk if a chunk is larger): chunks added along the last dimension first,
/// then the next while the block stays whole rows of chunks.
pub fn chunk_multiple_block(chunk: &[usize], shape: &[usize], target: usize) -> Vec<usize> {
    let mut b: Vec<usize> = chunk.iter().map(|&c| c.max(1)).collect();
    for d in (0..b.len()).rev() {
        let elems: usize = b.iter().product();
        let room = target / elems.max(1);
        if room < 2 {
            break;
        }
        let most = shape[d].div_ceil(b[d]).max(1);
        let m = room.min(most);
        b[d] *= m;
        if m < most {
            break;
        }
    }
    b.iter().zip(shape).map(|(&b, &n)| b.min(n.max(1))).collect()
}

/// The part of `region` (in a broadcast shape of rank `rank`) that an operand of
/// `shape` needs: dimensions aligned from the right, broadcast (size-1) dimensions read
/// whole.
pub fn operand_region(region: &[Range<usize>], shape: &[usize]) -> Vec<Range<usize>> {
    let off = region.len() - shape.len();
    shape
        .iter()
        .enumerate()
        .map(|(i, &s)| if s == 1 { 0..1 } else { region[i + off].clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiling_chunks_divide_the_block() {
        let c = tiling_chunk(&[73, 181, 360], 4, 4 << 20);
        assert!(c.iter().zip([73, 181, 360]).all(|(c, b)| b % c == 0), "{c:?}");
        assert!(c.iter().product::<usize>() * 4 <= 4 << 20, "{c:?}");
        assert_eq!(tiling_chunk(&[10, 20], 8, 1 << 20), vec![10, 20], "small blocks are one chunk");
        assert_eq!(tiling_chunk(&[7919], 8, 8), vec![1], "a prime length can only become 1");
        assert_eq!(
            tiling_chunk(&[128, 181, 360], 4, 4 << 20),
            vec![16, 181, 360],
            "whole fields, time cut first"
        );
    }

    #[test]
    fn indices_step_in_row_major_order_and_wrap() {
        let ranges = [1..3, 5..7];
        let mut idx = [1, 5];
        let mut seen = vec![idx.to_vec()];
        while next_index(&mut idx, &ranges) {
            seen.push(idx.to_vec());
        }
        assert_eq!(seen, [[1, 5], [1, 6], [2, 5], [2, 6]]);
        assert_eq!(idx, [1, 5], "back at the start");
        assert!(!next_index(&mut [], &[]), "a 0-d index has one position");
    }

    #[test]
    fn rows_have_their_offsets_in_both_boxes() {
        // Rows 1..3 x columns 2..4 of a 4 x 5 box at the origin, and of a 2 x 2 box
        // starting at (1, 2).
        let mut rows = Vec::new();
        for_each_row(&[1..3, 2..4], (&[0, 0], &[4, 5]), (&[1, 2], &[2, 2]), |a, b, run| {
            rows.push((a, b, run))
        });
        assert_eq!(rows, [(7, 0, 2), (12, 2, 2)]);
        let mut one = Vec::new();
        let sub = [Range { start: 3, end: 6 }];
        for_each_row(&sub, (&[0], &[10]), (&[3], &[3]), |a, b, run| one.push((a, b, run)));
        assert_eq!(one, [(3, 0, 3)], "1-D: one row");
    }

    #[test]
    fn shapes_print_like_numpy() {
        assert_eq!(fmt_shape(&[]), "()");
        assert_eq!(fmt_shape(&[5]), "(5,)");
        assert_eq!(fmt_shape(&[3, 4]), "(3, 4)");
    }

    #[test]
    fn regions_cover_ragged_grid() {
        let shape = [37, 23];
        let block = [10, 7];
        assert_eq!(block_count(&shape, &block), 16);
        let mut covered = vec![0u8; 37 * 23];
        for i in 0..16 {
            let r = block_region(&shape, &block, i);
            for a in r[0].clone() {
                for b in r[1].clone() {
                    covered[a * 23 + b] += 1;
                }
            }
        }
        assert!(covered.iter().all(|&c| c == 1));
        assert_eq!(block_region(&shape, &block, 15), vec![30..37, 21..23]);
        assert_eq!(block_count(&[], &[]), 1);
        assert_eq!(block_region(&[], &[], 0), Vec::<Range<usize>>::new());
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&[6, 5, 4], &[5, 4]), Some(vec![6, 5, 4]));
        assert_eq!(broadcast(&[6, 1, 4], &[5, 1]), Some(vec![6, 5, 4]));
        assert_eq!(broadcast(&[3, 4], &[5]), None);
        assert_eq!(broadcast(&[], &[2]), Some(vec![2]));
    }

    #[test]
    fn default_blocks_are_chunk_multiples_near_target() {
        let b = default_block(&[8192, 32768], &[64, 4096], 8 << 20);
        assert_eq!(b, vec![256, 32768]);
        let b = default_block(&[100], &[7], 1 << 20);
        assert_eq!(b, vec![100]);
        let b = default_block(&[730, 181, 360], &[73, 181, 360], 8 << 20);
        assert_eq!(b[1..], [181, 360]);
        assert_eq!(b[0] % 73, 0);
    }
}
