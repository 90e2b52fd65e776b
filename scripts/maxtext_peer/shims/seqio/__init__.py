"""Stand-in for seqio (scripts/maxtext_peer/setup_jetstream.sh). JetStream's token_utils imports
seqio.vocabularies at module level, and the real seqio needs TensorFlow and tensorflow-text; MaxText only
instantiates it for tokenizer_type=sentencepiece, which the peer runs never use."""
