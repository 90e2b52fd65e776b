"""Writes the TFDS and Grain (ArrayRecord) fixtures of tests/data_tfds_grain.rs with the real libraries.

Outputs, under tests/fixtures/tfds_grain/ (small, committed; CI never installs TensorFlow):
- tfds/shakespeare_lines/tempest/1.0.0/: a TFDS build directory written by tensorflow-datasets
  (`dataset_info.json`, `features.json`, `shakespeare_lines-{train,validation}.tfrecord-0000i-of-0000N`),
  each split in 3 shards; each example is a tf.train.Example with features `text` (a speech of
  The Tempest) and `idx` (int64).
- arrayrecord/tempest-0000i-of-00003.arrayrecord: the same speeches as serialized tf.train.Example, written
  by array_record's ArrayRecordWriter with the options MaxText's converter uses ("group_size:1") and two
  others (snappy with groups of 8, brotli), so that several riegeli chunk layouts are covered.
- expected.json: for every record file, the texts its records hold, in file order, as read back with
  TensorFlow (`tf.data.TFRecordDataset`) and array_record's reader; and TFDS's shard lengths.

Run in a private venv (see the README's "Test fixtures" note):
    ~/.pyenv/versions/3.12.1/bin/python -m venv ~/.cache/maxtext-rs/tfds-venv
    ~/.cache/maxtext-rs/tfds-venv/bin/pip install tensorflow-cpu tensorflow-datasets array-record
    ~/.cache/maxtext-rs/tfds-venv/bin/python scripts/make_tfds_grain_fixtures.py
Versions used for the committed files: tensorflow-cpu 2.21.0, tensorflow-datasets 4.9.10, array-record 0.8.6.
"""

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: keep its startup noise out

import tensorflow as tf
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tfds_grain"
SOURCE = ROOT / "assets" / "text" / "shakespeare" / "tempest_gut.txt"
# Lines of the play used: enough for a few hundred short documents' worth of tokens, a small fixture.
LINES = 420


def speeches():
    """The first LINES lines of The Tempest split at blank lines: one document per speech."""
    lines = SOURCE.read_text(encoding="utf-8").splitlines()[:LINES]
    docs, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            docs.append("\n".join(cur))
            cur = []
    if cur:
        docs.append("\n".join(cur))
    return docs


DOCS = speeches()
# Every seventh speech goes to validation; the rest train.
SPLITS = {
    "train": [(i, d) for i, d in enumerate(DOCS) if i % 7 != 3],
    "validation": [(i, d) for i, d in enumerate(DOCS) if i % 7 == 3],
}


class ShakespeareLines(tfds.core.GeneratorBasedBuilder):
    """Speeches of a Shakespeare play, one example per speech."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="tempest", description="The Tempest")]
    # TFDS looks for README/CITATIONS files next to the builder's module; this script is a file, not a package.
    pkg_dir_path = OUT


    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"text": tfds.features.Text(), "idx": tf.int64}),
        )

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(examples) for name, examples in SPLITS.items()}

    def _generate_examples(self, examples):
        for i, text in examples:
            yield i, {"text": text, "idx": i}


def example_bytes(i, text):
    """A tf.train.Example as MaxText's converter writes them: the text as a bytes feature."""
    feature = {
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")])),
        "idx": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def text_of(record):
    return tf.train.Example.FromString(record).features.feature["text"].bytes_list.value[0].decode("utf-8")


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    expected = {"documents": len(DOCS), "files": {}}

    # TFDS: the real builder machinery (GeneratorBasedBuilder -> download_and_prepare) writes the directory.
    tfds_dir = OUT / "tfds"
    builder = ShakespeareLines(data_dir=str(tfds_dir), config="tempest")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
    # num_shards applies to every split. The shard lengths come from dataset_info, as TFDS reads them.
    version_dir = Path(builder.data_dir)
    for name, split in builder.info.splits.items():
        expected.setdefault("shard_lengths", {})[name] = list(split.shard_lengths)
    for f in sorted(version_dir.glob("*.tfrecord-*")):
        texts = [text_of(r.numpy()) for r in tf.data.TFRecordDataset(str(f))]
        expected["files"][str(f.relative_to(OUT))] = texts
    # Everything a split holds, as TFDS reads it back (to check that the shard files are the whole split).
    for name in builder.info.splits.keys():
        ds = builder.as_dataset(split=name, shuffle_files=False)
        expected.setdefault("split_texts_sorted", {})[name] = sorted(ex["text"].numpy().decode("utf-8") for ex in ds)

    # ArrayRecord: the same examples in 3 files, written with 3 option strings.
    ar_dir = OUT / "arrayrecord"
    ar_dir.mkdir()
    examples = list(enumerate(DOCS))
    parts = [examples[k::3] for k in range(3)]
    options = ["group_size:1", "group_size:8,snappy", "group_size:4,brotli:6"]
    for k, (part, opts) in enumerate(zip(parts, options)):
        path = ar_dir / f"tempest-{k:05d}-of-00003.arrayrecord"
        w = ArrayRecordWriter(str(path), opts)
        for i, text in part:
            w.write(example_bytes(i, text))
        w.close()
        r = ArrayRecordReader(str(path))
        records = r.read_all()
        r.close()
        expected["files"][str(path.relative_to(OUT))] = [text_of(b) for b in records]
        expected.setdefault("arrayrecord_options", {})[path.name] = opts

    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total} bytes, {len(DOCS)} speeches)")


if __name__ == "__main__":
    main()
