//! Record files of serialized `tf.train.Example`s: TFRecord (TFDS shards, `grain_file_type=tfrecord`) and
//! ArrayRecord (`grain_file_type=arrayrecord`, [`super::arrayrecord`]), and the column of an Example as a
//! [`Doc`] the way MaxText's `ParseFeatures` / TFDS's `Text` feature read it.

use std::path::Path;

use prost::Message;

use super::error::DataError;
use super::source::Doc;

/// `tf.train.Example` generated from `proto/tf_example.proto` by build.rs.
#[allow(clippy::all, missing_docs)]
pub mod tf {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
}

/// ArrayRecord's footer messages generated from `proto/array_record.proto` by build.rs.
#[allow(clippy::all, missing_docs)]
pub mod layout {
    include!(concat!(env!("OUT_DIR"), "/array_record.rs"));
}

/// TFRecord's masked CRC-32C (the same function the TensorBoard writer frames its events with).
fn masked_crc32c(bytes: &[u8]) -> u32 {
    crate::metrics::tfrecord::masked_crc32c(bytes)
}

/// The records of a TFRecord file (`u64 len · u32 masked_crc(len) · data · u32 masked_crc(data)` each),
/// with both checksums verified: a damaged shard fails here, naming the record, not as a bad Example later.
pub fn tfrecord_records(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>, DataError> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let bad = |i: usize, at: usize, reason: String| DataError::Record {
        path: path.into(),
        record: format!("TFRecord record {i} (byte {at})"),
        reason,
    };
    while pos < bytes.len() {
        let i = records.len();
        if bytes.len() - pos < 12 {
            return Err(bad(i, pos, format!("the file ends inside a record header ({} bytes left)", bytes.len() - pos)));
        }
        let len_bytes = &bytes[pos..pos + 8];
        let want = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        if want != masked_crc32c(len_bytes) {
            return Err(bad(i, pos, "the length's CRC-32C does not match (damaged file, or not a TFRecord file)".into()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap());
        let start = pos + 12;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).filter(|&e| e + 4 <= bytes.len());
        let Some(end) = end else {
            return Err(bad(i, pos, format!("a record of {len} bytes runs past the end of the file (truncated file?)")));
        };
        let data = &bytes[start..end];
        let want = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
        if want != masked_crc32c(data) {
            return Err(bad(i, pos, "the data's CRC-32C does not match: the record is damaged; re-create the file".into()));
        }
        records.push(data.to_vec());
        pos = end + 4;
    }
    Ok(records)
}

/// The column of a serialized `tf.train.Example`: a bytes feature is text (its first value, UTF-8), an int64
/// feature is token ids. As in MaxText's `ParseFeatures`, a missing `text` column falls back to `messages`.
pub fn example_doc(record: &[u8], column: &str, path: &Path, what: &str) -> Result<Doc, DataError> {
    let example = tf::Example::decode(record).map_err(|e| DataError::Record {
        path: path.into(),
        record: what.into(),
        reason: format!("not a serialized tf.train.Example: {e}"),
    })?;
    let features = example.features.unwrap_or_default().feature;
    let feature = features.get(column).or_else(|| (column == "text").then(|| features.get("messages")).flatten());
    let Some(feature) = feature else {
        let mut keys: Vec<&str> = features.keys().map(String::as_str).collect();
        keys.sort();
        return Err(DataError::MissingColumn { path: path.into(), record: what.into(), column: column.into(), available: keys.join(", ") });
    };
    let type_err = |found: String| DataError::ColumnType { path: path.into(), record: what.into(), column: column.into(), found };
    use tf::feature::Kind;
    match &feature.kind {
        Some(Kind::BytesList(b)) => match b.value.as_slice() {
            [first, ..] => String::from_utf8(first.clone()).map(Doc::Text).map_err(|_| type_err("bytes that are not UTF-8 text".into())),
            [] => Err(type_err("an empty bytes list".into())),
        },
        Some(Kind::Int64List(l)) => {
            if let Some(&v) = l.value.iter().find(|&&v| v < 0) {
                return Err(type_err(format!("a negative token id ({v})")));
            }
            Ok(Doc::Ids(l.value.clone()))
        }
        Some(Kind::FloatList(_)) => Err(type_err("float values".into())),
        None => Err(type_err("an empty feature".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn example(features: Vec<(&str, tf::feature::Kind)>) -> Vec<u8> {
        let feature: HashMap<String, tf::Feature> =
            features.into_iter().map(|(k, v)| (k.to_string(), tf::Feature { kind: Some(v) })).collect();
        tf::Example { features: Some(tf::Features { feature: feature.into_iter().collect() }) }.encode_to_vec()
    }

    #[test]
    fn tfrecord_framing_and_crc() {
        let mut file = Vec::new();
        for r in [&b"one"[..], b"", b"three"] {
            crate::metrics::tfrecord::frame_record(r, &mut file);
        }
        let p = Path::new("f");
        assert_eq!(tfrecord_records(&file, p).unwrap(), vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        let mut bad = file.clone();
        bad[12] ^= 1; // first record's data
        let e = tfrecord_records(&bad, p).unwrap_err().to_string();
        assert!(e.contains("record 0") && e.contains("CRC-32C"), "{e}");
        let e = tfrecord_records(&file[..file.len() - 2], p).unwrap_err().to_string();
        assert!(e.contains("record 2") && e.contains("past the end"), "{e}");
    }

    #[test]
    fn example_columns() {
        use tf::feature::Kind;
        let p = Path::new("f");
        let text = example(vec![("text", Kind::BytesList(tf::BytesList { value: vec![b"hi".to_vec()] }))]);
        assert_eq!(example_doc(&text, "text", p, "r").unwrap(), Doc::Text("hi".into()));
        let ids = example(vec![("ids", Kind::Int64List(tf::Int64List { value: vec![3, 4] }))]);
        assert_eq!(example_doc(&ids, "ids", p, "r").unwrap(), Doc::Ids(vec![3, 4]));
        let e = example_doc(&ids, "text", p, "r").unwrap_err().to_string();
        assert!(e.contains("no column \"text\" (columns: ids)"), "{e}");
        let f = example(vec![("x", Kind::FloatList(tf::FloatList { value: vec![1.0] }))]);
        assert!(example_doc(&f, "x", p, "r").unwrap_err().to_string().contains("float values"));
        let msgs = example(vec![("messages", Kind::BytesList(tf::BytesList { value: vec![b"m".to_vec()] }))]);
        assert_eq!(example_doc(&msgs, "text", p, "r").unwrap(), Doc::Text("m".into()));
        assert!(example_doc(b"\xff\xff", "text", p, "r").unwrap_err().to_string().contains("not a serialized tf.train.Example"));
    }
}
