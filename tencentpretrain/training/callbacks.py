"""Hooks into the training loop.

A callback is an object with some of the methods below; the trainer calls each hook on every
callback in list order. WID (and anything else that must not fork the loop) plugs in here:

    on_train_begin(trainer)         in fit(), after the model, optimizer and any resumed state are ready
                                    (every rank: collectives are allowed)
    extra_loss(trainer, batch, out) per micro-batch, inside autocast; a scalar added to the loss, or None
    after_backward(trainer)         once per optimizer step, after the last micro-batch's backward:
                                    gradients are complete (averaged over micro-batches and ranks) and
                                    already unscaled under fp16, so they can be read or edited before
                                    clipping and `optimizer.step()`
    on_step_end(trainer, step)      after the optimizer and scheduler step; `step` counts optimizer steps
    on_save(trainer, model_path)    rank 0, after a checkpoint pair was written
    on_train_end(trainer)           after the final save
    param_claims(model)             parameter groups with their own lr / weight decay (see optim.py)
    state_dict() / load_state_dict(state)   extra state kept in the training-state file under `key()`;
                                    saved from rank 0, so it must be identical on every rank; restored by
                                    Trainer.resume(), i.e. before on_train_begin

`trainer` exposes `model` (unwrapped), `ddp_model`, `optimizer`, `scheduler`, `scaler`, `step`,
`cfg` and `env` (rank, world size, device).
"""


class Callback:
    # Key under which state_dict() is stored in the training-state file; unique per callback.
    state_key = None

    def param_claims(self, model):
        return []

    def on_train_begin(self, trainer):
        pass

    def extra_loss(self, trainer, batch, output):
        return None

    def after_backward(self, trainer):
        pass

    def on_step_end(self, trainer, step):
        pass

    def on_save(self, trainer, model_path):
        pass

    def on_train_end(self, trainer):
        pass

    def state_dict(self):
        return None

    def load_state_dict(self, state):
        pass

    def key(self):
        return self.state_key or type(self).__name__
