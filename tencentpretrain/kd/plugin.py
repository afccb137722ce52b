"""KD inside the training loop: one Callback plus a parameter-group claim (see training/callbacks.py).

    build          the teacher (frozen, eval mode), and the learned projection student hidden -> teacher
                   hidden when a term compares hidden states; forward hooks (layers/capture.py) on the
                   student and the teacher record the states the terms compare
    claims         the projection gets its own parameter group (`kd_projection`, the run's lr)
    on_train_begin the teacher to the run's device
    extra_loss     per micro-batch: the teacher's forward on the same batch (no gradients), then the
                   weighted terms (losses.py), plus (kd.mlm - 1) x the student's own loss so that it counts
                   kd.mlm times; each term is reported as kd_<term> in the progress line and TensorBoard
    state_dict     the projection's weights (the student's checkpoint holds only the student)

The projection is a submodule of the student (so the optimizer, clipping and DDP treat it like the
student's weights) that the student's state dict leaves out; the teacher is not a submodule at all.
"""
import torch
from torch import nn

from tencentpretrain.constants import IGNORE_INDEX
from tencentpretrain.errors import UserError
from tencentpretrain.kd import losses
from tencentpretrain.kd.config import RELATIONS, plan
from tencentpretrain.kd.teacher import load_teacher
from tencentpretrain.layers.capture import Capture
from tencentpretrain.training.callbacks import Callback
from tencentpretrain.training.optim import ParamGroupClaim
from tencentpretrain.utils.log import info

PROJECTION = "kd_projection"  # the attribute of the student holding the projection
LOGITS = "target.mlm.linear_2"  # the student's MLM logits (at the predicted positions)


class Projection(nn.Linear):
    """TinyBERT's learned map from the student's hidden size to the teacher's. Identity at the start when
    the sizes agree, else BERT's N(0, 0.02). Kept out of the state dict of the model holding it."""

    def __init__(self, student_hidden, teacher_hidden):
        super().__init__(student_hidden, teacher_hidden)
        with torch.no_grad():
            if student_hidden == teacher_hidden:
                self.weight.copy_(torch.eye(student_hidden))
            else:
                nn.init.normal_(self.weight, 0.0, 0.02)
            self.bias.zero_()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        pass  # not part of the student: saved in the training state (KdCallback.state_dict)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        pass


