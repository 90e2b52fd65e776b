//! Local training files as one indexed list of documents (`dataset_type=hf`, `hf_path=json|parquet|text`,
//! `hf_train_files=GLOB`), read the way HF `datasets` reads them:
//! - `json`: JSON lines, one object per line (blank lines skipped), or a file holding one JSON array of
//!   objects; the column is a key of each object.
//! - `text`: one example per line, lines split at `\n`, `\r\n` or `\r` (Python's universal newlines) with the
//!   break removed; empty lines are examples too; the only column is `text`.
//! - `parquet`: one example per row; the column is a top-level field.
//! - TFRecord and ArrayRecord files (`dataset_type=tfds`, `dataset_type=grain`): one example per record, a
//!   serialized `tf.train.Example` whose feature is the column ([`super::records`]).
//!
//! A column value is text (a string, tokenized later) or token ids (a list of integers, used as is).
//! Files are taken in sorted path order; JSON lines and text files are memory-mapped and indexed by byte
//! span (16 bytes per document), parquet files, record files and JSON arrays are decoded into memory once.
//!
//! `hf_train_files=gs://bucket/prefix/*.jsonl` globs over the bucket's object listing. A JSON-lines or text
//! object is streamed (read-ahead) into an unlinked local file and mapped like a local one; a parquet
//! object is read in byte ranges, footer and the used column's chunks only ([`super::remote`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type as SchemaType;
use serde_json::Value;

use super::arrayrecord::arrayrecord_records;
use super::error::DataError;
use super::records::{example_doc, tfrecord_records};
use super::remote::{spool, RangedObject};
use crate::storage::{Location, StorageError};

/// One record's column value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Doc {
    Text(String),
    Ids(Vec<i64>),
}

/// `hf_path`: the local file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Parquet,
    Text,
    /// Serialized `tf.train.Example`s in TFRecord framing (TFDS shards, `grain_file_type=tfrecord`).
    TfRecord,
    /// Serialized `tf.train.Example`s in ArrayRecord files (`grain_file_type=arrayrecord`).
    ArrayRecord,
}

impl FileFormat {
    /// MaxText's `hf_path` values for local files (HF `datasets` builder names).
    pub fn from_hf_path(hf_path: &str) -> Result<FileFormat, DataError> {
        match hf_path {
            "json" => Ok(FileFormat::Json),
            "parquet" => Ok(FileFormat::Parquet),
            "text" => Ok(FileFormat::Text),
            other => Err(DataError::UnsupportedHfPath(other.to_string())),
        }
    }
}

enum Records {
    /// Memory-mapped JSON lines or text lines: byte spans of the records.
    Spans { map: Option<Mmap>, spans: Vec<(usize, usize)>, json: bool },
    /// Decoded at open: parquet rows, JSON array elements.
    Loaded { docs: Vec<Doc>, unit: &'static str },
}

struct SourceFile {
    path: PathBuf,
    records: Records,
}

/// Every document of the training files, addressed by a global index (files in sorted path order).
pub struct Corpus {
    files: Vec<SourceFile>,
    /// `starts[f]`: global index of file f's first document; one extra entry holds the total.
    starts: Vec<usize>,
    column: String,
    /// Bytes read from `gs://` objects while opening (whole JSON-lines objects, parquet footers and chunks).
    remote_bytes: u64,
}

impl Corpus {
    /// Expands `pattern`, opens and indexes every file, and checks the column in each file's first record.
    pub fn open(format: FileFormat, pattern: &str, column: &str) -> Result<Corpus, DataError> {
        Corpus::open_files(format, expand_glob(pattern)?, column, 1)
    }

