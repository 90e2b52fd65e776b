//! One training batch in MaxText's layout: the keys of MaxText's batch dict, each an i32
//! `[rows, max_target_length]` array, row-major.

use crate::runtime::HostTensor;

/// A batch as the train step consumes it. `rows` is the host's share of the global batch
/// (`global_batch_size_to_load / process_count`), `len` is `max_target_length`.
///
/// - `inputs[r, t]`: the token at t; `targets[r, t]`: the token the model must predict after it.
/// - `inputs_segmentation` / `targets_segmentation`: the packed segment (document) id, numbered from 1
///   within each row; 0 marks padding, which the loss masks (`targets_segmentation != 0`).
/// - `inputs_position` / `targets_position`: the position of the token within its segment (0 at each
///   segment start), 0 on padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub rows: usize,
    pub len: usize,
    pub inputs: Vec<i32>,
    pub inputs_position: Vec<i32>,
    pub inputs_segmentation: Vec<i32>,
    pub targets: Vec<i32>,
    pub targets_position: Vec<i32>,
    pub targets_segmentation: Vec<i32>,
}

impl Batch {
    /// MaxText's key names, in the order of [`Batch::host_tensors`].
    pub const KEYS: [&'static str; 6] =
        ["inputs", "inputs_position", "inputs_segmentation", "targets", "targets_position", "targets_segmentation"];

    /// All padding (every value 0).
    pub fn zeros(rows: usize, len: usize) -> Batch {
        let z = vec![0; rows * len];
        Batch {
            rows,
            len,
            inputs: z.clone(),
            inputs_position: z.clone(),
            inputs_segmentation: z.clone(),
            targets: z.clone(),
            targets_position: z.clone(),
            targets_segmentation: z,
        }
    }

    /// `[rows, max_target_length]`.
    pub fn dims(&self) -> [i64; 2] {
        [self.rows as i64, self.len as i64]
    }

    /// The array of a MaxText key (`"inputs"`, `"targets_segmentation"`, ...); `None` for another name.
    pub fn get(&self, key: &str) -> Option<&[i32]> {
        Some(match key {
            "inputs" => &self.inputs,
            "inputs_position" => &self.inputs_position,
            "inputs_segmentation" => &self.inputs_segmentation,
            "targets" => &self.targets,
            "targets_position" => &self.targets_position,
            "targets_segmentation" => &self.targets_segmentation,
            _ => return None,
        })
    }

    /// Row `r` of the array of `key`.
    pub fn row<'a>(&'a self, key: &str, r: usize) -> &'a [i32] {
        let a = self.get(key).unwrap_or_else(|| panic!("Batch has no key {key:?} (keys: {:?})", Batch::KEYS));
        &a[r * self.len..(r + 1) * self.len]
    }

    /// One key as an s32 host tensor `[rows, max_target_length]`.
    pub fn host_tensor(&self, key: &str) -> Option<HostTensor> {
        self.get(key).map(|a| HostTensor::from_i32(a, &self.dims()))
    }

    /// Every key with its s32 host tensor, in [`Batch::KEYS`] order.
    pub fn host_tensors(&self) -> Vec<(&'static str, HostTensor)> {
        Batch::KEYS.iter().map(|&k| (k, self.host_tensor(k).expect("a key of KEYS"))).collect()
    }

    /// The number of target tokens the loss counts (MaxText's `total_weights`).
    pub fn num_target_tokens(&self) -> usize {
        self.targets_segmentation.iter().filter(|&&s| s != 0).count()
    }

    /// The rows `start..start + rows` (a device's or host's slice of the batch).
    pub fn slice_rows(&self, start: usize, rows: usize) -> Batch {
        assert!(start + rows <= self.rows, "rows {start}..{} of a batch of {} rows", start + rows, self.rows);
        let cut = |a: &Vec<i32>| a[start * self.len..(start + rows) * self.len].to_vec();
        Batch {
            rows,
            len: self.len,
            inputs: cut(&self.inputs),
            inputs_position: cut(&self.inputs_position),
            inputs_segmentation: cut(&self.inputs_segmentation),
            targets: cut(&self.targets),
            targets_position: cut(&self.targets_position),
            targets_segmentation: cut(&self.targets_segmentation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_tensors_have_maxtext_keys_and_shape() {
        let mut b = Batch::zeros(2, 3);
        b.inputs = vec![1, 2, 3, 4, 5, 6];
        b.targets_segmentation = vec![1, 1, 0, 1, 0, 0];
        let ts = b.host_tensors();
        assert_eq!(ts.iter().map(|(k, _)| *k).collect::<Vec<_>>(), Batch::KEYS);
        assert_eq!(ts[0].1.dims, vec![2, 3]);
        assert_eq!(ts[0].1.to_i64(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(b.num_target_tokens(), 3);
        assert_eq!(b.row("inputs", 1), &[4, 5, 6]);
        assert_eq!(b.slice_rows(1, 1).inputs, vec![4, 5, 6]);
    }
}
