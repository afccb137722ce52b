"""The demo's run directory and stage loop: which stages a preset runs, where each model lives, timing,
resuming, and pretrain.py as a subprocess."""
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.utils.io import write_json

from . import stages as st
from .files import read_json
from .presets import Preset


@dataclass
class Demo:
    preset: Preset
    run_dir: str
    python: str = sys.executable
    threads: int = 2
    stage_seconds: dict = field(default_factory=dict)

    def path(self, *parts):
        return os.path.join(self.run_dir, *parts)

    def stages(self):
        """[(name, function of the demo)] in running order; optional stages follow the preset."""
        p = self.preset
        out = [("teacher", st.teacher), ("data", st.data), ("adapt", st.adapt)]
        if p.probe_steps:
            out.append(("probe", st.probe))
        out += [("wid", st.wid), ("merge", st.merge)]
        if p.baselines:
            out += [("random", st.random_init), ("pruned", st.pruned)]
        out += [("evaluate", st.evaluate), ("finetune", st.finetune), ("latency", st.latency),
                ("report", st.report)]
        return [(name, lambda fn=fn: fn(self)) for name, fn in out]

    def models(self):
        names = ["teacher", "wid"] + (["random", "pruned"] if self.preset.baselines else [])
        return {n: self.model_files(n) for n in names}

    def model_files(self, name):
        """(weights, config) of a compared model."""
        return {"teacher": (self.path("adapt", "teacher.bin"), self.path("teacher", "teacher_config.json")),
                "wid": (self.path("wid", "student.bin"), self.path("wid", "student_config.json")),
                "random": (self.path("random", "student.bin"), self.path("student_config.json")),
                "pruned": (self.path("pruned", "student.bin"), self.path("pruned", "pruned_init_config.json"))}[name]

    def finetune_path(self, name, lr, seed):
        return self.path("finetune", f"{name}_lr{lr:g}_seed{seed}.json")

    def run(self, only=None):
        """Every stage in order (or those named in `only`); a stage returns "skipped" when its outputs exist."""
        import torch
        os.makedirs(self.path("logs"), exist_ok=True)
        torch.set_num_threads(self.threads)
        stages = self.stages()
        timing_path = self.path("stage_seconds.json")
        if os.path.isfile(timing_path):
            self.stage_seconds = read_json(timing_path)
        start = time.time()
        for i, (name, fn) in enumerate(stages, 1):
            if only and name not in only:
                continue
            t0 = time.time()
            print(f"[{i}/{len(stages)}] {name} ...", flush=True)
            done = fn()
            took = time.time() - t0
            if done != "skipped":
                self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + took
                write_json(timing_path, self.stage_seconds)
            print(f"[{i}/{len(stages)}] {name}: {'already done, skipped' if done == 'skipped' else 'done'} "
                  f"({took:.0f} s; {time.time() - start:.0f} s since start)", flush=True)
        return self.path("results.json")

    def pretrain(self, stage, dataset, config, init, output, steps, lr, warmup=0.1, scheduler="linear"):
        """One pretrain.py run as a subprocess; resumes from its last checkpoint when re-run."""
        p = self.preset
        cmd = [self.python, os.path.join(repo_root(), "pretrain.py"), "--dataset_path", dataset,
               "--config_path", config, "--output_model_path", output, "--total_steps", str(steps),
               "--batch_size", str(p.batch_size), "--learning_rate", str(lr), "--warmup", str(warmup),
               "--scheduler", scheduler, "--report_steps", str(p.report_steps),
               "--save_checkpoint_steps", str(p.save_checkpoint_steps), "--seed", "7", "--resume"]
        if init:
            cmd += ["--pretrained_model_path", init]
        log = self.path("logs", f"{stage}.log")
        os.makedirs(os.path.dirname(output), exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write("$ " + shlex.join(cmd) + "\n")
        print("  $ " + shlex.join(cmd), flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=repo_root()) as proc, open(log, "a", encoding="utf-8") as f:
            for line in proc.stdout:
                f.write(line)
                f.flush()
                print("  " + line.rstrip(), flush=True)
        if proc.returncode != 0:
            raise UserError(f"stage {stage}: pretrain.py exited with status {proc.returncode}; see {log}. "
                            f"Re-running the demo resumes from the last checkpoint.")
