//! `dataset_type=synthetic`: MaxText 0.2.5's `SyntheticDataIterator` (input_pipeline/synthetic_data_processing.py),
//! with the same token ids and segment ids.
//!
//! One fixed batch, returned at every step:
//! - `tokens = jax.random.randint(PRNGKey(0), [global_batch, max_target_length + 1], 0, vocab_size, int32)`;
//!   `inputs = tokens[:, :-1]`, `targets = tokens[:, 1:]`.
//! - `inputs_position = arange(L)`, `targets_position = arange(1, L + 1)` (MaxText slices one position
//!   array the same way as the tokens; positions do not restart at synthetic segment starts).
//! - segmentation: all ones, unless `packing=true` and `max_segments_per_seq >= 2` (and `L >= 2`): then
//!   (`_make_packed_segment_ids`) `k1, k2 = split(PRNGKey(42))`, each row gets `randint(k1, [B, 1], 2,
//!   min(max_segments_per_seq, L) + 1)` segments, cut before the positions `1..L` whose `uniform(k2, [B, L-1])`
//!   scores rank lowest (stable ranks, so ties go to the earlier position), numbered 1, 2, ...
//!   `targets_segmentation` equals `inputs_segmentation`.
//!
//! The keys are those of the key implementation in `JAX_DEFAULT_PRNG_IMPL` (see [`super::prng`]): `unsafe_rbg`
//! when it is unset, since MaxText's `train.py` sets `jax_default_prng_impl=unsafe_rbg` (which overrides the
//! variable there), or `threefry2x32`, JAX's default, which MaxText entry points that leave the setting alone
//! (e.g. `train_sft.py`) use. The batch equals the one MaxText computes on a CPU or GPU backend; on TPU,
//! XLA's DEFAULT `rng_bit_generator` algorithm differs, so MaxText's unsafe_rbg batch there does too.

use super::batch::Batch;
use super::error::DataError;
use super::prng::{Jax, PrngImpl};

/// The global synthetic batch (`rows = global_batch_size_to_load`) under key implementation `imp`.
pub fn synthetic_batch(
    imp: PrngImpl,
    rows: usize,
    len: usize,
    vocab_size: usize,
    packing: bool,
    max_segments_per_seq: i64,
) -> Result<Batch, DataError> {
    let jax = Jax::new(imp)?;
    let mut b = Batch::zeros(rows, len);
    // JAX clips maxval to the int32 range; vocabularies are far below it.
    let vocab = i32::try_from(vocab_size).unwrap_or(i32::MAX);
    let tokens = jax.randint(jax.key(0), &[rows as i64, len as i64 + 1], 0, vocab)?;
    for (r, row) in tokens.chunks(len + 1).enumerate() {
        for t in 0..len {
            let i = r * len + t;
            b.inputs[i] = row[t];
            b.targets[i] = row[t + 1];
            b.inputs_position[i] = t as i32;
            b.targets_position[i] = t as i32 + 1;
        }
    }
    let seg = segment_ids(&jax, rows, len, if packing { max_segments_per_seq } else { -1 })?;
    b.inputs_segmentation.clone_from(&seg);
    b.targets_segmentation = seg;
    Ok(b)
}

/// `[rows * len]` segment ids: all 1, or 2..=max_segs random segments per row numbered from 1.
fn segment_ids(jax: &Jax, rows: usize, len: usize, max_segments_per_seq: i64) -> Result<Vec<i32>, DataError> {
    if max_segments_per_seq < 2 || len < 2 {
        return Ok(vec![1; rows * len]);
    }
    let max_segs = max_segments_per_seq.min(len as i64) as i32;
    let [k1, k2] = jax.split2(jax.key(42))?;
    let n_segs = jax.randint(k1, &[rows as i64, 1], 2, max_segs + 1)?;
    let scores = jax.uniform_mantissas(k2, &[rows as i64, len as i64 - 1])?;
    let mut out = Vec::with_capacity(rows * len);
    for (r, row_scores) in scores.chunks(len - 1).enumerate() {
        // argsort(argsort(scores)) < n_segs - 1 picks the n_segs - 1 lowest scores; the sort is stable, so
        // equal scores rank by position.
        let mut order: Vec<usize> = (0..len - 1).collect();
        order.sort_by_key(|&i| (row_scores[i], i));
        let mut boundary = vec![false; len];
        boundary[0] = true;
        for &i in &order[..n_segs[r] as usize - 1] {
            boundary[i + 1] = true;
        }
        let mut id = 0;
        for &is_start in &boundary {
            id += is_start as i32;
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_segments_have_two_to_max() {
        let jax = Jax::new(PrngImpl::Threefry2x32).unwrap();
        let seg = segment_ids(&jax, 50, 16, 4).unwrap();
        for row in seg.chunks(16) {
            assert_eq!(row[0], 1);
            assert!(row.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
            assert!((2..=4).contains(&row[15]), "{row:?}");
        }
        assert!((2..=4).any(|n| seg.chunks(16).any(|row| row[15] == n)));
        assert!(segment_ids(&jax, 2, 8, -1).unwrap().iter().all(|&s| s == 1));
    }
}
