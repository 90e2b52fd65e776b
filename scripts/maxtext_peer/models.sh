# The shrunk Qwen3-Next models of the MaxText side-by-side runs, as MaxText command-line keys (sourced by
# train.sh and microbench.sh). configs/models/qwen3-next-peer-{tiny,mid}.yml are the same models for maxtext-rs.
# peer_model_args tiny|mid  ->  sets MODEL (max_target_length included: the length the runs train at).
peer_model_args() {
  case "$1" in
    tiny) MODEL="base_emb_dim=128 base_num_decoder_layers=4 base_num_query_heads=4 base_num_kv_heads=2 head_dim=32
          base_mlp_dim=64 base_moe_mlp_dim=64 num_experts=8 num_experts_per_tok=2 shared_experts=1 vocab_size=1024
          gdn_key_head_dim=32 gdn_value_head_dim=32 gdn_num_key_heads=2 gdn_num_value_heads=4 gdn_chunk_size=64
          max_target_length=128" ;;
    mid)  MODEL="base_emb_dim=512 base_num_decoder_layers=8 base_num_query_heads=8 base_num_kv_heads=2 head_dim=64
          base_mlp_dim=256 base_moe_mlp_dim=256 num_experts=32 num_experts_per_tok=4 shared_experts=1 vocab_size=8192
          gdn_key_head_dim=64 gdn_value_head_dim=64 gdn_num_key_heads=4 gdn_num_value_heads=8 gdn_chunk_size=64
          max_target_length=512" ;;
    *) echo "tiny or mid" >&2; return 1 ;;
  esac
}
