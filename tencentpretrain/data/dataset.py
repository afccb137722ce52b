"""The on-disk dataset: one memory-mappable file, no pickle.

Layout (little-endian):

    bytes 0-7    magic  b"TPDSET\\x00\\x01"
    bytes 8-15   uint64 length of the JSON header
    JSON header  (utf-8; `DatasetHeader` fields, including `arrays`: name -> dtype, offset, length)
    arrays       each starting at a 64-byte aligned offset:
      tokens          [T]    uint16 (int32 if vocab_size > 65536): every instance's ids, concatenated
                             (static masking: the masked ids)
      offsets         [N+1]  int64: instance i is tokens[offsets[i]:offsets[i+1]]
      <per-instance>  [N]    the arrays the processor declares in `instance_arrays`, e.g. bert's
                             seg_split (int32: index of the first token of segment B) and
                             is_random_next (uint8: next-sentence label, 0 is next, 1 random)
      mlm_positions   [M]    uint16/int32, static masking only (processors whose token_target is
                             "mlm"): masked positions of each instance
      mlm_targets     [M]    token dtype: original ids at those positions
      mlm_offsets     [N+1]  int64: instance i's masks are [mlm_offsets[i]:mlm_offsets[i+1]]
      is_continuation [V]    uint8, dynamic whole word masking only: 1 for "##pieces"

Which arrays a file holds follows from its header: the declaration of the processor that wrote it
(processors/base.py) and whether masks are static. Writers (one per preprocessing worker) append
instances to raw shard files in chunks, so memory stays bounded; `assemble` then concatenates the
shards in order behind the header, atomically.
"""
import json
import os
import shutil
import struct
from dataclasses import MISSING, asdict, dataclass, field, fields

import numpy as np

from tencentpretrain.errors import UserError
from tencentpretrain.registry import PROCESSORS
from tencentpretrain.utils.io import atomic_write

MAGIC = b"TPDSET\x00\x01"
FORMAT_VERSION = 1
ALIGN = 64
# Arrays whose per-instance lengths the shards store and the final file turns into offsets.
_COUNTED = {"offsets": "tokens", "mlm_offsets": "mlm_targets"}


@dataclass
class DatasetHeader:
    processor: str
    seq_length: int
    vocab_size: int
    special_ids: dict          # pad, unk, cls, sep, mask -> id
    dynamic_masking: bool
    instances_num: int = 0
    tokens_num: int = 0
    token_dtype: str = "uint16"
    position_dtype: str = "uint16"
    whole_word_masking: bool = False
    full_sentences: bool = False
    dup_factor: int = 1        # copies of the corpus written (see Processor.copies)
    seed: int = 7
    short_seq_prob: float = 0.0
    tokenizer: str = "bert"
    do_lower_case: bool = True
    vocab_path: str | None = None
    vocab_sha256: str | None = None
    corpus: dict = field(default_factory=dict)   # path, bytes, lines
    block_bytes: int = 0
    file_bytes: int = 0        # size of the whole file: a shorter one is truncated
    arrays: dict = field(default_factory=dict)
    magic: str = MAGIC.hex()
    version: int = FORMAT_VERSION

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_dict(cls, d, path):
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is f.default_factory is MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise UserError(f"{path}: dataset header lacks {', '.join(missing)}; re-run preprocess.py")
        return cls(**{k: v for k, v in d.items() if k in known})


def token_dtype(vocab_size):
    return "uint16" if vocab_size <= 1 << 16 else "int32"


def position_dtype(seq_length):
    return "uint16" if seq_length <= 1 << 16 else "int32"


def processor_of(header, path="dataset"):
    """The processor class that wrote a dataset (its declaration says what the file holds)."""
    if header.processor not in PROCESSORS:
        raise UserError(f"{path} was made by a data processor '{header.processor}' this toolkit does not have "
                        f"(it has {', '.join(PROCESSORS.names())}); re-run preprocess.py")
    return PROCESSORS.get(header.processor)


def array_dtypes(header):
    """The arrays a dataset with this header holds, in file order, and their dtypes."""
    tok, pos = header.token_dtype, header.position_dtype
    processor = processor_of(header)
    dtypes = {"tokens": tok, "offsets": "int64", **processor.instance_arrays}
    if processor.token_target == "mlm" and not header.dynamic_masking:
        dtypes.update(mlm_positions=pos, mlm_targets=tok, mlm_offsets="int64")
    return dtypes


