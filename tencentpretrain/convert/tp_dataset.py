"""Read TencentPretrain's pickled `dataset.pt` without running code, and write this toolkit's dataset file.

TencentPretrain's preprocess.py pickles every instance on its own (one `pickle.dump` per instance; the
worker files are then concatenated), so dataset.pt is a stream of pickles. The bert and mlm processors
write these tuples:

    bert, static masking    ((src, pad_num), tgt_mlm, is_random_next, seg_pos)
    bert, dynamic masking   ((src, pad_num), is_random_next, seg_pos)
    mlm,  static masking    ((src, pad_num), tgt_mlm, seg_pos)
    mlm,  dynamic masking   ((src, pad_num), seg_pos)

`src` holds the ids without padding ([CLS] A [SEP] B [SEP] for bert; masked ids under static masking);
its loader appends `pad_num` pads, so len(src) + pad_num is the --seq_length of the whole file.
`tgt_mlm` lists (position, original id) pairs; `is_random_next` is 1 when B is a random sentence;
`seg_pos` is [end of A, end of B] for bert and [len(src)] for mlm.

Safety: a pickle can name any importable callable and call it. `_PlainUnpickler.find_class` refuses
every name, so only the opcodes that build plain containers and scalars can run; then each instance
must match one of the layouts above exactly (tuples, lists and ints only), or the file is refused.
"""
import hashlib
import io
import os
import pickle
import shutil
import tempfile

import numpy as np

from tencentpretrain.data.dataset import DatasetHeader, ShardWriter, assemble, position_dtype, token_dtype
from tencentpretrain.errors import UserError

LAYOUTS = {  # (processor, static masking) -> field names after (src, pad_num)
    ("bert", True): ("tgt_mlm", "is_random_next", "seg_pos"),
    ("bert", False): ("is_random_next", "seg_pos"),
    ("mlm", True): ("tgt_mlm", "seg_pos"),
    ("mlm", False): ("seg_pos",),
}


class _Refused(Exception):
    """Raised inside the unpickler; turned into a UserError that names the instance."""


class _PlainUnpickler(pickle.Unpickler):
    """Builds lists, tuples, ints, strings etc.; refuses every global name and persistent id."""

    def find_class(self, module, name):
        raise _Refused(f"it asks to import {module}.{name}")

    def persistent_load(self, pid):
        raise _Refused("it holds a persistent id")


def read_instances(path):
    """Yield (index, instance) from a stream of pickles, unpickled by `_PlainUnpickler`."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        index = 0
        while f.tell() < size:
            start = f.tell()
            try:
                obj = _PlainUnpickler(f).load()
            except _Refused as err:
                raise UserError(f"{path}: refused instance {index} (byte {start}): {err}. A TencentPretrain "
                                f"dataset holds only lists, tuples and integers, so this is not one (or it was "
                                f"altered); nothing in it was run and nothing was written") from None
            except Exception as err:  # any malformed stream: pickle raises many types
                if isinstance(err, EOFError) or "truncated" in str(err):
                    raise UserError(f"{path}: truncated in instance {index} (byte {start} of {size}); re-run "
                                    f"TencentPretrain's preprocess.py or copy the file again") from None
                raise UserError(f"{path}: instance {index} (byte {start}) is not a readable pickle ({err}); "
                                f"is this a TencentPretrain dataset.pt?") from None
            yield index, obj
            index += 1


def _ints(value, what):
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise ValueError(f"{what} is not a list of integers")
    return value


def _guess(obj):
    """The (processor, static) layouts an instance's shape fits, for the error message."""
    if not isinstance(obj, tuple):
        return []
    fits = []
    for (proc, static), names in LAYOUTS.items():
        if len(obj) == 1 + len(names) and (not static or isinstance(obj[1], list)) and \
                (proc != "bert" or static or type(obj[1]) is int):
            fits.append(f"{proc} with {'static' if static else 'dynamic'} masking")
    return fits