    /// Opens `files` in this order with `threads` reader threads (Grain's `grain_worker_count`: each
    /// thread reads and decodes whole files), and checks the column in each file's first record.
    pub fn open_files(format: FileFormat, paths: Vec<Location>, column: &str, threads: usize) -> Result<Corpus, DataError> {
        if format == FileFormat::Text && column != "text" {
            return Err(DataError::MissingColumn {
                path: PathBuf::from(paths[0].to_string()),
                record: "text file".into(),
                column: column.into(),
                available: "text (the only column of hf_path=text)".into(),
            });
        }
        let opened = read_parallel(&paths, threads.clamp(1, paths.len().max(1)), |loc| open_file(format, loc, column));
        let mut files = Vec::with_capacity(paths.len());
        let mut starts = vec![0];
        let mut remote_bytes = 0;
        for result in opened {
            let (file, bytes) = result?;
            remote_bytes += bytes;
            starts.push(starts.last().unwrap() + file.len());
            files.push(file);
        }
        let corpus = Corpus { files, starts, column: column.to_string(), remote_bytes };
        // Check the column of each file's first record now, not steps into training.
        for (f, &start) in corpus.files.iter().zip(&corpus.starts) {
            if f.len() > 0 {
                corpus.get(start)?;
            }
        }
        Ok(corpus)
    }

