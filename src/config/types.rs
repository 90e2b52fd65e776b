//! The config's enums: MaxText's string-valued keys as Rust types. Names parse case-insensitively; the first
//! name listed for a variant is the one printed.

use std::fmt;

use super::raw::ConfigEnum;

macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = [$($text:literal),+]),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl ConfigEnum for $name {
            const VARIANTS: &'static [(&'static str, Self)] = &[$($(($text, $name::$variant)),+),+];
        }

        impl $name {
            /// The canonical config spelling.
            pub fn name(self) -> &'static str {
                Self::VARIANTS.iter().find(|(_, v)| *v == self).map(|(n, _)| *n).unwrap_or("?")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$name as ConfigEnum>::parse(s).ok_or_else(|| {
                    let names: Vec<&str> = Self::VARIANTS.iter().map(|(n, _)| *n).collect();
                    format!("`{s}` is not one of {}", names.join(", "))
                })
            }
        }
    };
}

config_enum! {
    /// `hardware`: which PJRT plugin runs the programs.
    Hardware {
        Cpu = ["cpu"],
        /// MaxText's `gpu_multiprocess` is the same plugin here.
        Gpu = ["gpu", "gpu_multiprocess", "cuda"],
        Tpu = ["tpu"],
    }
}

config_enum! {
    /// `dataset_type`.
    DatasetType {
        Synthetic = ["synthetic"],
        Hf = ["hf"],
        Grain = ["grain"],
        Tfds = ["tfds"],
        C4Mlperf = ["c4_mlperf"],
        OlmoGrain = ["olmo_grain"],
    }
}

config_enum! {
    /// `grain_file_type`.
    GrainFileType {
        ArrayRecord = ["arrayrecord"],
        Parquet = ["parquet"],
        TfRecord = ["tfrecord"],
    }
}

config_enum! {
    /// `tokenizer_type`.
    TokenizerType {
        SentencePiece = ["sentencepiece"],
        HuggingFace = ["huggingface"],
        Tiktoken = ["tiktoken"],
    }
}

config_enum! {
    /// `remat_policy`: which activations the backward pass recomputes (full = all, fastest to slowest
    /// in MaxText's list: minimal_with_context ... full).
    RematPolicy {
        Full = ["full"],
        Minimal = ["minimal"],
        MinimalWithContext = ["minimal_with_context"],
        SaveDotWithContextExceptMlp = ["save_dot_with_context_except_mlp"],
        SaveDotExceptMlpwi = ["save_dot_except_mlpwi"],
        SaveDotExceptMlp = ["save_dot_except_mlp"],
        SaveQkvProj = ["save_qkv_proj"],
        QkvProjOffloaded = ["qkv_proj_offloaded"],
        Custom = ["custom"],
        MinimalOffloaded = ["minimal_offloaded"],
        SaveOutProj = ["save_out_proj"],
    }
}

/// The projections MaxText's policies save (decoders.py `get_remat_policy`), grouped as it lists them.
const QKV: [&str; 5] = ["query_proj", "value_proj", "key_proj", "kv_proj", "qkv_proj"];
const MLP: [&str; 4] = ["mlpwi_0", "mlpwi_1", "mlpwi", "mlpwo"];