def parse_instance(obj, processor):
    """One TencentPretrain instance -> (fields for ShardWriter.add, seq_length, static masking).

    ValueError says what does not fit the `processor` layouts (and which processor's it looks like).
    """
    try:
        return _parse(obj, processor)
    except ValueError as err:
        others = [f for f in _guess(obj) if not f.startswith(processor)]
        if others:
            raise ValueError(f"{err}; it looks like {' or '.join(others)}: pass --data_processor "
                             f"{others[0].split()[0]}") from None
        raise


def _parse(obj, processor):
    if not isinstance(obj, tuple) or not obj or not isinstance(obj[0], tuple) or len(obj[0]) != 2:
        raise ValueError(f"expected a tuple ((src, pad_num), ...), got {type(obj).__name__}")
    static = {len(names) + 1: s for (p, s), names in LAYOUTS.items() if p == processor}.get(len(obj))
    if static is None:
        raise ValueError(f"a tuple of {len(obj)} is not a '{processor}' instance")
    src, pad_num = _ints(obj[0][0], "src"), obj[0][1]
    if type(pad_num) is not int or pad_num < 0:
        raise ValueError("pad_num is not a non-negative integer")
    fields = dict(zip(LAYOUTS[processor, static], obj[1:]))
    seg_pos = _ints(fields["seg_pos"], "seg_pos")
    out = {"tokens": src}
    if processor == "bert":
        if len(seg_pos) != 2 or not 0 < seg_pos[0] < seg_pos[1] == len(src):
            raise ValueError(f"seg_pos {seg_pos} is not [end of A, end of B = {len(src)}]")
        if fields["is_random_next"] not in (0, 1) or type(fields["is_random_next"]) is not int:
            raise ValueError("is_random_next is not 0 or 1")
        out.update(seg_split=seg_pos[0], is_random_next=fields["is_random_next"])
    elif seg_pos != [len(src)]:
        raise ValueError(f"seg_pos {seg_pos} is not [{len(src)}] (the length of src)")
    if static:
        pairs = fields["tgt_mlm"]
        if not isinstance(pairs, list) or not all(
                isinstance(p, tuple) and len(p) == 2 and type(p[0]) is int and type(p[1]) is int for p in pairs):
            raise ValueError("tgt_mlm is not a list of (position, id) pairs")
        positions = [p for p, _ in pairs]
        if positions and not 0 <= min(positions) <= max(positions) < len(src):
            raise ValueError(f"a masked position lies outside src (length {len(src)})")
        out.update(mlm_positions=positions, mlm_targets=[t for _, t in pairs])
    return out, len(src) + pad_num, static


def _check_ids(fields, vocab_size, specials, processor):
    ids = fields["tokens"] + fields.get("mlm_targets", [])
    if ids and not 0 <= min(ids) <= max(ids) < vocab_size:
        raise ValueError(f"token id {max(ids) if max(ids) >= vocab_size else min(ids)} is outside the "
                         f"vocabulary (size {vocab_size})")
    if processor == "bert" and fields["tokens"][0] != specials["cls"]:
        raise ValueError(f"it starts with id {fields['tokens'][0]}, but [CLS] is {specials['cls']} in this "
                         f"vocabulary: pass the --vocab_path TencentPretrain's preprocess.py used")


def convert_dataset(input_path, output_path, processor, tokenizer, vocab_file, whole_word_masking=False,
                    seq_length=None, tokenizer_name="bert", do_lower_case=True, log=print):
    """Convert TencentPretrain's `input_path` to our dataset file `output_path`; returns its header.

    `tokenizer` must be the vocabulary TencentPretrain's preprocess.py used: its special ids are
    checked against the instances and recorded. `whole_word_masking` matters for dynamic masking
    (our loader then masks whole words); `seq_length`, when given, must equal the file's.
    """
    if processor not in ("bert", "mlm"):
        raise UserError(f"--data_processor {processor}: this converter reads TencentPretrain's bert and mlm "
                        f"datasets; re-run preprocess.py on the corpus for other processors")
    if not os.path.isfile(input_path):
        raise UserError(f"--input_path {input_path}: file not found (TencentPretrain's preprocess.py "
                        f"--dataset_path output, e.g. dataset.pt)")
    if os.path.isdir(output_path) or os.path.abspath(output_path) == os.path.abspath(input_path):
        raise UserError(f"--output_path {output_path}: give a new file name, e.g. dataset.tpd")
    if os.path.getsize(input_path) == 0:
        raise UserError(f"{input_path} is empty: it holds no instance")
    vocab_size = tokenizer.vocab_size
    specials = {r: int(getattr(tokenizer, f"{r}_id")) for r in ("pad", "unk", "cls", "sep", "mask")}
    out_dir = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=out_dir)
    header = writer = None
    try:
        for index, obj in read_instances(input_path):
            try:
                fields, length, static = parse_instance(obj, processor)
                _check_ids(fields, vocab_size, specials, processor)
                if header is None:
                    if seq_length is not None and seq_length != length:
                        raise ValueError(f"its length with padding is {length}, not --seq_length {seq_length}")
                    header = _header(input_path, processor, length, static, tokenizer, vocab_file, specials,
                                     whole_word_masking, tokenizer_name, do_lower_case)
                    writer = ShardWriter(os.path.join(tmp, "shard0"), header)
                elif length != header.seq_length:
                    raise ValueError(f"its length with padding is {length} but instance 0's is "
                                     f"{header.seq_length}; one dataset has one --seq_length")
                elif static == header.dynamic_masking:
                    raise ValueError("it mixes static and dynamic masking with the instances before it")
            except ValueError as err:
                raise UserError(f"{input_path}: instance {index}: {err}; nothing written") from None
            writer.add(**fields)
        if header is None:
            raise UserError(f"{input_path} holds no instance")
        writer.close()
        extra = {}
        if whole_word_masking and header.dynamic_masking:
            from tencentpretrain.data.masking import continuation_table
            ids = list(range(vocab_size))
            extra["is_continuation"] = continuation_table(tokenizer.convert_ids_to_tokens(ids)).astype(np.uint8)
        assemble(output_path, header, [os.path.join(tmp, "shard0")], extra)
    finally:
        for f in (writer.files.values() if writer is not None else ()):
            f.close()  # a no-op once ShardWriter.close has run
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"converted {header.instances_num} instances ({header.tokens_num} tokens, seq_length "
        f"{header.seq_length}, {'dynamic' if header.dynamic_masking else 'static'} masking, '{processor}' "
        f"processor) from {input_path} to {output_path}")
    return header


def _header(input_path, processor, seq_length, static, tokenizer, vocab_file, specials, whole_word_masking,
            tokenizer_name, do_lower_case):
    sha = None
    if vocab_file and os.path.isfile(vocab_file):
        with open(vocab_file, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
    vocab_size = tokenizer.vocab_size
    return DatasetHeader(
        processor=processor, seq_length=seq_length, vocab_size=vocab_size, special_ids=specials,
        dynamic_masking=not static, token_dtype=token_dtype(vocab_size), position_dtype=position_dtype(seq_length),
        whole_word_masking=whole_word_masking, tokenizer=tokenizer_name, do_lower_case=do_lower_case,
        vocab_path=os.path.abspath(vocab_file) if vocab_file else None, vocab_sha256=sha,
        corpus={"path": os.path.abspath(input_path), "bytes": os.path.getsize(input_path),
                "format": "TencentPretrain dataset.pt (pickle stream), converted"})


def write_tencentpretrain_dataset(instances):
    """The bytes TencentPretrain's preprocess.py writes for these instances (one pickle per instance).
    For tests and examples."""
    buf = io.BytesIO()
    for instance in instances:
        pickle.dump(instance, buf)
    return buf.getvalue()
