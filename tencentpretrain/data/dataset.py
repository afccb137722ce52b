"""The on-disk dataset: one memory-mappable file, no pickle.

Layout (little-endian), format version 2:

    bytes 0-7    magic  b"TPDSET\\x00\\x02" (the last byte is the format version)
    bytes 8-15   uint64 length n of the JSON header
    JSON header  n bytes (utf-8; `DatasetHeader` fields, including `arrays`: name -> dtype, offset,
                 length and the sha256 of the array's bytes: all of them, the first and the last
                 `checksum_block` bytes)
    32 bytes     sha256 of bytes [0, 16 + n): the magic, the length and the header
    arrays       each starting at a 64-byte aligned offset, in the order of `array_dtypes`:
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
shards in order behind the header, atomically, hashing the arrays as it writes them.

Checks when a file is opened (`read_header`, `Dataset`): the header's checksum, the file size, the
arrays' offsets and sizes (each must start where the previous one ends, aligned), and the checksums
of the first and last block of each array: a changed header digit or a damaged end of an array is
refused before any training. `verify(path, full=True)` (pretrain.py --verify_dataset) hashes every
byte. Version 1 files (no checksums, no max_token_id) are still read, with the layout checks only.
"""
import hashlib
import json
import os
import shutil
import struct
from dataclasses import MISSING, asdict, dataclass, field, fields

import numpy as np

from tencentpretrain.errors import UserError
from tencentpretrain.registry import PROCESSORS
from tencentpretrain.utils.io import atomic_write

