"""CLIP's byte-level BPE tokenizer (Radford et al. 2021), as SD1.x feeds it: 77 ids, BOS, EOS, EOS padding."""
from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import regex
import torch

from ccdm_core.errors import CCDMError

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges so that the vocabulary has 49408 entries
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
HF_MERGES_HEADER = "#version: 0.2"

# CLIP's pre-tokenisation: special tokens, English contractions, letter runs, single digits, other symbol runs.
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def byte_alphabet() -> List[Tuple[int, str]]:
    """(byte, character) pairs in vocabulary order: printable Latin-1 bytes as themselves, then the rest remapped.

    The remapped bytes take code points from 256 up, so every byte has a visible, non-space character (GPT-2 scheme).
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in set(printable)]
    return [(b, chr(b)) for b in printable] + [(b, chr(256 + i)) for i, b in enumerate(others)]


def _clean(text: str) -> str:
    """Undo HTML escapes, normalise Unicode (NFC), collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(unicodedata.normalize("NFC", text)))
    return re.sub(r"\s+", " ", text).strip().lower()


def _merge_pair(word: List[str], pair: Tuple[str, str]) -> List[str]:
    """Replace every left-to-right, non-overlapping occurrence of `pair` in `word` by its concatenation."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def find_merges_file() -> Path:
    """Locate CLIP's merges file inside the clip-anytorch (or open_clip) package without importing it."""
    for package in ("clip", "open_clip"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            candidate = Path(folder) / MERGES_FILE
            if candidate.is_file():
                return candidate
    raise CCDMError(
        f"CLIP's BPE merges file {MERGES_FILE} was not found; install it with "
        "`pip install --no-deps clip-anytorch==2.6.0` (or pass a merges path)"
    )


def _read_gz_merges(path: Path) -> List[Tuple[str, str]]:
    """CLIP's merges: skip the header line, keep the first NUM_MERGES lines, each 'left right'."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CCDMError(f"cannot read CLIP merges file {path}: {exc}; reinstall clip-anytorch==2.6.0") from exc
    return _parse_merge_lines(lines[1:NUM_MERGES + 1], path)


def _parse_merge_lines(lines: Sequence[str], path: Path) -> List[Tuple[str, str]]:
    merges = []
    for number, line in enumerate(lines):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise CCDMError(f"bad merge line {number + 2} in {path}: {line!r}; expected two symbols 'left right'")
        merges.append((parts[0], parts[1]))
    return merges


class CLIPTokenizer:
    """CLIP's byte-level BPE: `encode(texts)` gives (n, max_length) ids, BOS first, EOS after the text and as padding."""

    def __init__(self, vocab: Dict[str, int], merges: Sequence[Tuple[str, str]]):
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        for token in (BOS_TOKEN, EOS_TOKEN):
            if token not in self.vocab:
                raise CCDMError(f"tokenizer vocabulary lacks the special token {token}; expected CLIP's vocabulary")
        self.bos_id = self.vocab[BOS_TOKEN]
        self.eos_id = self.vocab[EOS_TOKEN]
        self._ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self._byte_chars = dict(byte_alphabet())
        self._cache: Dict[str, List[str]] = {BOS_TOKEN: [BOS_TOKEN], EOS_TOKEN: [EOS_TOKEN]}

    @classmethod
    def from_merges(cls, merges: Sequence[Tuple[str, str]]) -> "CLIPTokenizer":
        """Vocabulary as CLIP builds it: 256 byte chars, their '</w>' forms, one entry per merge, BOS, EOS."""
        base = [char for _, char in byte_alphabet()]
        tokens = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
        return cls({token: i for i, token in enumerate(tokens)}, merges)

    @classmethod
    def default(cls, merges_path: Optional[os.PathLike] = None) -> "CLIPTokenizer":
        """SD1.x's tokenizer (openai/clip-vit-large-patch14), from the merges file shipped in clip-anytorch."""
        return _default_tokenizer(str(merges_path) if merges_path is not None else None)

    @classmethod
    def from_folder(cls, path: os.PathLike) -> "CLIPTokenizer":
        """A Hugging Face tokenizer folder: `vocab.json` (token -> id) and `merges.txt` ('#version' header)."""
        folder = Path(path)
        vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
        for needed in (vocab_file, merges_file):
            if not needed.is_file():
                raise CCDMError(f"tokenizer folder {folder} lacks {needed.name}; expected vocab.json and merges.txt")
        try:
            vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
            lines = merges_file.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CCDMError(f"cannot read tokenizer folder {folder}: {exc}") from exc
        if not isinstance(vocab, dict):
            raise CCDMError(f"{vocab_file} must hold a JSON object token -> id, got {type(vocab).__name__}")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        return cls(vocab, _parse_merge_lines(lines[:NUM_MERGES], merges_file))

    def save_folder(self, path: os.PathLike) -> None:
        """Write `vocab.json` and `merges.txt` (Hugging Face layout), each atomically."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        merges = "\n".join([HF_MERGES_HEADER] + [f"{a} {b}" for a, b in self.merges]) + "\n"
        write_text_atomic(folder / "vocab.json", json.dumps(self.vocab, ensure_ascii=False))
        write_text_atomic(folder / "merges.txt", merges)

    def _bpe(self, chunk: str) -> List[str]:
        """Merge the symbols of one pre-token by merge rank until no ranked pair is left."""
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        word = list(chunk[:-1]) + [chunk[-1] + "</w>"]
        while len(word) > 1:
            pair = min(zip(word, word[1:]), key=lambda p: self._ranks.get(p, math.inf))
            if pair not in self._ranks:
                break
            word = _merge_pair(word, pair)
        self._cache[chunk] = word
        return word

    def tokenize(self, text: str) -> List[int]:
        """Ids of one text, without BOS/EOS."""
        ids = []
        for piece in _PATTERN.findall(_clean(text)):
            if piece not in (BOS_TOKEN, EOS_TOKEN):
                piece = "".join(self._byte_chars[b] for b in piece.encode("utf-8"))
            ids.extend(self.vocab.get(symbol, self.eos_id) for symbol in self._bpe(piece))
        return ids

    def encode(self, texts: List[str], max_length: int = 77) -> torch.Tensor:
        """(n, max_length) int64 ids: BOS, the text (truncated), EOS, then EOS padding as SD1.x uses."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise CCDMError(f"texts must be a list of strings, got {type(texts).__name__}")
        if not isinstance(max_length, int) or max_length < 2:
            raise CCDMError(f"max_length must be an integer >= 2 (room for BOS and EOS), got {max_length!r}")
        out = torch.full((len(texts), max_length), self.eos_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.bos_id] + self.tokenize(text)[: max_length - 2] + [self.eos_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


@functools.lru_cache(maxsize=4)
def _default_tokenizer(merges_path: Optional[str]) -> CLIPTokenizer:
    path = Path(merges_path) if merges_path is not None else find_merges_file()
    if not path.is_file():
        raise CCDMError(f"CLIP merges file {path} does not exist; install clip-anytorch==2.6.0 (--no-deps)")
    return CLIPTokenizer.from_merges(_read_gz_merges(path))


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