impl RematPolicy {
    /// The `checkpoint_name` tags this policy keeps on the device (MaxText's `save_only_these_names`
    /// lists; `full` keeps none). `custom` takes its names from the per-tensor keys, and the offloading
    /// policies keep nothing on the device (they move their names to host memory).
    pub fn saved_names(self) -> Vec<&'static str> {
        let with = |groups: &[&[&'static str]]| groups.concat();
        match self {
            RematPolicy::Full | RematPolicy::Custom | RematPolicy::QkvProjOffloaded | RematPolicy::MinimalOffloaded => Vec::new(),
            RematPolicy::Minimal => with(&[&QKV, &["out_proj"], &MLP]),
            RematPolicy::MinimalWithContext => with(&[&QKV, &["out_proj"], &MLP, &["context"]]),
            RematPolicy::SaveDotWithContextExceptMlp => with(&[&QKV, &["context", "out_proj"]]),
            RematPolicy::SaveDotExceptMlpwi => with(&[&QKV, &["out_proj", "mlpwo"]]),
            RematPolicy::SaveDotExceptMlp => with(&[&QKV, &["out_proj"]]),
            RematPolicy::SaveQkvProj => QKV.to_vec(),
            RematPolicy::SaveOutProj => vec!["out_proj"],
        }
    }

    /// Whether the policy moves saved values to host memory (`pinned_host`).
    pub fn offloads(self) -> bool {
        matches!(self, RematPolicy::QkvProjOffloaded | RematPolicy::MinimalOffloaded)
    }
}

/// The per-tensor keys of `remat_policy=custom` (MaxText's list, configs/types.py), each set to a
/// [`RematLocation`].
pub const REMAT_TENSOR_KEYS: [&str; 21] = [
    "decoder_layer_input",
    "indexer_cutoff_threshold",
    "context",
    "mlpwi",
    "moe_mlpwi_0",
    "moe_mlpwi_1",
    "moe_mlpwo",
    "mlpwi_0",
    "mlpwi_1",
    "mlpwo",
    "query_proj",
    "key_proj",
    "value_proj",
    "kv_proj",
    "query_wa_proj",
    "kv_wa_proj",
    "mla_kv",
    "mla_q",
    "qkv_proj",
    "attention_out",
    "out_proj",
];

config_enum! {
    /// Where `remat_policy=custom` keeps one named tensor (MaxText's `RematLocation`).
    RematLocation {
        /// Recomputed in the backward pass.
        Remat = ["remat"],
        /// Saved in device memory.
        Device = ["device"],
        /// Saved in host memory (`pinned_host`).
        Offload = ["offload"],
    }
}

config_enum! {
    /// `lr_schedule_type`.
    LrSchedule {
        Cosine = ["cosine"],
        /// Warmup-stable-decay.
        Wsd = ["wsd"],
    }
}

config_enum! {
    /// `wsd_decay_style`.
    WsdDecayStyle {
        Linear = ["linear"],
        Cosine = ["cosine"],
    }
}

config_enum! {
    /// `opt_type`.
    OptType {
        AdamW = ["adamw"],
        AdamPax = ["adam_pax"],
        Sgd = ["sgd"],
        Muon = ["muon"],
    }
}

config_enum! {
    /// `decode_sampling_strategy`.
    SamplingStrategy {
        Greedy = ["greedy"],
        Weighted = ["weighted"],
        Nucleus = ["nucleus"],
        TopK = ["topk"],
        /// top_k, then top_p, then temperature-weighted sampling.
        Composite = ["composite"],
    }
}

config_enum! {
    /// `matmul_precision` (XLA's dot precision config).
    MatmulPrecision {
        Default = ["default", "bfloat16"],
        High = ["high"],
        Highest = ["highest", "float32"],
    }
}

config_enum! {
    /// `attention`: the attention kernel (see `ComputeConfig::attention_kernel`; the cuDNN and paged kernels
    /// parse so that the refusal can name them).
    AttentionKind {
        /// dot_product in autoregressive decode, below 128 tokens and on CPU; flash otherwise.
        Autoselected = ["autoselected"],
        DotProduct = ["dot_product"],
        Flash = ["flash"],
        CudnnFlashTe = ["cudnn_flash_te"],
        CudnnFlashJax = ["cudnn_flash_jax"],
        Paged = ["paged"],
    }
}

config_enum! {
    /// `rope_type`.
    RopeType {
        Default = ["default"],
        Llama31 = ["llama3.1"],
        Yarn = ["yarn"],
    }
}

config_enum! {
    /// An entry of `mlp_activations` (`["silu", "linear"]` = SwiGLU).
    Activation {
        Silu = ["silu", "swish"],
        Linear = ["linear"],
        Gelu = ["gelu"],
        Relu = ["relu"],
        Sigmoid = ["sigmoid"],
        Tanh = ["tanh"],
    }
}

config_enum! {
    /// `program`: what `export-hlo` exports.
    Program {
        Train = ["train", "train_step"],
        Prefill = ["prefill"],
        Decode = ["decode", "decode_step"],
        Forward = ["forward"],
    }
}

config_enum! {
    /// `decoder_block`: the decoder layer family (MaxText's `DecoderBlockType`). This program implements
    /// `qwen3_next`; the others parse so that a MaxText config loads and fails with a clear message later.
    DecoderBlock {
        Default = ["default"],
        Llama2 = ["llama2"],
        Mistral = ["mistral"],
        Mixtral = ["mixtral"],
        Deepseek = ["deepseek"],
        Gemma = ["gemma"],
        Gemma2 = ["gemma2"],
        Gemma3 = ["gemma3"],
        Gemma4 = ["gemma4"],
        Gemma4Small = ["gemma4_small"],
        Qwen2 = ["qwen2"],
        Qwen3 = ["qwen3"],
        Qwen3Moe = ["qwen3_moe"],
        Qwen3CustomMoe = ["qwen3_custom_moe"],
        Qwen3Next = ["qwen3_next"],
        Qwen3_5 = ["qwen3_5"],
        Gpt3 = ["gpt3"],
        GptOss = ["gpt_oss"],
        Simple = ["simple"],
        SimpleMlp = ["simple_mlp"],
        Llama4 = ["llama4"],
        Olmo3 = ["olmo3"],
        Deepseek4 = ["deepseek4"],
        Envy = ["envy"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!("GPU_multiprocess".parse::<Hardware>().unwrap(), Hardware::Gpu);
        assert_eq!(Hardware::Gpu.to_string(), "gpu");
        assert_eq!("float32".parse::<MatmulPrecision>().unwrap(), MatmulPrecision::Highest);
        assert_eq!(DecoderBlock::Qwen3Next.name(), "qwen3_next");
        assert!("nope".parse::<DatasetType>().unwrap_err().contains("synthetic"));
    }
}
