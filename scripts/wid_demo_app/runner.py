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
        out += [(f"kd_{recipe}", lambda demo, r=recipe: st.kd_student(demo, r)) for recipe in p.kd_recipes]
        out += [("evaluate", st.evaluate), ("finetune", st.finetune)]
        if p.glue_args:
            out.append(("glue", st.glue))
            if p.matched:
                out.append(("matched", st.matched))
        out.append(("latency", st.latency))
        if p.attention:
            out.append(("attention", st.attention))
        out.append(("report", st.report))
        return [(name, lambda fn=fn: fn(self)) for name, fn in out]

    def students(self, matched=True):
        """The compared students in table order (the wall-clock-matched variant last, once trained)."""
        names = ["wid"] + (["random", "pruned"] if self.preset.baselines else [])
        names += [f"kd_{recipe}" for recipe in self.preset.kd_recipes]
        record = self.path("matched.json")
        if matched and os.path.isfile(record):
            names.append(read_json(record)["name"])
        return names

    def models(self):
        return {n: self.model_files(n) for n in ["teacher"] + self.students()}

    def model_files(self, name):
        """(weights, config) of a compared model; `<method>_matched` is that method's wall-clock-matched run."""
        if name == "teacher":
            return self.path("adapt", "teacher.bin"), self.path("teacher", "teacher_config.json")
        method = name[:-len("_matched")] if name.endswith("_matched") else name
        if method == "wid":
            return self.path(name, "student.bin"), self.path(name, "student_config.json")
        if method == "pruned":
            return self.path(name, "student.bin"), self.path("pruned", "pruned_init_config.json")
        if method == "random" or method.startswith("kd_"):
            return self.path(name, "student.bin"), self.path("student_config.json")
        raise KeyError(name)

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
               "--save_checkpoint_steps", str(p.save_checkpoint_steps), "--seed", str(p.seed), "--resume"]
        if init:
            cmd += ["--pretrained_model_path", init]
        if p.pretrain_bf16:
            cmd.append("--bf16")
        os.makedirs(os.path.dirname(output), exist_ok=True)
        self.run_logged(stage, cmd, "pretrain.py", "Re-running the demo resumes from the last checkpoint.")

    def run_logged(self, stage, cmd, what, on_failure):
        """Run `cmd` at self.threads threads, its output on the terminal and appended to logs/<stage>.log."""
        log = self.path("logs", f"{stage}.log")
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
            raise UserError(f"stage {stage}: {what} exited with status {proc.returncode}; see {log}. {on_failure}")
