//! MaxText's `nnx_aux` subtree of the train state: the NNX RNG streams (`rngs.<stream>.{key, count}`) that
//! MaxText 0.2.5's NNX Qwen3-Next keeps as non-parameter state and saves with every full-state checkpoint.
//! MaxText restores a full state against its own abstract tree, so a checkpoint without these leaves
//! is rejected; we write them (and carry them through a resume) although our train step never reads
//! them: with Qwen3-Next's `dropout_rate=0` and no AQT quantisation no stream is ever drawn from.
//!
//! Layout for the scanned decoder (`scan_layers=true`, B = num_decoder_layers / interval blocks,
//! L = interval - 1 Gated DeltaNet layers per block), as in the checkpoint MaxText wrote
//! (`tests/fixtures/maxtext_qwen3next_tiny_trimmed`):
//! ```text
//! nnx_aux.model.decoder.rngs.<s>.{count [], key [4]}
//! nnx_aux.model.decoder.layers.global_layer.attention.attention.rngs.<s>.{count [B], key [B,4]}
//! nnx_aux.model.decoder.layers.local_layers.mlp.routed_experts.rngs.<s>.{count [B,L], key [B,L,4]}
//! ```
//! for the streams s = aqt, dropout, params. Unscanned (`scan_layers=false`) MaxText saves only
//! `nnx_aux.model.decoder.layers_0.mlp.routed_experts.rngs.<s>.{count [], key [4]}`. Counts are uint32; keys are the uint32 data of JAX
//! `unsafe_rbg` PRNG keys (4 words each), which orbax marks in `array_metadatas` so that it restores them
//! as typed key arrays.
//!
//! Values: a fresh run cannot reproduce the keys MaxText derives at init (that needs JAX's threefry and
//! NNX's fork order), so it writes keys hashed from `init_weights_seed` and counts of 0: valid keys for
//! MaxText, and never used by either program's train step. A resumed run carries the checkpoint's values
//! unchanged, so MaxText's own streams survive a round trip through our training.

use super::orbax::{LeafInfo, OrbaxCheckpoint, OrbaxError, ZarrDType};
use super::train_state::TrainStateError;
use crate::config::ModelConfig;
use crate::ir::DType;
use crate::runtime::HostTensor;

/// The JAX PRNG implementation of MaxText's keys (`jax.config.jax_default_prng_impl`, MaxText's default).
pub const KEY_IMPL: &str = "unsafe_rbg";
/// uint32 words per `unsafe_rbg` key.
const KEY_WORDS: i64 = 4;
/// The NNX streams MaxText's modules hold, in orbax's (sorted) order.
const STREAMS: [&str; 3] = ["aqt", "dropout", "params"];

/// One `nnx_aux` leaf: its orbax name, value, and whether it is PRNG key data.
#[derive(Clone, Debug, PartialEq)]
pub struct AuxLeaf {
    pub name: String,
    pub value: HostTensor,
    pub prng_key: bool,
}

/// The `nnx_aux` leaves MaxText saves for this model, with fresh values (see the module docs). Empty for
/// layouts whose MaxText tree has no RNG state recorded here (decoders other than the hybrid
/// Qwen3-Next ones): there nothing is written, as before.
pub fn fresh(model: &ModelConfig, scan_layers: bool, seed: u64) -> Vec<AuxLeaf> {
    if !model.is_hybrid_linear_attention() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut add = |prefix: &str, batch: &[i64]| {
        for s in STREAMS {
            let base = format!("nnx_aux.model.decoder.{prefix}rngs.{s}");
            let n: i64 = batch.iter().product();
            out.push(AuxLeaf { name: format!("{base}.count"), value: HostTensor::from_u32(&vec![0; n as usize], batch), prng_key: false });
            let words: Vec<u32> = (0..n * KEY_WORDS).map(|i| key_word(seed, &base, i as u64)).collect();
            let dims: Vec<i64> = batch.iter().copied().chain([KEY_WORDS]).collect();
            out.push(AuxLeaf { name: format!("{base}.key"), value: HostTensor::from_u32(&words, &dims), prng_key: true });
        }
    };
    let interval = model.inhomogeneous_layer_cycle_interval as i64;
    if scan_layers {
        add("", &[]);
        let blocks = model.num_scan_blocks() as i64;
        add("layers.global_layer.attention.attention.", &[blocks]);
        add("layers.local_layers.mlp.routed_experts.", &[blocks, interval - 1]);
    } else {
        // Unscanned, every module shares the decoder's one `Rngs`, and NNX records a shared object once,
        // at the first path its sorted traversal meets (MaxText 0.2.5 with scan_layers=false saves only this).
        add("layers_0.mlp.routed_experts.", &[]);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// splitmix64 of (seed, leaf, word): distinct, reproducible key words per leaf.
fn key_word(seed: u64, leaf: &str, i: u64) -> u32 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for b in leaf.bytes().chain(i.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)) as u32
}

/// The `nnx_aux` leaves to keep when resuming from `ck`: the checkpoint's values where it has the
/// subtree (a MaxText checkpoint, or one of ours), else `fresh` (a checkpoint written before we saved
/// `nnx_aux`). A leaf of another shape or dtype means another model: an error naming it.
pub fn carried(ck: &OrbaxCheckpoint, fresh: Vec<AuxLeaf>) -> Result<Vec<AuxLeaf>, TrainStateError> {
    if !ck.leaves().iter().any(|l| l.name.starts_with("nnx_aux.")) {
        return Ok(fresh);
    }
    let dir = ck.dir().clone();
    fresh
        .into_iter()
        .map(|leaf| {
            let info: &LeafInfo = ck.leaf(&leaf.name).ok_or_else(|| OrbaxError::NoSuchLeaf {
                dir: dir.clone(),
                name: leaf.name.clone(),
                hint: " (its nnx_aux subtree is not the one this model's MaxText train state has: another model or scan_layers)".into(),
            })?;
            let want: Vec<u64> = leaf.value.dims.iter().map(|d| *d as u64).collect();
            if info.dtype != Some(ZarrDType::from_host(DType::U32)) || info.shape.as_ref() != Some(&want) {
                let got = format!("{}{:?}", info.dtype.map_or("?".into(), |d| d.to_string()), info.shape.clone().unwrap_or_default());
                return Err(TrainStateError::Shape { dir: dir.clone(), leaf: leaf.name, got, want: format!("uint32{want:?}") });
            }
            Ok(AuxLeaf { value: ck.read(&leaf.name)?, ..leaf })
        })
        .collect()
}