class ShardWriter:
    """Appends instances to raw per-array files `<prefix>.<name>`, flushing every `chunk_tokens`."""

    def __init__(self, prefix, header, chunk_tokens=1 << 20):
        self.prefix, self.chunk_tokens = prefix, chunk_tokens
        self.dtypes = array_dtypes(header)
        self.instance_arrays = list(processor_of(header).instance_arrays)
        # Shards store lengths (int32) where the final file stores int64 offsets.
        for name in _COUNTED:
            if name in self.dtypes:
                self.dtypes[name] = "int32"
        self.buffers = {name: [] for name in self.dtypes}
        self.files = {name: open(f"{prefix}.{name}", "wb") for name in self.dtypes}
        self.buffered_tokens = 0
        self.instances = self.tokens = 0

    def add(self, tokens, mlm_positions=None, mlm_targets=None, **values):
        """One instance: its tokens, its masks (static masking) and a value for each instance array."""
        b = self.buffers
        b["tokens"].append(tokens)
        b["offsets"].append(len(tokens))
        for name in self.instance_arrays:
            b[name].append(values[name])
        if "mlm_offsets" in b:
            b["mlm_positions"].append(mlm_positions)
            b["mlm_targets"].append(mlm_targets)
            b["mlm_offsets"].append(len(mlm_positions))
        self.instances += 1
        self.tokens += len(tokens)
        self.buffered_tokens += len(tokens)
        if self.buffered_tokens >= self.chunk_tokens:
            self.flush()

    def flush(self):
        for name, items in self.buffers.items():
            if not items:
                continue
            if name in ("tokens", "mlm_positions", "mlm_targets"):
                arr = np.concatenate([np.asarray(x, dtype=self.dtypes[name]) for x in items])
            else:
                arr = np.asarray(items, dtype=self.dtypes[name])
            arr.tofile(self.files[name])
            items.clear()
        self.buffered_tokens = 0

    def close(self):
        self.flush()
        for f in self.files.values():
            f.close()
        return {"prefix": self.prefix, "instances": self.instances, "tokens": self.tokens}


def assemble(path, header, shard_prefixes, extra_arrays=None):
    """Write the final dataset file: header, then each array concatenated over the shards in order.

    `extra_arrays`: small arrays held in memory (e.g. is_continuation). Atomic: tmp file + rename.
    """
    dtypes = array_dtypes(header)
    extra_arrays = extra_arrays or {}
    lengths = {}  # element count of each array in the final file
    for name, dt in dtypes.items():
        if name in _COUNTED:
            n = sum(os.path.getsize(f"{p}.{name}") for p in shard_prefixes) // 4
            lengths[name] = n + 1
        else:
            size = np.dtype(dt).itemsize
            lengths[name] = sum(os.path.getsize(f"{p}.{name}") for p in shard_prefixes) // size
    for name, arr in extra_arrays.items():
        dtypes[name], lengths[name] = str(arr.dtype), arr.size
    header.instances_num = lengths["offsets"] - 1
    header.tokens_num = lengths["tokens"]

    # The header lists the arrays' offsets, which depend on the header's length: grow until it fits.
    base = 0
    while True:
        pos = base
        header.arrays = {}
        for name in dtypes:
            header.arrays[name] = {"dtype": dtypes[name], "offset": pos, "length": lengths[name]}
            pos = _align(pos + lengths[name] * np.dtype(dtypes[name]).itemsize)
        header.file_bytes = pos
        blob = header.to_json()
        if _align(16 + len(blob)) <= base:
            break
        base = _align(16 + len(blob))

    with atomic_write(path, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(blob)) + blob)
        for name, spec in header.arrays.items():
            f.write(b"\0" * (spec["offset"] - f.tell()))
            if name in extra_arrays:
                f.write(np.ascontiguousarray(extra_arrays[name]).tobytes())
            elif name in _COUNTED:
                _write_offsets(f, [f"{p}.{name}" for p in shard_prefixes])
            else:
                for p in shard_prefixes:
                    with open(f"{p}.{name}", "rb") as src:
                        shutil.copyfileobj(src, f, 1 << 22)
        f.write(b"\0" * (header.file_bytes - f.tell()))
    return header


