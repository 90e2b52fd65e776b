//! `dataset_type=synthetic`: MaxText's `SyntheticDataIterator` (input_pipeline/synthetic_data_processing.py).
//!
//! One fixed batch, returned at every step:
//! - `tokens`: `[global_batch, max_target_length + 1]` uniform in `[0, vocab_size)`;
//!   `inputs = tokens[:, :-1]`, `targets = tokens[:, 1:]`.
//! - `inputs_position = arange(L)`, `targets_position = arange(1, L + 1)` (MaxText slices one position
//!   array the same way as the tokens; positions do not restart at synthetic segment starts).
//! - segmentation: all ones, unless `packing=true` and `max_segments_per_seq >= 2` (and `L >= 2`): then each
//!   row is cut into a random number of segments in `2..=min(max_segments_per_seq, L)` at distinct random
//!   positions in `1..L`, numbered 1, 2, ... (`_make_packed_segment_ids`). `targets_segmentation` equals
//!   `inputs_segmentation`.
//!
//! MaxText draws with `jax.random` (PRNGKey 0 for the tokens, 42 for the segments); the bits here come from
//! SplitMix64 with the same seeds, so the values differ from MaxText's while the distribution, the layout
//! and the "same batch every step" behaviour are the same.

use super::batch::Batch;
use super::shuffle::SplitMix64;

/// The global synthetic batch (`rows = global_batch_size_to_load`).
pub fn synthetic_batch(rows: usize, len: usize, vocab_size: usize, packing: bool, max_segments_per_seq: i64) -> Batch {
    let mut rng = SplitMix64::new(0);
    let mut b = Batch::zeros(rows, len);
    for r in 0..rows {
        let tokens: Vec<i32> = (0..=len).map(|_| rng.below(vocab_size.max(1) as u64) as i32).collect();
        for t in 0..len {
            let i = r * len + t;
            b.inputs[i] = tokens[t];
            b.targets[i] = tokens[t + 1];
            b.inputs_position[i] = t as i32;
            b.targets_position[i] = t as i32 + 1;
        }
    }
    let seg = segment_ids(rows, len, if packing { max_segments_per_seq } else { -1 });
    b.inputs_segmentation.clone_from(&seg);
    b.targets_segmentation = seg;
    b
}

/// `[rows * len]` segment ids: all 1, or 2..=max_segs random segments per row numbered from 1.
fn segment_ids(rows: usize, len: usize, max_segments_per_seq: i64) -> Vec<i32> {
    if max_segments_per_seq < 2 || len < 2 {
        return vec![1; rows * len];
    }
    let max_segs = (max_segments_per_seq as usize).min(len);
    let mut rng = SplitMix64::new(42);
    let mut out = Vec::with_capacity(rows * len);
    for _ in 0..rows {
        let n_segs = 2 + rng.below((max_segs - 1) as u64) as usize;
        // The n_segs - 1 split points are the lowest-scored of positions 1..len (MaxText ranks uniform scores).
        let mut scored: Vec<(f64, usize)> = (1..len).map(|t| (rng.unit_f64(), t)).collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut boundary = vec![false; len];
        boundary[0] = true;
        for &(_, t) in &scored[..n_segs - 1] {
            boundary[t] = true;
        }
        let mut id = 0;
        for &is_start in &boundary {
            id += is_start as i32;
            out.push(id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_segments_have_two_to_max() {
        let seg = segment_ids(50, 16, 4);
        for row in seg.chunks(16) {
            assert_eq!(row[0], 1);
            assert!(row.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
            assert!((2..=4).contains(&row[15]), "{row:?}");
        }
        assert!(segment_ids(2, 8, -1).iter().all(|&s| s == 1));
    }
}
