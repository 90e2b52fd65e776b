//! Byte-level tensor operations for the HF mapping: dtype conversion, transposes and (un)stacking of
//! row-major little-endian data. They work on raw element bytes so that a same-dtype load is bit exact.

use half::{bf16, f16};

use crate::ir::DType;

/// Converts `src` from `from` to `to`. Same dtype: a copy. Floats (f64, f32, bf16, f16) convert through
/// f64 (exact for every pair except the rounding a narrower target needs). `None` for other conversions.
pub fn convert_bytes(src: &[u8], from: DType, to: DType) -> Option<Vec<u8>> {
    if from == to {
        return Some(src.to_vec());
    }
    let is_float = |d: DType| matches!(d, DType::F64 | DType::F32 | DType::BF16 | DType::F16);
    if !is_float(from) || !is_float(to) {
        return None;
    }
    let n = src.len() / from.size_bytes();
    let mut out = Vec::with_capacity(n * to.size_bytes());
    for c in src.chunks_exact(from.size_bytes()) {
        let v: f64 = match from {
            DType::F64 => f64::from_le_bytes(c.try_into().unwrap()),
            DType::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            DType::BF16 => bf16::from_le_bytes([c[0], c[1]]).to_f64(),
            _ => f16::from_le_bytes([c[0], c[1]]).to_f64(),
        };
        match to {
            DType::F64 => out.extend_from_slice(&v.to_le_bytes()),
            DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            // Via f32 when the source is f32 or narrower (exact), so rounding is the usual f32 -> bf16.
            DType::BF16 if from != DType::F64 => out.extend_from_slice(&bf16::from_f32(v as f32).to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&bf16::from_f64(v).to_le_bytes()),
            _ if from != DType::F64 => out.extend_from_slice(&f16::from_f32(v as f32).to_le_bytes()),
            _ => out.extend_from_slice(&f16::from_f64(v).to_le_bytes()),
        }
    }
    Some(out)
}

/// Transposes a row-major `[rows, cols]` matrix of `elem`-byte elements into `[cols, rows]`.
pub fn transpose2d(src: &[u8], elem: usize, rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(src.len(), rows * cols * elem, "transpose2d: {} bytes for [{rows}, {cols}] x {elem}", src.len());
    let mut out = vec![0u8; src.len()];
    // Tiles keep both the reads and the writes within a few cache lines (the expert matrices are MBs).
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    let s = (r * cols + c) * elem;
                    let d = (c * rows + r) * elem;
                    out[d..d + elem].copy_from_slice(&src[s..s + elem]);
                }
            }
        }
    }
    out
}

/// Reverses the axis order of a row-major tensor (numpy `x.transpose()` / `transpose(2, 1, 0)` for rank 3).
pub fn reverse_axes(src: &[u8], elem: usize, dims: &[usize]) -> Vec<u8> {
    match dims.len() {
        0 | 1 => src.to_vec(),
        2 => transpose2d(src, elem, dims[0], dims[1]),
        _ => {
            let n: usize = dims.iter().product();
            assert_eq!(src.len(), n * elem, "reverse_axes: {} bytes for {dims:?} x {elem}", src.len());
            let rank = dims.len();
            // Source strides, in elements.
            let mut strides = vec![1usize; rank];
            for k in (0..rank - 1).rev() {
                strides[k] = strides[k + 1] * dims[k + 1];
            }
            let out_dims: Vec<usize> = dims.iter().rev().copied().collect();
            let out_strides: Vec<usize> = strides.iter().rev().copied().collect();
            let mut out = Vec::with_capacity(src.len());
            let mut idx = vec![0usize; rank];
            for _ in 0..n {
                let s: usize = idx.iter().zip(&out_strides).map(|(i, st)| i * st).sum::<usize>() * elem;
                out.extend_from_slice(&src[s..s + elem]);
                for k in (0..rank).rev() {
                    idx[k] += 1;
                    if idx[k] < out_dims[k] {
                        break;
                    }
                    idx[k] = 0;
                }
            }
            out
        }
    }
}

/// Where one piece goes inside a stacked tensor whose stack axes (flattened: `stack_total` entries) sit
/// between `outer` leading elements-groups and an `inner_bytes` trailing block:
/// full layout `[outer, stack_total, inner]`, piece layout `[outer, inner]`.
#[derive(Clone, Copy, Debug)]
pub struct StackLayout {
    pub outer: usize,
    pub stack_total: usize,
    pub inner_bytes: usize,
}

impl StackLayout {
    /// Copies `piece` into slot `slot` of `full`.
    pub fn place(&self, full: &mut [u8], piece: &[u8], slot: usize) {
        assert_eq!(piece.len(), self.outer * self.inner_bytes);
        for o in 0..self.outer {
            let d = (o * self.stack_total + slot) * self.inner_bytes;
            full[d..d + self.inner_bytes].copy_from_slice(&piece[o * self.inner_bytes..(o + 1) * self.inner_bytes]);
        }
    }

    /// Copies slot `slot` of `full` out as a piece.
    pub fn take(&self, full: &[u8], slot: usize) -> Vec<u8> {
        let mut piece = Vec::with_capacity(self.outer * self.inner_bytes);
        for o in 0..self.outer {
            let s = (o * self.stack_total + slot) * self.inner_bytes;
            piece.extend_from_slice(&full[s..s + self.inner_bytes]);
        }
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn transposes_match_numpy() {
        // [[0,1,2],[3,4,5]].T = [[0,3],[1,4],[2,5]]
        let t = transpose2d(&f32s(&[0., 1., 2., 3., 4., 5.]), 4, 2, 3);
        assert_eq!(t, f32s(&[0., 3., 1., 4., 2., 5.]));
        // A 70x45 transpose crosses tile borders; transposing twice is the identity.
        let v: Vec<f32> = (0..70 * 45).map(|i| i as f32).collect();
        let t = transpose2d(&f32s(&v), 4, 70, 45);
        assert_eq!(&t[(3 * 70 + 41) * 4..(3 * 70 + 42) * 4], &f32s(&[(41 * 45 + 3) as f32])[..]);
        assert_eq!(transpose2d(&t, 4, 45, 70), f32s(&v));
        // x[a,b,c] -> y[c,b,a]; x shape [2,1,3].
        let y = reverse_axes(&f32s(&[0., 1., 2., 3., 4., 5.]), 4, &[2, 1, 3]);
        assert_eq!(y, f32s(&[0., 3., 1., 4., 2., 5.]));
        // rank 3 with a non-trivial middle axis: x[2,2,2] value = 4a+2b+c; y[c,b,a].
        let y = reverse_axes(&f32s(&(0..8).map(|i| i as f32).collect::<Vec<_>>()), 4, &[2, 2, 2]);
        assert_eq!(y, f32s(&[0., 4., 2., 6., 1., 5., 3., 7.]));
    }

    #[test]
    fn stack_place_and_take() {
        // Two pieces [2, 3] stacked at axis 1 -> [2, 2, 3].
        let l = StackLayout { outer: 2, stack_total: 2, inner_bytes: 3 };
        let mut full = vec![0u8; 12];
        l.place(&mut full, &[1, 2, 3, 4, 5, 6], 0);
        l.place(&mut full, &[7, 8, 9, 10, 11, 12], 1);
        assert_eq!(full, vec![1, 2, 3, 7, 8, 9, 4, 5, 6, 10, 11, 12]);
        assert_eq!(l.take(&full, 1), vec![7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn dtype_conversion() {
        let src = f32s(&[1.0, 0.1, -3.5]);
        let b = convert_bytes(&src, DType::F32, DType::BF16).unwrap();
        let back = convert_bytes(&b, DType::BF16, DType::F32).unwrap();
        assert_eq!(back, f32s(&[1.0, bf16::from_f32(0.1).to_f32(), -3.5]));
        let h = convert_bytes(&src, DType::F32, DType::F16).unwrap();
        assert_eq!(h.len(), 6);
        assert_eq!(convert_bytes(&src, DType::F32, DType::F32).unwrap(), src);
        assert!(convert_bytes(&src, DType::F32, DType::S32).is_none());
    }
}
