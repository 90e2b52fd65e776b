//! From token ids to batch rows: examples (a document's window of ids) and MaxText's greedy packing.
//!
//! **Example.** A document of `n` ids gives `inputs = ids[0:m]`, `targets = ids[1:m+1]` with
//! `m = min(n - 1, L)`, `L = max_target_length` (`use_truncation=true`, MaxText's default: the rest of a long
//! document is dropped). With `use_truncation=false` a long document is cut into consecutive examples
//! over the windows `ids[kL : kL + L + 1]` (k = 0, 1, ...), which overlap by one id so that every next-token
//! pair of the document is trained on once. A document of fewer than 2 ids gives no example. The shift
//! happens per example, so no target ever crosses from one document into the next.
//!
//! **Packing** (`packing=true`), grain's `PackAndBatchOperation` as MaxText's HF pipeline uses it:
//! the current batch has `rows` rows of `L` cells. Each example, in stream order, goes into the *first* row
//! (lowest index) whose free cells can hold all of it and that holds fewer than `max_segments_per_seq`
//! examples (no limit when <= 0), starting at that row's first free cell. It gets segment id
//! `1 + (examples already in the row)` and positions `0..m`. When no row fits, the batch is finished
//! (its free cells stay padding: every array 0, segmentation 0) and the example opens the next batch
//! in row 0. At the end of the data the partial batch is emitted too.
//!
//! **No packing** (`packing=false`) is the same with one example per row: row r of a batch holds the r-th
//! example at cells `0..m`, the rest padding.
//!
//! **Differences from MaxText's HF pipeline**, all on purpose: MaxText packs whole documents and then shifts
//! each row (`ShiftData`), so a document's last token gets the next document's first token as target,
//! masked only when that token is BOS or padding (Qwen3 has no BOS, so MaxText trains those cross-document
//! pairs); here the shift is per example and such pairs never exist, and a document of `n` ids takes `n - 1`
//! cells instead of `n`. MaxText truncates a document to `L` ids (`L - 1` pairs), here to `L + 1` ids
//! (`L` pairs). Without packing MaxText drops the last partial batch (`drop_remainder`); here it is emitted
//! with padding rows, like the packed one.

use super::batch::Batch;

/// The number of examples document ids of length `n` give.
pub fn num_examples(n: usize, len: usize, truncate: bool) -> usize {
    if n < 2 {
        0
    } else if truncate {
        1
    } else {
        (n - 1).div_ceil(len)
    }
}

/// The ids of example `k` of a document: `m + 1` ids, `m >= 1`, covering inputs and targets.
pub fn example_window(ids: &[i64], len: usize, k: usize) -> &[i64] {
    let start = k * len;
    let end = (start + len + 1).min(ids.len());
    assert!(end >= start + 2, "example {k} of a document of {} ids (L={len})", ids.len());
    &ids[start..end]
}

/// The batch being filled; see the module docs for the algorithm.
pub struct Packer {
    batch: Batch,
    /// First free cell of each row.
    fill: Vec<usize>,
    /// Examples in each row.
    count: Vec<usize>,
    max_per_row: usize,
    examples: usize,
}

impl Packer {
    /// `max_per_row`: `max_segments_per_seq` (<= 0: no limit) when packing, 1 without packing.
    pub fn new(rows: usize, len: usize, max_per_row: Option<usize>) -> Packer {
        Packer {
            batch: Batch::zeros(rows, len),
            fill: vec![0; rows],
            count: vec![0; rows],
            max_per_row: max_per_row.unwrap_or(usize::MAX),
            examples: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.examples == 0
    }

    /// Places the example `window` (`inputs = window[..m]`, `targets = window[1..]`) in the first row that
    /// fits it; false (and nothing changes) when no row does.
    pub fn try_add(&mut self, window: &[i64]) -> bool {
        let len = self.batch.len;
        let m = window.len() - 1;
        assert!((1..=len).contains(&m), "an example of {m} tokens for rows of {len}");
        let Some(r) = (0..self.batch.rows).find(|&r| self.fill[r] + m <= len && self.count[r] < self.max_per_row) else {
            return false;
        };
        let segment = self.count[r] as i32 + 1;
        let start = r * len + self.fill[r];
        let b = &mut self.batch;
        for t in 0..m {
            b.inputs[start + t] = window[t] as i32;
            b.targets[start + t] = window[t + 1] as i32;
            b.inputs_position[start + t] = t as i32;
            b.targets_position[start + t] = t as i32;
            b.inputs_segmentation[start + t] = segment;
            b.targets_segmentation[start + t] = segment;
        }
        self.fill[r] += m;
        self.count[r] += 1;
        self.examples += 1;
        true
    }

    /// The batch so far; the packer starts an empty one.
    pub fn take(&mut self) -> Batch {
        let (rows, len) = (self.batch.rows, self.batch.len);
        self.fill.iter_mut().for_each(|f| *f = 0);
        self.count.iter_mut().for_each(|c| *c = 0);
        self.examples = 0;
        std::mem::replace(&mut self.batch, Batch::zeros(rows, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_overlap_by_one() {
        let ids: Vec<i64> = (0..10).collect();
        assert_eq!(num_examples(10, 4, false), 3);
        assert_eq!(example_window(&ids, 4, 0), &[0, 1, 2, 3, 4]);
        assert_eq!(example_window(&ids, 4, 1), &[4, 5, 6, 7, 8]);
        assert_eq!(example_window(&ids, 4, 2), &[8, 9]);
        assert_eq!(num_examples(10, 4, true), 1);
        assert_eq!(num_examples(1, 4, false), 0);
        assert_eq!(num_examples(5, 4, false), 1);
    }

    #[test]
    fn first_fit_then_new_batch() {
        let mut p = Packer::new(2, 4, None);
        assert!(p.try_add(&[1, 2, 3])); // row 0: 2 cells
        assert!(p.try_add(&[4, 5, 6, 7])); // row 0 has 2 free: no; row 1
        assert!(p.try_add(&[8, 9])); // row 0 cell 2
        assert!(!p.try_add(&[10, 11, 12])); // 2 cells: row 0 has 1, row 1 has 1
        let b = p.take();
        assert_eq!(b.inputs, vec![1, 2, 8, 0, 4, 5, 6, 0]);
        assert_eq!(b.targets, vec![2, 3, 9, 0, 5, 6, 7, 0]);
        assert_eq!(b.inputs_segmentation, vec![1, 1, 2, 0, 1, 1, 1, 0]);
        assert_eq!(b.inputs_position, vec![0, 1, 0, 0, 0, 1, 2, 0]);
        assert!(p.is_empty());
    }

    #[test]
    fn max_segments_limits_rows() {
        let mut p = Packer::new(1, 8, Some(2));
        assert!(p.try_add(&[1, 2]));
        assert!(p.try_add(&[3, 4]));
        assert!(!p.try_add(&[5, 6]));
    }
}