    pub fn len(&self) -> usize {
        *self.starts.last().unwrap()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes read from `gs://` objects to open the corpus (0 for local files).
    pub fn remote_bytes(&self) -> u64 {
        self.remote_bytes
    }

    pub fn num_files(&self) -> usize {
        self.files.len()
    }

    /// Documents in each file, in file order.
    pub fn file_lens(&self) -> Vec<usize> {
        self.files.iter().map(SourceFile::len).collect()
    }

    fn file_of(&self, index: usize) -> (usize, usize) {
        assert!(index < self.len(), "document {index} of {}", self.len());
        let f = self.starts.partition_point(|&s| s <= index) - 1;
        (f, index - self.starts[f])
    }

    /// The file and record ("line 12", "row 3") of document `index`, for error messages.
    pub fn locate(&self, index: usize) -> (PathBuf, String) {
        let (f, i) = self.file_of(index);
        let file = &self.files[f];
        let record = match &file.records {
            Records::Spans { map, spans, .. } => {
                let start = spans[i].0;
                let line = map.as_ref().map_or(0, |m| line_number(m, start));
                format!("line {line}")
            }
            Records::Loaded { unit, .. } => format!("{unit} {i}"),
        };
        (file.path.clone(), record)
    }

    /// Document `index`: its column value.
    pub fn get(&self, index: usize) -> Result<Doc, DataError> {
        let (f, i) = self.file_of(index);
        let file = &self.files[f];
        match &file.records {
            Records::Loaded { docs, .. } => Ok(docs[i].clone()),
            Records::Spans { map, spans, json } => {
                let (s, e) = spans[i];
                let bytes = &map.as_ref().expect("a file with records is mapped")[s..e];
                let text = std::str::from_utf8(bytes).map_err(|_| DataError::Utf8 {
                    path: file.path.clone(),
                    line: line_number(map.as_ref().unwrap(), s),
                })?;
                if !json {
                    return Ok(Doc::Text(text.to_string()));
                }
                let record = || format!("line {}", line_number(map.as_ref().unwrap(), s));
                let value: Value = serde_json::from_str(text).map_err(|e| DataError::Json {
                    path: file.path.clone(),
                    record: record(),
                    reason: e.to_string(),
                })?;
                doc_from_json(&value, &self.column, &file.path, &record())
            }
        }
    }
}

impl SourceFile {
    fn len(&self) -> usize {
        match &self.records {
            Records::Spans { spans, .. } => spans.len(),
            Records::Loaded { docs, .. } => docs.len(),
        }
    }
}

/// The files of `hf_train_files` (local paths, or `gs://` objects listed under the pattern's fixed
/// prefix), sorted; directories are skipped.
pub fn expand_glob(pattern: &str) -> Result<Vec<Location>, DataError> {
    let paths = Location::glob(pattern).map_err(|e| match e {
        StorageError::BadPath { reason, .. } => DataError::BadGlob { pattern: pattern.into(), reason },
        other => DataError::Listing { pattern: pattern.into(), source: other },
    })?;
    if paths.is_empty() {
        return Err(DataError::NoFiles { pattern: pattern.into() });
    }
    Ok(paths)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io { path: path.to_path_buf(), source }
}

fn storage_err(path: &Path) -> impl FnOnce(StorageError) -> DataError + '_ {
    move |e| DataError::Io { path: path.to_path_buf(), source: e.into() }
}

/// Opens one file; returns it and the bytes read from a bucket for it.
fn open_file(format: FileFormat, loc: &Location, column: &str) -> Result<(SourceFile, u64), DataError> {
    // Errors name the file as the user wrote it (`gs://bucket/key` or the local path).
    let path = PathBuf::from(loc.to_string());
    let mut remote_bytes = 0;
    let records = match (format, loc) {
        (FileFormat::Json | FileFormat::Text, Location::Local(p)) => {
            let file = File::open(p).map_err(io_err(&path))?;
            open_lines(file, &path, format == FileFormat::Json, column)?
        }
        (FileFormat::Json | FileFormat::Text, Location::Gcs { .. }) => {
            let file = spool(loc).map_err(storage_err(&path))?;
            remote_bytes += file.metadata().map_err(io_err(&path))?.len();
            open_lines(file, &path, format == FileFormat::Json, column)?
        }
        (FileFormat::Parquet, Location::Local(p)) => {
            let file = File::open(p).map_err(io_err(&path))?;
            Records::Loaded { docs: read_parquet(file, None, &path, column)?, unit: "row" }
        }
        (FileFormat::Parquet, Location::Gcs { .. }) => {
            let object = RangedObject::open(loc).map_err(storage_err(&path))?;
            let docs = read_parquet(object.clone(), Some(&object), &path, column)?;
            remote_bytes += object.fetched_bytes();
            Records::Loaded { docs, unit: "row" }
        }
        (FileFormat::TfRecord | FileFormat::ArrayRecord, _) => {
            // Record files are read whole (shards are written to be read sequentially) and decoded once.
            let bytes = loc.read().map_err(storage_err(&path))?;
            if loc.is_remote() {
                remote_bytes += bytes.len() as u64;
            }
            let raw = match format {
                FileFormat::TfRecord => tfrecord_records(&bytes, &path)?,
                _ => arrayrecord_records(&bytes, &path)?,
            };
            let docs = raw.iter().enumerate().map(|(i, r)| example_doc(r, column, &path, &format!("record {i}"))).collect::<Result<_, _>>()?;
            Records::Loaded { docs, unit: "record" }
        }
    };
    Ok((SourceFile { path, records }, remote_bytes))
}

/// `f` over `items` on `threads` threads, results in item order.
fn read_parallel<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { return done };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a data reader thread panicked")).collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn open_lines(file: File, path: &Path, json: bool, column: &str) -> Result<Records, DataError> {
    let size = file.metadata().map_err(io_err(path))?.len();
    if size == 0 {
        return Ok(Records::Spans { map: None, spans: Vec::new(), json });
    }
    // SAFETY: the file is only read; a training file changed while training is a user error whose effect
    // is limited to reading changed bytes (UTF-8 and JSON are validated on every read).
    let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
    if json {
        if let Some(&first) = map.iter().find(|b| !b.is_ascii_whitespace()) {
            if first == b'[' {
                return Ok(Records::Loaded { docs: read_json_array(path, &map, column)?, unit: "element" });
            }
        }
    }
    let mut spans = split_lines(&map);
    if json {
        spans.retain(|&(s, e)| !map[s..e].iter().all(|b| b.is_ascii_whitespace()));
    }
    Ok(Records::Spans { map: Some(map), spans, json })
}