class KdCallback(Callback):
    state_key = "kd"

    def __init__(self, model, kd, teacher, layer_plan):
        self.kd, self.teacher, self.plan = kd, teacher, layer_plan
        self.weights = kd.weights()
        self.projection = getattr(model, PROJECTION, None)
        self.precision = "fp32"  # the run's, set in on_train_begin
        s_hidden, t_hidden, s_attn, t_attn = set(), set(), set(), set()
        for s, t in layer_plan.hidden_pairs + ([layer_plan.cosine_pair] if layer_plan.cosine_pair else []):
            s_hidden.add(s), t_hidden.add(t)
        for s, t in layer_plan.attention_pairs + ([layer_plan.relation_layers] if layer_plan.relation_layers else []):
            s_attn.add(s), t_attn.add(t)
        self.student = Capture(model, s_hidden, s_attn, [LOGITS] if kd.logits else [])
        self.teacher_capture = Capture(teacher, t_hidden, t_attn)

    def claims(self):
        if self.projection is None:
            return []
        return [ParamGroupClaim(PROJECTION, lambda name, _p: name.startswith(PROJECTION + "."))]

    # ---- the hooks ------------------------------------------------------------------------------
    def on_train_begin(self, trainer):
        self.teacher.to(trainer.env.device)
        self.precision = trainer.cfg.precision

    def extra_loss(self, trainer, batch, output):
        terms = self.terms(batch)
        loss = sum(self.weights[name] * value for name, value in terms.items())
        if self.kd.mlm != 1.0:
            loss = loss + (self.kd.mlm - 1.0) * output.loss
        for name, value in terms.items():  # averaged over micro-batches in the report line
            output.metrics[f"kd_{name}"] = (value.detach(), 1)
        return loss

    # ---- the terms ------------------------------------------------------------------------------
    def teacher_autocast(self, device):
        """bf16 for the teacher's forward when kd.teacher_bf16 says so, fp32 otherwise (also inside a
        bf16 run's autocast)."""
        bf16 = self.kd.teacher_bf16
        if bf16 == "auto":
            bf16 = self.precision == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(bf16))

    def terms(self, batch):
        """name -> loss tensor of every weighted term, comparing the student's last forward (recorded by
        its hooks) with the teacher's forward on `batch`."""
        src, seg = batch["src"], batch["seg"]
        teacher = self.teacher_capture
        with torch.no_grad(), self.teacher_autocast(src.device):
            t_hidden = self.teacher.encode(src, seg)
            if self.kd.logits:
                t_logits = self.teacher.target.mlm.logits(t_hidden[batch["tgt_mlm"] != IGNORE_INDEX])
        try:
            with torch.autocast(src.device.type, enabled=False):
                return self._terms(self.student, teacher, seg > 0, t_logits if self.kd.logits else None)
        finally:
            self.student.clear()
            teacher.clear()

    def _terms(self, s, t, valid, t_logits):
        kd, p, out = self.kd, self.plan, {}
        project = lambda h: self.projection(h.float())  # noqa: E731  (student hidden -> teacher hidden)
        if kd.logits:
            out["logits"] = losses.soft_target_kl(s.outputs[LOGITS], t_logits, kd.temperature)
        if kd.cosine:
            i, j = p.cosine_pair
            out["cosine"] = losses.cosine(project(s.hidden[i]), t.hidden[j], valid)
        if kd.hidden_mse:
            out["hidden_mse"] = sum(losses.hidden_mse(project(s.hidden[i]), t.hidden[j], valid)
                                    for i, j in p.hidden_pairs)
        if kd.attention_mse:
            out["attention_mse"] = sum(
                losses.attention_mse(s.attention[i].scores(torch.float32), t.attention[j].scores(torch.float32),
                                     valid) for i, j in p.attention_pairs)
        if p.relation_layers:
            i, j = p.relation_layers
            sa, ta = s.attention[i], t.attention[j]
            for name, (x, y) in RELATIONS.items():
                if getattr(kd, name):
                    out[name] = losses.relation_kl((getattr(sa, x), getattr(sa, y)),
                                                   (getattr(ta, x), getattr(ta, y)), p.relation_heads, valid)
        return out

    # ---- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        state = {"settings": self._resumable_settings()}
        if self.projection is not None:
            state["projection"] = {"weight": self.projection.weight.detach().cpu().clone(),
                                   "bias": self.projection.bias.detach().cpu().clone()}
        return state

    def _resumable_settings(self):
        """The block without what a resume may change: the teacher's paths (the same teacher may have
        moved) and teacher_bf16 (numerics of the teacher's forward only)."""
        skip = ("teacher_model_path", "teacher_config_path", "teacher_bf16")
        return {k: v for k, v in self.kd.settings().items() if k not in skip and v is not None}

    def load_state_dict(self, state):
        saved, now = state.get("settings", {}), self._resumable_settings()
        changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        if changed:
            raise UserError("the checkpoint was trained with other kd settings: " + "; ".join(
                f"kd.{k} {saved.get(k)!r} then, {now.get(k)!r} now" for k in changed) +
                ". Resume with the checkpoint's kd block (only the teacher's paths and kd.teacher_bf16 may change)")
        projection = state.get("projection")
        if projection is not None and self.projection is not None:
            if projection["weight"].shape != self.projection.weight.shape:
                raise UserError(f"the checkpoint's KD projection maps {projection['weight'].shape[1]} -> "
                                f"{projection['weight'].shape[0]}, this run's student and teacher need "
                                f"{self.projection.in_features} -> {self.projection.out_features}: resume with "
                                f"the checkpoint's teacher")
            with torch.no_grad():
                self.projection.weight.copy_(projection["weight"])
                self.projection.bias.copy_(projection["bias"])


def build_kd_plugin(model, model_cfg, train_cfg=None):
    """KD's training plugins (KdFeature.training_plugins, called by pretrain.py): ([callback], [claims]).
    Loads the teacher and attaches the projection to `model`."""
    kd = model_cfg.kd
    teacher, teacher_cfg = load_teacher(kd, model_cfg, need_mlm_head=bool(kd.logits))
    if kd.logits and not hasattr(model.target, "mlm"):
        raise UserError(f"kd.logits distils the MLM head, but the student's targets are {model_cfg.target}; add "
                        f"the mlm target (--target mlm)")
    layer_plan = plan(kd, model_cfg, teacher_cfg)
    if layer_plan.projection is not None and not hasattr(model, PROJECTION):
        model.add_module(PROJECTION, Projection(*layer_plan.projection))
    cb = KdCallback(model, kd, teacher, layer_plan)
    info(f"kd: teacher {kd.teacher_model_path} ({teacher_cfg.layers_num} layers, hidden {teacher_cfg.hidden_size}, "
         f"{teacher_cfg.heads_num} heads), terms " + ", ".join(f"{n} x{w:g}" for n, w in cb.weights.items()) +
         f", mlm x{kd.mlm:g}" + (f", projection {layer_plan.projection[0]} -> {layer_plan.projection[1]}"
                                 if layer_plan.projection else ""), flush=True)
    return [cb], cb.claims()
