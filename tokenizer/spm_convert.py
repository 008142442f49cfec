"""Turn a SentencePiece model (BPE or Unigram, byte fallback) into a Hugging Face ``tokenizers.Tokenizer``.

The model must be trained without a dummy prefix (``add_dummy_prefix=False``) and with identity
normalisation, as :mod:`tokenizer.train` does, so that decode(encode(text)) == text exactly.
"""

from __future__ import annotations

SPACE = "\u2581"  # SentencePiece's visible space


def _bpe_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Merges that rebuild each piece from two shorter pieces, in the order of the piece ids (= merge order)."""
    merges: list[tuple[int, int, int, str, str]] = []
    for piece, piece_id in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((piece_id, vocab[left], vocab[right], left, right))
    merges.sort()
    return [(left, right) for _, _, _, left, right in merges]


def sentencepiece_to_fast(model_proto: bytes):
    """A ``tokenizers.Tokenizer`` equivalent to the serialized SentencePiece model ``model_proto``."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    pieces = [(p.piece, p.score) for p in proto.pieces]
    unk_id = proto.trainer_spec.unk_id
    if proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
        model = models.Unigram(pieces, unk_id=unk_id, byte_fallback=True)
    elif proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE:
        vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
        model = models.BPE(vocab, _bpe_merges(vocab), unk_token=pieces[unk_id][0], fuse_unk=True, byte_fallback=True)
    else:
        raise ValueError("only SentencePiece BPE and Unigram models can be converted")
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Replace(Regex(" "), SPACE)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok
