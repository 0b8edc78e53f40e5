"""GPT-2's tokenizer as Hugging Face files, built offline from the BPE files tiktoken uses.

    names = write_gpt2_tokenizer(out_dir, model_max_length=1024)
    # -> vocab.json, merges.txt (OpenAI's encoder.json / vocab.bpe, byte for byte),
    #    tokenizer.json, tokenizer_config.json (a GPT2TokenizerFast, <|endoftext|> = 50256)
    texts = verify_tokenizer(AutoTokenizer.from_pretrained(out_dir))   # == tiktoken's gpt2, or raises

The two source files come through tiktoken's own cached loader with the URLs and sha256 hashes of
`tiktoken_ext/openai_public.py`'s "gpt2" encoding: offline they are read from TIKTOKEN_CACHE_DIR
(e.g. ../shared/tiktoken), online they are downloaded from OpenAI exactly as tiktoken does. The
Hugging Face Hub is never contacted. Every vocab entry is checked against tiktoken's ranks, and the
built tokenizer must encode a varied set of texts exactly as `encode_ordinary` does, so the export
cannot ship a tokenizer that disagrees with the tokens the model was trained on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gpt2train.errors import DataError, Gpt2TrainError
from gpt2train.data.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE, get_encoding

ENDOFTEXT = "<|endoftext|>"

# tiktoken_ext/openai_public.py, gpt2(): the files and their sha256 (tiktoken verifies the hash).
ENCODER_JSON_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

# Texts the exported tokenizer must encode exactly as tiktoken: GPT-2's split regex (contractions,
# letter/number/punctuation runs, whitespace lookahead), byte fallback for any UTF-8 (emoji with
# joiners, CJK, combining accents), and the corner cases where implementations drift (leading and
# trailing spaces, runs of spaces/tabs/newlines, upper-case contractions, long digit runs).
TOKENIZER_CHECK_TEXTS = (
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say we've done it; she'd've known. DON'T SHOUT, it's 'quoted'.",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n\n\tif x != 0: pass\n",
    "3.14159 + 2,718 = 5.85959; 1234567890 1e-9 0x1F $100.00 50% #42 2024-01-31T12:00:00Z",
    "   leading spaces, trailing spaces   ",
    "runs of whitespace:     \t\t \n\n\n   \r\n  end\n",
    "Emoji 🤗🚀 with joiners 👩‍👩‍👧‍👦 and flags 🇫🇷 and skin tones 👍🏽",
    "中文文本：你好，世界。日本語のテキスト。한국어 텍스트.",
    "Accents: café naïve résumé Ångström façade São Paulo Zürich; combining: e\u0301 a\u0308",
    "Ελληνικά, русский текст, עברית, العربية, हिन्दी",
    "Symbols: ©®™ ±×÷ ≤≥≠ ∑∫√∞ → ← ↔ “curly quotes” — dashes – … «»",
    "",
    " ",
    "\n",
    "a" * 300 + " " + "ab" * 100,
)


def gpt2_bpe_files() -> tuple[bytes, bytes]:
    """(encoder.json, vocab.bpe) bytes of GPT-2's BPE, through tiktoken's hash-checked cache."""
    from tiktoken.load import read_file_cached

    try:
        return (read_file_cached(ENCODER_JSON_URL, ENCODER_JSON_SHA256),
                read_file_cached(VOCAB_BPE_URL, VOCAB_BPE_SHA256))
    except Exception as e:  # requests/urllib errors offline, ValueError on a hash mismatch
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "(unset)")
        raise DataError(
            f"could not read GPT-2's BPE files (encoder.json, vocab.bpe) through tiktoken's cache "
            f"({type(e).__name__}: {e}). Offline, point TIKTOKEN_CACHE_DIR at a folder holding them "
            f"under tiktoken's cache names (e.g. ../shared/tiktoken); TIKTOKEN_CACHE_DIR is now {cache}"
        ) from e


def byte_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode alias of each byte (encoder.json's alphabet) -> the byte.

    Printable Latin-1 bytes stand for themselves; the other 68 map to U+0100.. in byte order
    (openai/gpt-2 encoder.py: bytes_to_unicode)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + n)] = b
            n += 1
    return table


def check_vocab_against_tiktoken(vocab: dict[str, int]) -> None:
    """Raise unless every token of `vocab` (encoder.json) has the bytes tiktoken's gpt2 gives its id."""
    enc = get_encoding("gpt2")
    if len(vocab) != GPT2_VOCAB_SIZE or enc.n_vocab != GPT2_VOCAB_SIZE:
        raise DataError(f"GPT-2 vocab.json has {len(vocab)} tokens and tiktoken's gpt2 {enc.n_vocab}; "
                        f"both must be {GPT2_VOCAB_SIZE}: the BPE files in TIKTOKEN_CACHE_DIR are not GPT-2's")
    if vocab.get(ENDOFTEXT) != EOT_TOKEN or enc.eot_token != EOT_TOKEN:
        raise DataError(f"{ENDOFTEXT} is id {vocab.get(ENDOFTEXT)} in vocab.json and {enc.eot_token} in "
                        f"tiktoken; GPT-2's is {EOT_TOKEN}")
    decode = byte_decoder()
    for token, rank in vocab.items():
        # <|endoftext|> is plain ASCII, so the byte alphabet maps it to its own bytes too.
        if bytes(decode[ch] for ch in token) != enc.decode_single_token_bytes(rank):
            raise DataError(f"vocab.json maps {token!r} to id {rank}, but tiktoken's gpt2 gives id {rank} the "
                            f"bytes {enc.decode_single_token_bytes(rank)!r}: the BPE files are not GPT-2's")


def build_gpt2_tokenizer(vocab_file: Path, merges_file: Path, model_max_length: int):
    """A GPT2TokenizerFast over GPT-2's BPE files, configured as Hugging Face's `gpt2` tokenizer.json.

    Built from a `tokenizers.Tokenizer` object rather than `GPT2TokenizerFast(vocab_file=...)`:
    transformers 5 ignores `vocab_file` in the constructor (silently: an empty vocabulary), while
    `tokenizer_object` means the same in transformers 4 and 5.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE.from_file(str(vocab_file), str(merges_file)))
    # GPT-2's split regex; no prefix space, so " Hello" and "Hello" stay different tokens as in tiktoken.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    return GPT2TokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, bos_token=ENDOFTEXT,
                             eos_token=ENDOFTEXT, unk_token=ENDOFTEXT, add_prefix_space=False)


def write_gpt2_tokenizer(out_dir: str | Path, model_max_length: int) -> list[str]:
    """Write GPT-2's tokenizer into `out_dir` (which exists); returns the file names written."""
    out_dir = Path(out_dir)
    encoder_json, vocab_bpe = gpt2_bpe_files()
    check_vocab_against_tiktoken(json.loads(encoder_json))
    before = set(os.listdir(out_dir))
    # OpenAI's files byte for byte: Hugging Face's gpt2 vocab.json / merges.txt are these files.
    (out_dir / "vocab.json").write_bytes(encoder_json)
    (out_dir / "merges.txt").write_bytes(vocab_bpe)
    tokenizer = build_gpt2_tokenizer(out_dir / "vocab.json", out_dir / "merges.txt", model_max_length)
    # legacy_format=False: tokenizer.json only (transformers 4 would rewrite vocab.json/merges.txt
    # in its own layout); special_tokens_map.json appears where the installed version writes it.
    tokenizer.save_pretrained(out_dir, legacy_format=False)
    (out_dir / "vocab.json").write_bytes(encoder_json)  # in case a version rewrote them anyway
    (out_dir / "merges.txt").write_bytes(vocab_bpe)
    return sorted((set(os.listdir(out_dir)) - before) | {"vocab.json", "merges.txt"})


def verify_tokenizer(tokenizer, texts: tuple[str, ...] = TOKENIZER_CHECK_TEXTS) -> int:
    """Raise unless `tokenizer` (a loaded HF tokenizer) encodes each text as tiktoken's gpt2
    `encode_ordinary` and decodes it back; returns the number of texts checked."""
    enc = get_encoding("gpt2")
    for text in texts:
        expected = enc.encode_ordinary(text)
        got = tokenizer.encode(text, add_special_tokens=False, verbose=False)  # verbose: no length warning
        if got != expected:
            i = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            raise Gpt2TrainError(f"the exported tokenizer encodes {text[:60]!r} differently from tiktoken's gpt2 "
                                 f"(first difference at token {i}: {got[i:i + 5]} vs {expected[i:i + 5]})")
        decoded = tokenizer.decode(got, clean_up_tokenization_spaces=False)
        if decoded != text:
            raise Gpt2TrainError(f"the exported tokenizer decodes the tokens of {text[:60]!r} to {decoded[:60]!r}")
    return len(texts)
