"""The on-disk format of precomputed embeddings: safetensors shards plus one index.

A run directory `results/embed/{modality}/{backend}-{policy}-w{workers}/` holds

  shard-00000.safetensors …   one or more per worker; every tensor's first axis is the item axis
  index.json                  written last: shards (file, items, sha256, worker), tensor names with
                              dtype and per-item shape, model spec, and free-form `meta`

Because index.json is written last and atomically, a directory without it is incomplete, and a
shard listed in it is complete (its checksum is recorded). Readers never hold the whole dataset:
`ShardReader` opens shards lazily and slices single items out of them.

Tensor names by modality (the embedding stage writes them, the training stage reads them):
  images: image_id int64 [n]; latent_mean, latent_std [n, C, h, w] (fp16/bf16/fp32)
  text:   image_id int64 [n]; caption_index int64 [n]; hidden [n, 77, D]; mask int8 [n, 77];
          pooled [n, D]; truncated bool [n]

Text is stored `full` (hidden and mask as above) or `ragged` (index `text_storage: ragged`): only
the real tokens, concatenated — tokens [T, D] where T is the shard's real-token count, lengths
int32 [n] and offsets int64 [n] into tokens. The index lists the tensors as readers see them
(hidden [77, D], mask [77]) and, under `stored`, what is on disk; `ShardReader` pads a ragged
item back to the context length with zeros and returns the mask, so readers need not know.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from diffscale import atomic, io
from diffscale.errors import DataError

INDEX = "index.json"
FORMAT_VERSION = 1
PER_TOKEN = ("tokens",)  # ragged text: first axis is the shard's real tokens, not its items
RAGGED_STORED = ("tokens", "lengths", "offsets")
INDEX_KEYS = {"shards": list, "tensors": dict}  # what readers index into without checking
SHARD_KEYS = {"file": str, "items": int}
SHARD_MISSING = f"shard listed in {INDEX} is missing"


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_shard(path: str | Path, tensors: dict[str, Any]) -> dict:
    """Write one shard atomically; return its index entry (file, items, sha256, bytes per tensor)."""
    from safetensors.torch import save_file

    path = Path(path)
    counts = {name: int(t.shape[0]) for name, t in tensors.items() if name not in PER_TOKEN}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{path.name}: tensors disagree on the item count: {counts}")
    with atomic.atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    return {"file": path.name, "items": next(iter(counts.values())), "sha256": sha256_of(path),
            "tensor_bytes": {name: t.numel() * t.element_size() for name, t in tensors.items()}}


def tensor_specs(tensors: dict[str, Any]) -> dict[str, dict]:
    return {name: {"dtype": str(t.dtype).removeprefix("torch."), "item_shape": list(t.shape[1:])}
            for name, t in tensors.items()}


def write_index(run_dir: str | Path, modality: str, shards: list[dict], tensors: dict[str, dict],
                **meta: Any) -> Path:
    """Write index.json last: it is what marks the run directory complete."""
    index = {
        "format": FORMAT_VERSION,
        "modality": modality,
        "items": sum(s["items"] for s in shards),
        "shards": shards,
        "tensors": tensors,
        **meta,
    }
    return atomic.write_json(Path(run_dir) / INDEX, index)


def _damaged(path: str | Path, problem: str) -> DataError:
    """The one wording for a shard or index that exists but cannot be used: a rerun rewrites both."""
    return DataError(f"{path}: {problem}; run the embedding stage again")


def read_index(run_dir: str | Path) -> dict:
    path = Path(run_dir) / INDEX
    index = io.read_json(path, missing="no index; the embedding run is missing or incomplete", what="index")
    if not isinstance(index, dict):
        raise _damaged(path, f"expected a JSON object (the embedding index), found {type(index).__name__}")
    if index.get("format") != FORMAT_VERSION:
        raise DataError(f"{path}: format {index.get('format')!r}, expected {FORMAT_VERSION}")
    _check_index_keys(path, index)
    return index


def _check_index_keys(path: Path, index: dict) -> None:
    """A hand-edited or cut-down index would otherwise fail later as a bare KeyError."""
    for key, kind in INDEX_KEYS.items():
        if not isinstance(index.get(key), kind):
            found = type(index[key]).__name__ if key in index else "none"
            raise _damaged(path, f"expected a {key!r} {kind.__name__}, found {found}")
    for n, shard in enumerate(index["shards"]):
        if not (isinstance(shard, dict) and all(isinstance(shard.get(k), t) for k, t in SHARD_KEYS.items())):
            raise _damaged(path, f"shards[{n}] is not an entry with a file name and an item count")


def verify(run_dir: str | Path) -> dict:
    """Check every listed shard exists and matches its checksum; return the index."""
    run_dir = Path(run_dir)
    index = read_index(run_dir)
    for shard in index["shards"]:
        path = run_dir / shard["file"]
        if not path.is_file():
            raise _damaged(path, SHARD_MISSING)
        if sha256_of(path) != shard["sha256"]:
            raise _damaged(path, f"checksum differs from {INDEX}, the shard is corrupt")
    return index


def with_offsets(tensors: dict[str, Any]) -> dict[str, Any]:
    """A ragged text shard's tensors plus `offsets` (where each item's tokens start)."""
    import torch

    lengths = tensors["lengths"].to(torch.int64)
    return {**tensors, "offsets": torch.cumsum(lengths, 0) - lengths}


def ragged_specs_from(stored: dict[str, dict], context: int) -> dict[str, dict]:
    """The index's reader-facing specs of ragged text (hidden [context, D], mask [context]) from
    the specs of what is stored (tokens [D], lengths, offsets, …)."""
    specs = {}
    for name, spec in stored.items():
        if name == "tokens":
            specs["hidden"] = {"dtype": spec["dtype"], "item_shape": [context, *spec["item_shape"]]}
            specs["mask"] = {"dtype": "int8", "item_shape": [context]}
        elif name not in RAGGED_STORED:
            specs[name] = spec
    return specs


def pad_ragged(tokens, lengths, context: int) -> tuple[Any, Any]:
    """Concatenated real tokens [T, D] + lengths [n] -> hidden [n, context, D] (zeros after each
    caption's tokens) and mask int8 [n, context]."""
    import torch

    lengths = lengths.to(torch.int64)
    mask = torch.arange(context)[None, :] < lengths[:, None]
    hidden = tokens.new_zeros(len(lengths), context, tokens.shape[-1])
    hidden[mask] = tokens
    return hidden, mask.to(torch.int8)


@dataclass
class ShardReader:
    """Random access to the items of a run directory without loading it whole."""

    run_dir: Path

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.index = read_index(self.run_dir)
        self._starts = []
        total = 0
        for shard in self.index["shards"]:
            self._starts.append(total)
            total += shard["items"]
        self._len = total

    def __len__(self) -> int:
        return self._len

    @property
    def names(self) -> list[str]:
        return list(self.index["tensors"])

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self._len:
            raise IndexError(i)
        k = bisect_right(self._starts, i) - 1
        return k, i - self._starts[k]

    def _handle(self, k: int):
        return _open_shard(str(self.run_dir / self.index["shards"][k]["file"]))

    @property
    def ragged(self) -> bool:
        return self.index.get("text_storage") == "ragged"

    def item(self, i: int, names: list[str] | None = None) -> dict:
        k, j = self._locate(i)
        handle = self._handle(k)
        names = names or self.names
        out = {n: handle.get_slice(n)[j : j + 1][0] for n in names if not (self.ragged and n in ("hidden", "mask"))}
        if self.ragged and ("hidden" in names or "mask" in names):
            start, length = (int(handle.get_slice(n)[j : j + 1][0]) for n in ("offsets", "lengths"))
            hidden, mask = pad_ragged(handle.get_slice("tokens")[start : start + length],
                                      handle.get_slice("lengths")[j : j + 1], self.index["context_length"])
            out.update({n: t[0] for n, t in (("hidden", hidden), ("mask", mask)) if n in names})
        return out

    def shard(self, k: int, names: list[str] | None = None) -> dict:
        handle = self._handle(k)
        names = names or self.names
        out = {n: handle.get_tensor(n) for n in names if not (self.ragged and n in ("hidden", "mask"))}
        if self.ragged and ("hidden" in names or "mask" in names):
            hidden, mask = pad_ragged(handle.get_tensor("tokens"), handle.get_tensor("lengths"),
                                      self.index["context_length"])
            out.update({n: t for n, t in (("hidden", hidden), ("mask", mask)) if n in names})
        return out

    def column(self, name: str):
        """One tensor over all items (small ones only: ids, masks), concatenated in index order."""
        import torch

        return torch.cat([self.shard(k, [name])[name] for k in range(len(self.index["shards"]))])


@lru_cache(maxsize=64)
def _open_shard(path: str):
    """Open one shard; a missing or corrupt one is a DataError (safe_open checks the header and
    that the data covers it, so a cut-short or foreign file fails here, not at a later read)."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(path, framework="pt")
    except FileNotFoundError:
        raise _damaged(path, SHARD_MISSING) from None
    except (SafetensorError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _damaged(path, f"not a readable safetensors shard ({first})") from None
