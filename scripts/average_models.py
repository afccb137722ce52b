r"""Average the weights of several checkpoints of one model (e.g. the last few saves of a run).

    python scripts/average_models.py --model_list_path models/model.bin-8000 models/model.bin-9000 \
        models/model.bin-10000 --output_model_path models/model_avg.bin

Every checkpoint must have the same keys with the same shapes. Floating-point tensors are averaged
(summed in float64, stored in their own dtype); other tensors (integer counters, boolean masks) must be
equal in all checkpoints and are copied. The output is a plain state dict (.safetensors by extension);
load it with the same --config_path as the inputs.

Guide: docs/migrating.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

import torch  # noqa: E402

from tencentpretrain.errors import UserError, run_cli  # noqa: E402
from tencentpretrain.inference_utils import HelpFormatter  # noqa: E402
from tencentpretrain.model_io import load_state_dict_file, save_state_dict  # noqa: E402


def _listing(keys, limit=5):
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_compatible(first, first_path, sd, path):
    """`sd` must have exactly the keys, shapes and dtype kinds of `first`."""
    missing, extra = set(first) - set(sd), set(sd) - set(first)
    if missing or extra:
        parts = ([f"{len(missing)} keys missing ({_listing(missing)})"] if missing else []) + \
                ([f"{len(extra)} extra keys ({_listing(extra)})"] if extra else [])
        raise UserError(f"{path} does not have the keys of {first_path}: {'; '.join(parts)}; "
                        f"average only checkpoints of the same model")
    for key, value in first.items():
        if sd[key].shape != value.shape:
            raise UserError(f"{path}: {key} has shape {tuple(sd[key].shape)} but {tuple(value.shape)} in "
                            f"{first_path}; average only checkpoints of the same model config")
        if sd[key].is_floating_point() != value.is_floating_point():
            raise UserError(f"{path}: {key} is {sd[key].dtype} but {value.dtype} in {first_path}")


def average(paths):
    """The element-wise mean of the checkpoints at `paths` (see the module docstring)."""
    first = load_state_dict_file(paths[0])
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first.items()}
    for path in paths[1:]:
        sd = load_state_dict_file(path)
        check_compatible(first, paths[0], sd, path)
        for key, value in sd.items():
            if value.is_floating_point():
                sums[key] += value.double()
            elif not torch.equal(value, first[key]):
                raise UserError(f"{path}: the non-float tensor {key} ({value.dtype}) differs from {paths[0]}; "
                                f"it cannot be averaged")
    return {k: (v / len(paths)).to(first[k].dtype) if first[k].is_floating_point() else v
            for k, v in sums.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model_list_path", nargs="+", required=True,
                        help="the checkpoints to average (.bin or .safetensors)")
    parser.add_argument("--output_model_path", required=True, help="where to write the averaged weights")
    args = parser.parse_args(argv)
    avg = average(args.model_list_path)
    save_state_dict(avg, args.output_model_path)
    print(f"averaged {len(args.model_list_path)} checkpoints ({len(avg)} tensors) -> {args.output_model_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
