"""The two names JetStream imports from seqio.vocabularies (see __init__.py)."""


class Vocabulary:
    pass


class SentencePieceVocabulary(Vocabulary):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("seqio stand-in: SentencePiece vocabularies are not available (use tokenizer_type=huggingface)")