/// Line spans under Python's universal newlines: `\n`, `\r\n` and `\r` end a line; a last line without
/// a break counts; the break is not part of the span.
pub fn split_lines(b: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        let brk = match b[i] {
            b'\n' => 1,
            b'\r' if b.get(i + 1) == Some(&b'\n') => 2,
            b'\r' => 1,
            _ => 0,
        };
        if brk > 0 {
            spans.push((start, i));
            i += brk;
            start = i;
        } else {
            i += 1;
        }
    }
    if start < b.len() {
        spans.push((start, b.len()));
    }
    spans
}

/// 1-based line number of byte `offset` (counts `\n`; only used for messages).
fn line_number(b: &[u8], offset: usize) -> usize {
    1 + b[..offset].iter().filter(|&&c| c == b'\n').count()
}

fn read_json_array(path: &Path, bytes: &[u8], column: &str) -> Result<Vec<Doc>, DataError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| DataError::Json {
        path: path.into(),
        record: "the top-level array".into(),
        reason: e.to_string(),
    })?;
    let Value::Array(items) = value else {
        return Err(DataError::Json { path: path.into(), record: "the file".into(), reason: "expected an array".into() });
    };
    items.iter().enumerate().map(|(i, v)| doc_from_json(v, column, path, &format!("element {i}"))).collect()
}

/// `{"text": "..."}` or `{"ids": [1, 2]}` -> the column's value.
pub fn doc_from_json(value: &Value, column: &str, path: &Path, record: &str) -> Result<Doc, DataError> {
    let Value::Object(obj) = value else {
        return Err(DataError::Json { path: path.into(), record: record.into(), reason: "expected a JSON object".into() });
    };
    let Some(v) = obj.get(column) else {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        return Err(DataError::MissingColumn {
            path: path.into(),
            record: record.into(),
            column: column.into(),
            available: keys.join(", "),
        });
    };
    let type_err = |found: String| DataError::ColumnType { path: path.into(), record: record.into(), column: column.into(), found };
    match v {
        Value::String(s) => Ok(Doc::Text(s.clone())),
        Value::Array(items) => {
            let ids: Option<Vec<i64>> = items.iter().map(|x| x.as_i64().filter(|&i| i >= 0)).collect();
            ids.map(Doc::Ids).ok_or_else(|| type_err(format!("a list that is not all non-negative integers ({})", short(v))))
        }
        Value::Null => Err(type_err("null".into())),
        Value::Bool(_) => Err(type_err(format!("a boolean ({v})"))),
        Value::Number(_) => Err(type_err(format!("a number ({v})"))),
        Value::Object(_) => Err(type_err(format!("an object ({})", short(v)))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}...", &s[..s.char_indices().take_while(|(i, _)| *i < 57).last().map_or(0, |(i, c)| i + c.len_utf8())])
    } else {
        s
    }
}

/// The column of every row of a parquet file. With `remote` (the same object as `file`), the column's
/// chunks are fetched first, one ranged read per row group, so that decoding reads only fetched bytes.
fn read_parquet<R: ChunkReader + 'static>(file: R, remote: Option<&RangedObject>, path: &Path, column: &str) -> Result<Vec<Doc>, DataError> {
    let perr = |reason: String| DataError::Parquet { path: path.into(), reason };
    let reader = SerializedFileReader::new(file).map_err(|e| perr(format!("not a readable parquet file: {e}")))?;
    let root = reader.metadata().file_metadata().schema();
    let Some(field) = root.get_fields().iter().find(|f| f.name() == column) else {
        let names: Vec<&str> = root.get_fields().iter().map(|f| f.name()).collect();
        return Err(DataError::MissingColumn {
            path: path.into(),
            record: "schema".into(),
            column: column.into(),
            available: names.join(", "),
        });
    };
    check_parquet_type(field).map_err(|found| DataError::ColumnType {
        path: path.into(),
        record: "schema".into(),
        column: column.into(),
        found,
    })?;
    if let Some(object) = remote {
        let meta = reader.metadata();
        let leaves: Vec<usize> = (0..meta.file_metadata().schema_descr().num_columns())
            .filter(|&i| meta.file_metadata().schema_descr().column(i).path().parts()[0] == column)
            .collect();
        for rg in meta.row_groups() {
            for &i in &leaves {
                let (start, len) = rg.column(i).byte_range();
                object.fetch(start, len).map_err(|e| perr(format!("reading column {column:?}: {e}")))?;
            }
        }
    }
    let projection = SchemaType::group_type_builder(root.name())
        .with_fields(vec![field.clone()])
        .build()
        .map_err(|e| perr(e.to_string()))?;
    let rows = reader.get_row_iter(Some(projection)).map_err(|e| perr(format!("reading column {column:?}: {e}")))?;
    let mut docs = Vec::with_capacity(reader.metadata().file_metadata().num_rows().max(0) as usize);
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| perr(format!("row {i}: {e}")))?;
        let (_, value) = row.get_column_iter().next().ok_or_else(|| perr(format!("row {i}: no value")))?;
        let type_err = |found: String| DataError::ColumnType {
            path: path.into(),
            record: format!("row {i}"),
            column: column.into(),
            found,
        };
        docs.push(match value {
            Field::Str(s) => Doc::Text(s.clone()),
            Field::ListInternal(list) => {
                let ids: Option<Vec<i64>> = list.elements().iter().map(field_int).collect();
                Doc::Ids(ids.ok_or_else(|| type_err(format!("a list that is not all non-negative integers ({value})")))?)
            }
            Field::Null => return Err(type_err("null".into())),
            other => return Err(type_err(format!("{other}"))),
        });
    }
    Ok(docs)
}

fn field_int(f: &Field) -> Option<i64> {
    let v = match *f {
        Field::Byte(v) => v as i64,
        Field::Short(v) => v as i64,
        Field::Int(v) => v as i64,
        Field::Long(v) => v,
        Field::UByte(v) => v as i64,
        Field::UShort(v) => v as i64,
        Field::UInt(v) => v as i64,
        Field::ULong(v) => i64::try_from(v).ok()?,
        _ => return None,
    };
    (v >= 0).then_some(v)
}

/// Text (UTF-8 byte array) or a list of integers; anything else is described for the error.
fn check_parquet_type(field: &SchemaType) -> Result<(), String> {
    if field.is_primitive() {
        let info = field.get_basic_info();
        let is_string = matches!(info.logical_type_ref(), Some(LogicalType::String) | Some(LogicalType::Json))
            || matches!(info.converted_type(), ConvertedType::UTF8 | ConvertedType::JSON);
        let is_int = matches!(field.get_physical_type(), PhysicalType::INT32 | PhysicalType::INT64);
        if field.get_physical_type() == PhysicalType::BYTE_ARRAY && is_string {
            return Ok(());
        }
        // A bare `repeated int64` field is a list in the legacy layout.
        if is_int && info.has_repetition() && info.repetition() == Repetition::REPEATED {
            return Ok(());
        }
        let what = if field.get_physical_type() == PhysicalType::BYTE_ARRAY { "binary".to_string() } else { format!("{:?}", field.get_physical_type()).to_lowercase() };
        return Err(format!("{what} values"));
    }
    let is_list = matches!(field.get_basic_info().logical_type_ref(), Some(LogicalType::List))
        || field.get_basic_info().converted_type() == ConvertedType::LIST;
    if !is_list {
        return Err("a struct".into());
    }
    // LIST -> repeated group -> element (or the two-level form: LIST -> repeated element).
    let mut leaf = field;
    while !leaf.is_primitive() {
        match leaf.get_fields() {
            [only] => leaf = only,
            _ => return Err("a list of structs".into()),
        }
    }
    match leaf.get_physical_type() {
        PhysicalType::INT32 | PhysicalType::INT64 => Ok(()),
        PhysicalType::BYTE_ARRAY => Err("a list of strings".into()),
        other => Err(format!("a list of {}", format!("{other:?}").to_lowercase())),
    }
}
