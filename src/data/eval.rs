//! The eval data MaxText's way (`make_hf_eval_iterator`, `make_tfds_eval_iterator`,
//! `make_grain_eval_iterator`, `SyntheticDataIterator`): the same pipeline as training on `hf_eval_files`
//! (read as split `train`: MaxText sets `hf_eval_split=train` when eval files are given), on
//! `eval_dataset_name` / `eval_split` (tfds; grain's TFDS fallback), or on `grain_eval_files`, with
//! `eval_data_columns` and `tokenize_eval_data`, in file order (no shuffling), one pass
//! (`num_epoch=1`), `global_batch_size_to_load_eval` rows. Each eval starts it afresh, as MaxText resets
//! its eval iterator before every eval.

use crate::config::Config;

/// The config the eval pipeline runs under: `cfg` with the eval keys in the train keys' places.
pub fn eval_data_config(cfg: &Config) -> Config {
    let mut e = cfg.clone();
    e.data.hf_train_files = cfg.data.hf_eval_files.clone();
    e.data.dataset_name = cfg.data.eval_dataset_name.clone();
    e.data.train_split = cfg.data.eval_split.clone();
    e.data.grain_train_files = cfg.data.grain_eval_files.clone();
    e.data.train_data_columns = cfg.data.eval_data_columns.clone();
    e.data.tokenize_train_data = cfg.data.tokenize_eval_data;
    e.data.enable_data_shuffling = false;
    e.data.num_epoch = 1;
    e.batch.global_batch_size_to_load = cfg.batch.global_batch_size_to_load_eval;
    e
}
