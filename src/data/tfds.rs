//! TFDS build directories (`dataset_type=tfds`): `dataset_path/<name>/<config>/<version>/` as
//! `tfds.builder(dataset_name, data_dir=dataset_path).download_and_prepare()` leaves it, with
//! `dataset_info.json` (the splits, their shard lengths, the file format) and the shards
//! `<name>-<split>.<format>-0000i-of-0000N` of serialized `tf.train.Example`s. Only prepared data is read:
//! there is no download, as with MaxText on a pod where `dataset_path` points at a bucket of prepared data.

use serde_json::Value;

use super::error::DataError;
use super::source::FileFormat;
use crate::storage::Location;

/// The shard files of one split, in shard order, with the record counts `dataset_info.json` gives them.
#[derive(Debug)]
pub struct SplitFiles {
    pub files: Vec<Location>,
    pub lengths: Vec<u64>,
    pub format: FileFormat,
    /// `dataset_path/<name>/<config>/<version>`.
    pub dir: Location,
}

/// `dataset_name` as TFDS parses it: `name[/config][:version]`.
fn parse_name(dataset_name: &str) -> Result<(String, Option<String>, Option<String>), DataError> {
    let bad = |reason: &str| DataError::TfdsName { name: dataset_name.into(), reason: reason.into() };
    let (path, version) = match dataset_name.trim().split_once(':') {
        Some((p, v)) => (p, Some(v.to_string())),
        None => (dataset_name.trim(), None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 2 {
        return Err(bad("expected name, name/config, name:version or name/config:version (e.g. c4/en:3.1.0)"));
    }
    if version.as_deref().is_some_and(|v| parse_version(v).is_none()) {
        return Err(bad("the version must be MAJOR.MINOR.PATCH (e.g. 3.1.0)"));
    }
    Ok((parts[0].to_string(), parts.get(1).map(|s| s.to_string()), version))
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    let out = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(out)
}

/// The files of `split` of `dataset_name` under `dataset_path`.
pub fn split_files(dataset_path: &str, dataset_name: &str, split: &str) -> Result<SplitFiles, DataError> {
    if dataset_path.trim().is_empty() {
        return Err(DataError::TfdsNoPath { name: dataset_name.into() });
    }
    let (name, config, version) = parse_name(dataset_name)?;
    let root = Location::parse(dataset_path.trim()).map_err(|e| DataError::Io { path: dataset_path.into(), source: e.into() })?;
    let io = |loc: &Location| {
        let path = std::path::PathBuf::from(loc.to_string());
        move |e: crate::storage::StorageError| DataError::Io { path, source: e.into() }
    };
    let mut base = root.join(&name);
    if let Some(c) = &config {
        base = base.join(c);
    }
    let mut found: Vec<(u64, u64, u64, String)> = base
        .list()
        .map_err(io(&base))?
        .into_iter()
        .filter(|e| e.is_dir)
        .filter_map(|e| parse_version(&e.name).map(|(a, b, c)| (a, b, c, e.name)))
        .collect();
    found.sort();
    let names: Vec<String> = found.iter().map(|v| v.3.clone()).collect();
    let chosen = match (&version, found.last()) {
        (Some(v), _) if names.contains(v) => v.clone(),
        (None, Some(last)) => last.3.clone(),
        _ => {
            return Err(DataError::TfdsVersion {
                dir: base.to_string(),
                name: dataset_name.into(),
                wanted: version.clone().unwrap_or_else(|| "any version".into()),
                found: if names.is_empty() { "none".into() } else { names.join(", ") },
            })
        }
    };
    let dir = base.join(&chosen);
    let info_loc = dir.join("dataset_info.json");
    let text = info_loc.read_to_string().map_err(io(&info_loc))?;
    let info_err = |reason: String| DataError::TfdsInfo { path: info_loc.to_string(), reason };
    let info: Value = serde_json::from_str(&text).map_err(|e| info_err(format!("not JSON: {e}")))?;
    let format = match info.get("fileFormat").and_then(Value::as_str).unwrap_or("tfrecord") {
        "tfrecord" => FileFormat::TfRecord,
        "array_record" => FileFormat::ArrayRecord,
        other => return Err(info_err(format!("fileFormat {other:?} is not read (tfrecord and array_record are)"))),
    };
    let ext = if format == FileFormat::TfRecord { "tfrecord" } else { "array_record" };
    let splits = info.get("splits").and_then(Value::as_array).ok_or_else(|| info_err("no \"splits\" list".into()))?;
    let available: Vec<&str> = splits.iter().filter_map(|s| s.get("name").and_then(Value::as_str)).collect();
    let Some(entry) = splits.iter().find(|s| s.get("name").and_then(Value::as_str) == Some(split)) else {
        return Err(DataError::TfdsSplit { dir: dir.to_string(), split: split.into(), available: available.join(", ") });
    };
    // Counts are JSON strings (proto3 int64 in JSON form); accept numbers too.
    let lengths: Vec<u64> = entry
        .get("shardLengths")
        .and_then(Value::as_array)
        .ok_or_else(|| info_err(format!("split {split:?} has no shardLengths")))?
        .iter()
        .map(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
        .collect::<Option<_>>()
        .ok_or_else(|| info_err(format!("split {split:?}: shardLengths are not integers")))?;
    let n = lengths.len();
    let template = entry.get("filepathTemplate").and_then(Value::as_str).unwrap_or("{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}");
    let files = (0..n)
        .map(|i| {
            let file = template
                .replace("{DATASET}", &name)
                .replace("{SPLIT}", split)
                .replace("{FILEFORMAT}", ext)
                .replace("{SHARD_X_OF_Y}", &format!("{i:05}-of-{n:05}"))
                .replace("{SHARD_INDEX}", &format!("{i:05}"))
                .replace("{NUM_SHARDS}", &format!("{n:05}"));
            dir.join(file)
        })
        .collect();
    Ok(SplitFiles { files, lengths, format, dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("c4/en:3.1.0").unwrap(), ("c4".into(), Some("en".into()), Some("3.1.0".into())));
        assert_eq!(parse_name("mnist").unwrap(), ("mnist".into(), None, None));
        assert!(parse_name("c4/en:3.1").unwrap_err().to_string().contains("MAJOR.MINOR.PATCH"));
        assert!(parse_name("a/b/c").is_err());
        assert_eq!(parse_version("10.2.0"), Some((10, 2, 0)));
    }
}