MAGIC = b"TPDSET\x00\x02"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)      # version 1: no checksums, no max_token_id
ALIGN = 64
DIGEST_BYTES = 32           # the header's sha256, right after it (version 2)
CHECKSUM_BLOCK = 1 << 20    # the first and last this many bytes of each array are checked at every open
# Arrays whose per-instance lengths the shards store and the final file turns into offsets.
_COUNTED = {"offsets": "tokens", "mlm_offsets": "mlm_targets"}
_TOKEN_ARRAYS = ("tokens", "mlm_targets")  # arrays of token ids (max_token_id)
_CHECKSUMS = ("sha256", "sha256_head", "sha256_tail")  # per array: all its bytes, its first and last block


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
    max_token_id: int | None = None  # largest id in tokens and mlm_targets (None: a version 1 file)
    checksum_block: int = CHECKSUM_BLOCK
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
    """Appends instances to raw per-array files `<prefix>.<name>`, flushing every `chunk_tokens`;
    instances wait in their file dtype (a few bytes per token)."""

    def __init__(self, prefix, header, chunk_tokens=1 << 18):
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
        b, dt = self.buffers, self.dtypes
        b["tokens"].append(np.asarray(tokens, dtype=dt["tokens"]))
        b["offsets"].append(len(tokens))
        for name in self.instance_arrays:
            b[name].append(values[name])
        if "mlm_offsets" in b:
            b["mlm_positions"].append(np.asarray(mlm_positions, dtype=dt["mlm_positions"]))
            b["mlm_targets"].append(np.asarray(mlm_targets, dtype=dt["mlm_targets"]))
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
                arr = np.concatenate(items)
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
    Sets the header's counts, max_token_id, array layout and checksums.
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
    header.max_token_id = max(_max_value([f"{p}.{name}" for p in shard_prefixes], dtypes[name])
                              for name in _TOKEN_ARRAYS if name in dtypes)
    header.version, header.magic, header.checksum_block = FORMAT_VERSION, MAGIC.hex(), CHECKSUM_BLOCK
    _lay_out(header, dtypes, lengths)

    with atomic_write(path, "wb") as f:
        f.write(b"\0" * min(spec["offset"] for spec in header.arrays.values()))  # the header goes here last
        for name in dtypes:  # file order
            spec = header.arrays[name]
            f.write(b"\0" * (spec["offset"] - f.tell()))
            out = _HashingWriter(f, spec["length"] * np.dtype(spec["dtype"]).itemsize, CHECKSUM_BLOCK)
            if name in extra_arrays:
                out.write(np.ascontiguousarray(extra_arrays[name]).tobytes())
            elif name in _COUNTED:
                _write_offsets(out, [f"{p}.{name}" for p in shard_prefixes])
            else:
                for p in shard_prefixes:
                    with open(f"{p}.{name}", "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 22)
            spec.update(out.checksums())
        f.write(b"\0" * (header.file_bytes - f.tell()))
        f.seek(0)
        f.write(header_bytes(header.to_json()))  # as long as the placeholder: same-width digests
    return header


def header_bytes(blob):
    """What precedes the arrays' padding: magic, length, the JSON header `blob` and its checksum."""
    start = MAGIC + struct.pack("<Q", len(blob)) + blob
    return start + hashlib.sha256(start).digest()


def _lay_out(header, dtypes, lengths):
    """Each array's offset, in file order, after the header; placeholder checksums of the final width.
    The offsets depend on the header's length, which depends on them: grow until it fits."""
    base = 0
    while True:
        pos = base
        header.arrays = {}
        for name in dtypes:
            header.arrays[name] = {"dtype": dtypes[name], "offset": pos, "length": lengths[name],
                                   **{key: "0" * 64 for key in _CHECKSUMS}}
            pos = _align(pos + lengths[name] * np.dtype(dtypes[name]).itemsize)
        header.file_bytes = pos
        end = len(header_bytes(header.to_json()))
        if _align(end) <= base:
            return
        base = _align(end)


class _HashingWriter:
    """Writes one array's `nbytes` bytes to `f`, hashing all of them and the first and last `block`."""

    def __init__(self, f, nbytes, block):
        self.f, self.nbytes, self.block, self.done = f, nbytes, block, 0
        self.tail_start = max(0, nbytes - block)
        self.hashes = {key: hashlib.sha256() for key in _CHECKSUMS}

    def write(self, data):
        data = memoryview(data).cast("B")
        self.f.write(data)
        start, self.done = self.done, self.done + len(data)
        self.hashes["sha256"].update(data)
        if start < self.block:
            self.hashes["sha256_head"].update(data[:self.block - start])
        if self.done > self.tail_start:
            self.hashes["sha256_tail"].update(data[max(0, self.tail_start - start):])

    def checksums(self):
        assert self.done == self.nbytes, (self.done, self.nbytes)
        return {key: h.hexdigest() for key, h in self.hashes.items()}


def _write_offsets(f, length_files, chunk=1 << 22):
    """Turn per-instance int32 lengths into int64 offsets [0, l0, l0+l1, ...], chunk by chunk."""
    total = 0
    f.write(np.zeros(1, dtype=np.int64).tobytes())
    for name in length_files:
        lengths = np.memmap(name, dtype=np.int32, mode="r") if os.path.getsize(name) else []
        for start in range(0, len(lengths), chunk):
            offs = np.cumsum(lengths[start:start + chunk], dtype=np.int64) + total
            f.write(offs.tobytes())
            total = int(offs[-1])


def _max_value(arrays, dtype, chunk=1 << 24):
    """The largest value in these arrays (file names or arrays), -1 if all are empty; chunked."""
    best = -1
    for a in arrays:
        if isinstance(a, str):
            a = np.memmap(a, dtype=dtype, mode="r") if os.path.getsize(a) else np.zeros(0, dtype)
        for start in range(0, a.size, chunk):
            best = max(best, int(a[start:start + chunk].max()))
    return best


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def read_header(path):
    """Parse and check a dataset file's header: magic, version, the header's checksum (version 2),
    file size and the arrays' layout. UserError if it is not a dataset or is damaged."""
    if not os.path.isfile(path):
        raise UserError(f"dataset not found: {path}; create it with preprocess.py --dataset_path {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        start = f.read(16)
        if len(start) < 16 or start[:7] != MAGIC[:7] or start[7] not in READ_VERSIONS:
            raise UserError(f"{path} is not a dataset written by this toolkit's preprocess.py (bad magic "
                            "bytes); re-run preprocess.py, or convert a TencentPretrain dataset.pt with "
                            "scripts/convert_dataset_from_tencentpretrain.py (it is never unpickled as is)")
        (n,) = struct.unpack("<Q", start[8:])
        if n > size - 16:
            raise UserError(f"{path}: truncated dataset file (header runs past the end); re-run preprocess.py")
        blob = f.read(n)
        digest = f.read(DIGEST_BYTES)
    try:
        d = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: corrupt dataset header ({err}); re-run preprocess.py") from None
    version = d.get("version") if isinstance(d, dict) else None
    if version not in READ_VERSIONS:
        raise UserError(f"{path}: dataset format version {version} but this toolkit reads versions "
                        f"{', '.join(map(str, READ_VERSIONS))}; re-run preprocess.py")
    if version != start[7] or (version >= 2 and digest != hashlib.sha256(start + blob).digest()):
        raise UserError(f"{path}: the dataset header (bytes 0-{16 + n}) does not match its checksum: it was "
                        "changed or damaged after preprocess.py wrote it, and its array offsets cannot be "
                        "trusted; re-run preprocess.py (or restore an intact copy)")
    header = DatasetHeader.from_dict(d, path)
    if header.file_bytes != size:
        raise UserError(f"{path}: truncated or damaged dataset file ({size} bytes, header says "
                        f"{header.file_bytes}); re-run preprocess.py")
    _check_layout(header, 16 + n + (DIGEST_BYTES if version >= 2 else 0), path)
    return header


def _check_layout(header, header_end, path):
    """The arrays must lie one after the other from the header's end, each at the next aligned offset,
    and fill the file: a changed offset, length or dtype in a header without checksum shows here."""
    pos = _align(header_end)
    try:
        for name, spec in sorted(header.arrays.items(), key=lambda item: item[1]["offset"]):
            itemsize = np.dtype(spec["dtype"]).itemsize
            if spec["offset"] != pos or spec["length"] < 0:
                raise ValueError(f"array '{name}' at byte {spec['offset']}, {spec['length']} elements, where "
                                 f"the arrays before it put it at byte {pos}")
            pos = _align(pos + spec["length"] * itemsize)
        if pos != header.file_bytes:
            raise ValueError(f"the arrays end at byte {pos}, the file at {header.file_bytes}")
        counts = (header.arrays["offsets"]["length"] - 1, header.arrays["tokens"]["length"])
        if counts != (header.instances_num, header.tokens_num):
            raise ValueError(f"{header.instances_num} instances and {header.tokens_num} tokens in the header, "
                             f"{counts[0]} and {counts[1]} in the arrays")
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: damaged dataset header: {err}; re-run preprocess.py") from None


def verify(path, header=None, full=False):
    """Check a dataset's arrays against the checksums in its header: the first and last
    `checksum_block` bytes of each (cheap: every open does it) or, with `full`, every byte (reads the
    whole file). UserError naming the array on a mismatch. False for a version 1 file: it has no
    checksums to check."""
    header = header or read_header(path)
    if header.version < 2:
        return False
    with open(path, "rb") as f:
        for name, spec in header.arrays.items():
            nbytes = spec["length"] * np.dtype(spec["dtype"]).itemsize
            block = min(header.checksum_block, nbytes)
            parts = [("sha256", 0, nbytes)] if full else [("sha256_head", 0, block),
                                                            ("sha256_tail", nbytes - block, nbytes)]
            for key, start, end in parts:
                if _sha256(f, spec["offset"] + start, end - start) != spec.get(key):
                    raise UserError(
                        f"{path}: array '{name}' (bytes {spec['offset'] + start}-{spec['offset'] + end} of the "
                        f"file) does not match its checksum: the file was damaged after preprocess.py wrote "
                        f"it; re-run preprocess.py (or restore an intact copy)")
    return True


def _sha256(f, offset, nbytes, chunk=1 << 22):
    f.seek(offset)
    h = hashlib.sha256()
    while nbytes > 0:
        data = f.read(min(chunk, nbytes))
        if not data:
            break
        h.update(data)
        nbytes -= len(data)
    return h.hexdigest()


def check_token_ids(dataset, vocab_size):
    """UserError if a token id of `dataset` (a Dataset) is not below the model's `vocab_size`. Uses the
    header's max_token_id; a version 1 file is scanned (vectorised, memory-mapped)."""
    top = dataset.max_token_id()
    if top >= vocab_size:
        raise UserError(f"{dataset.path} holds token id {top}, but the model's vocabulary has {vocab_size} ids "
                        f"(0-{vocab_size - 1}): the dataset was made with another vocabulary than its header "
                        "says, or is damaged; re-run preprocess.py with the model's vocabulary "
                        "(--vocab_path / --spm_model_path)")


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
        verify(path, self.header)  # the ends of every array
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

    def max_token_id(self):
        """The largest token id (in tokens and mlm_targets): from the header, or computed for a
        version 1 file."""
        if self.header.max_token_id is not None:
            return self.header.max_token_id
        return max(_max_value([self.arrays[name]], None) for name in _TOKEN_ARRAYS if name in self.arrays)

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
