//! Which files a host reads, and which share of their documents, per `dataset_type` (MaxText's rules):
//! - `hf` and `grain` with `grain_file_type=arrayrecord`: every host opens all files; each epoch's document
//!   order is split over the hosts by position (Grain's `dataset[process_index::process_count]` after a
//!   global shuffle).
//! - `tfds`, and `grain` with `grain_file_type=tfrecord|parquet`: the shard files are split over the hosts
//!   (`files[process_index::process_count]`, MaxText's `compute_file_sharding`); with fewer files than hosts
//!   each file is read by a group of hosts that take every n-th of its documents. A host shuffles only its
//!   own documents.

use super::error::DataError;
use super::source::{expand_glob, Corpus, FileFormat};
use super::tfds::split_files;
use crate::config::{Config, DatasetType, GrainFileType};
use crate::storage::Location;

/// A host's documents: the corpus it opened and its share (index, count) of each epoch's order over them.
pub struct Opened {
    pub corpus: Corpus,
    pub share_index: usize,
    pub share_count: usize,
    /// The data as the user named it, for messages.
    pub what: String,
}

/// MaxText's `compute_file_sharding`: the host's files (`first::step`) and its row shard (index, count).
pub fn file_sharding(files: usize, host: usize, hosts: usize) -> (usize, usize, (usize, usize)) {
    if files >= hosts {
        return (host, hosts, (0, 1));
    }
    let file = host % files;
    let row_index = host / files;
    let row_count = hosts / files + usize::from(file < hosts % files);
    (file, files, (row_index, row_count))
}

/// Opens the training data of `cfg` for host `process_index` of `process_count`.
pub fn open(cfg: &Config, column: &str, process_index: usize, process_count: usize) -> Result<Opened, DataError> {
    let d = &cfg.data;
    match d.dataset_type {
        DatasetType::Hf => {
            let hf_path = d.hf_path.clone().unwrap_or_default();
            let format = FileFormat::from_hf_path(&hf_path)?;
            let Some(pattern) = d.hf_train_files.clone().filter(|p| !p.is_empty()) else {
                return Err(DataError::MissingTrainFiles { hf_path });
            };
            let corpus = Corpus::open(format, &pattern, column)?;
            Ok(Opened { corpus, share_index: process_index, share_count: process_count, what: format!("hf_train_files={pattern:?}") })
        }
        DatasetType::Tfds => {
            let split = split_files(d.dataset_path.as_deref().unwrap_or(""), &d.dataset_name, &d.train_split)?;
            let what = format!("dataset_name={:?} train_split={:?} ({})", d.dataset_name, d.train_split, split.dir);
            // TFDS reads shards with parallel interleave; here a few threads read whole shards.
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
            sharded(split.format, split.files, Some(split.lengths), column, threads, process_index, process_count, what)
        }
        DatasetType::Grain => {
            let file_type = d.grain_file_type;
            let pattern = match d.grain_train_files.clone().filter(|p| !p.trim().is_empty()) {
                Some(p) => p,
                // MaxText's `construct_tfds_tfrecord_path`: a TFDS directory's shards read by Grain.
                None if file_type == GrainFileType::TfRecord && d.dataset_path.as_deref().is_some_and(|p| !p.is_empty()) => {
                    let dir = d.dataset_name.trim().trim_matches('/').replace(':', "/");
                    format!("{}/{dir}/*-{}.tfrecord-*", d.dataset_path.as_deref().unwrap().trim().trim_end_matches('/'), d.train_split)
                }
                None => return Err(DataError::MissingGrainFiles),
            };
            if pattern.contains(';') {
                return Err(DataError::GrainMixture(pattern));
            }
            let files = expand_glob(&pattern)?;
            let what = format!("grain_train_files={pattern:?}");
            // grain_worker_count: 0 is Grain's "read in the main process", -1 "as many as useful".
            let workers = match d.grain_worker_count {
                n if n > 0 => n as usize,
                0 => 1,
                _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
            };
            match file_type {
                GrainFileType::ArrayRecord => {
                    let corpus = Corpus::open_files(FileFormat::ArrayRecord, files, column, workers)?;
                    Ok(Opened { corpus, share_index: process_index, share_count: process_count, what })
                }
                GrainFileType::TfRecord | GrainFileType::Parquet => {
                    let per_host = (files.len() / process_count).max(1);
                    if d.grain_worker_count > per_host as i64 {
                        return Err(DataError::GrainWorkers { workers, files: per_host, file_type: file_type.name().into() });
                    }
                    let format = if file_type == GrainFileType::TfRecord { FileFormat::TfRecord } else { FileFormat::Parquet };
                    sharded(format, files, None, column, workers, process_index, process_count, what)
                }
            }
        }
        other => Err(DataError::UnsupportedDatasetType(other.name().to_string())),
    }
}

/// Opens the host's files of a file-sharded dataset; checks each file's record count against `lengths`.
#[allow(clippy::too_many_arguments)]
fn sharded(
    format: FileFormat,
    files: Vec<Location>,
    lengths: Option<Vec<u64>>,
    column: &str,
    threads: usize,
    process_index: usize,
    process_count: usize,
    what: String,
) -> Result<Opened, DataError> {
    if files.is_empty() {
        return Err(DataError::NoExamples { what });
    }
    let (first, step, (share_index, share_count)) = file_sharding(files.len(), process_index, process_count);
    let picked: Vec<usize> = (first..files.len()).step_by(step).collect();
    let host_files: Vec<Location> = picked.iter().map(|&i| files[i].clone()).collect();
    let corpus = Corpus::open_files(format, host_files.clone(), column, threads)?;
    if let Some(lengths) = lengths {
        for ((&i, found), loc) in picked.iter().zip(corpus.file_lens()).zip(&host_files) {
            if lengths[i] != found as u64 {
                return Err(DataError::ShardLength { path: loc.to_string().into(), expected: lengths[i], found });
            }
        }
    }
    Ok(Opened { corpus, share_index, share_count, what })
}

#[cfg(test)]
mod tests {
    use super::file_sharding;

    #[test]
    fn sharding_matches_maxtext() {
        // Values of MaxText's compute_file_sharding (input_pipeline_utils.py).
        assert_eq!(file_sharding(8, 3, 4), (3, 4, (0, 1)));
        assert_eq!(file_sharding(3, 4, 8), (1, 3, (1, 3)));
        assert_eq!(file_sharding(3, 2, 8), (2, 3, (0, 2)));
        assert_eq!(file_sharding(3, 0, 4), (0, 3, (0, 2)));
        assert_eq!(file_sharding(3, 2, 4), (2, 3, (0, 1)));
    }
}