def _write_offsets(f, length_files, chunk=1 << 22):
    """Turn per-instance int32 lengths into int64 offsets [0, l0, l0+l1, ...], chunk by chunk."""
    total = 0
    np.zeros(1, dtype=np.int64).tofile(f)
    for name in length_files:
        lengths = np.memmap(name, dtype=np.int32, mode="r") if os.path.getsize(name) else []
        for start in range(0, len(lengths), chunk):
            offs = np.cumsum(lengths[start:start + chunk], dtype=np.int64) + total
            offs.tofile(f)
            total = int(offs[-1])


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def read_header(path):
    """Parse and validate a dataset file's header (magic, version, size); UserError if it is not one."""
    if not os.path.isfile(path):
        raise UserError(f"dataset not found: {path}; create it with preprocess.py --dataset_path {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        start = f.read(16)
        if len(start) < 16 or start[:8] != MAGIC:
            raise UserError(f"{path} is not a dataset written by this toolkit's preprocess.py (bad magic "
                            "bytes); re-run preprocess.py, or convert a TencentPretrain dataset.pt with "
                            "scripts/convert_dataset_from_tencentpretrain.py (it is never unpickled as is)")
        (n,) = struct.unpack("<Q", start[8:])
        if n > size - 16:
            raise UserError(f"{path}: truncated dataset file (header runs past the end); re-run preprocess.py")
        try:
            d = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{path}: corrupt dataset header ({err}); re-run preprocess.py") from None
    if d.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: dataset format version {d.get('version')} but this toolkit reads version "
                        f"{FORMAT_VERSION}; re-run preprocess.py")
    header = DatasetHeader.from_dict(d, path)
    expected = header.file_bytes
    if expected != size:
        raise UserError(f"{path}: truncated or damaged dataset file ({size} bytes, header says {expected}); "
                        "re-run preprocess.py")
    return header


def check_compatible(header, vocab_size=None, seq_length=None, processor=None, path="dataset"):
    """UserError unless a dataset fits a model: same vocab size, instances no longer than the model's
    positions, and (when given) the processor its targets expect."""
    if vocab_size is not None and header.vocab_size != vocab_size:
        raise UserError(f"{path} was built with a vocabulary of {header.vocab_size} tokens "
                        f"({header.vocab_path}) but the model has vocab_size {vocab_size}; re-run preprocess.py "
                        "with the model's vocabulary (--vocab_path / --spm_model_path)")
    if seq_length is not None and header.seq_length > seq_length:
        raise UserError(f"{path} holds instances of up to {header.seq_length} tokens but the model's "
                        f"max_seq_length is {seq_length}; re-run preprocess.py with --seq_length {seq_length}")
    if processor is not None and header.processor != processor:
        raise UserError(f"{path} was made by the '{header.processor}' processor but the model expects "
                        f"data_processor '{processor}'; re-run preprocess.py --data_processor {processor}")


class Dataset:
    """Read-only, memory-mapped view of a dataset file; `ds[i]` is instance i as numpy arrays."""

    def __init__(self, path):
        self.path = path
        self.header = read_header(path)
        self.processor = processor_of(self.header, path)  # its declaration: what an instance holds
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        self.arrays = {}
        for name, spec in self.header.arrays.items():
            dt = np.dtype(spec["dtype"])
            end = spec["offset"] + spec["length"] * dt.itemsize
            if end > mm.size:
                raise UserError(f"{path}: array {name} runs past the end of the file; re-run preprocess.py")
            self.arrays[name] = mm[spec["offset"]:end].view(dt)
        for name in array_dtypes(self.header):
            if name not in self.arrays:
                raise UserError(f"{path}: dataset lacks array '{name}'; re-run preprocess.py")
        self.tokens, self.offsets = self.arrays["tokens"], self.arrays["offsets"]
        if self.offsets.size != self.header.instances_num + 1 or int(self.offsets[-1]) != self.tokens.size:
            raise UserError(f"{path}: instance offsets do not match the token array; re-run preprocess.py")

    def __len__(self):
        return self.header.instances_num

    def __getitem__(self, i):
        a = self.arrays
        item = {"tokens": np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]], dtype=np.int64)}
        for name in self.processor.instance_arrays:
            item[name] = int(a[name][i])
        if "mlm_offsets" in a:
            s, e = a["mlm_offsets"][i], a["mlm_offsets"][i + 1]
            item["mlm_positions"] = np.asarray(a["mlm_positions"][s:e], dtype=np.int64)
            item["mlm_targets"] = np.asarray(a["mlm_targets"][s:e], dtype=np.int64)
        return item
