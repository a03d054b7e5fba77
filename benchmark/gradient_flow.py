"""The Zoneout paper's gradient-flow experiment (Figure 6): how much gradient reaches early steps.

    regbench gradient-flow                               # embedded digits, 64 permuted pixels
    regbench gradient-flow --task pmnist --data-dir shared/data --batch-size 100   # the paper: one full epoch

Three one-layer LSTMs are trained for one epoch on permuted sequential pixels: unregularized,
zoneout on the cells (``z_cells = 0.5, z_states = 0``) and dropout on the cells (a fresh zero
mask at every step, ``c_t = d ⊙ ĉ_t`` with ``d ~ Bernoulli(0.5)``, no rescaling; the expectation
``0.5 ĉ_t`` in eval). Then, with the regularizer active as in training, the gradient of the loss
with respect to every cell ``c_t`` is measured on ``--grad-batches`` batches of the validation
split: ``g_t = mean over examples of ‖∂L/∂c_t‖₂``, normalised by ``Σ_t g_t``. The paper's
finding: zoneout carries the most gradient back to early steps; per-step cell dropout the least.

Training is the benchmark's own: :class:`benchmark.models.SequenceClassifier` (the pMNIST task's
model) fitted by Lightning's Trainer. ``∂L/∂c_t`` (total derivative of the cell state carried to
the next step) is the gradient into the very ``c_t`` tensors of the layer's forward, run through
the library's reference loop and handed over by its ``observe_cells`` hook (:func:`cell_gradients`);
no LSTM equation is repeated here.

Output (``--out``, default ``regbench_runs/gradient_flow``; the committed figure is ``leaderboards/gradient_flow``): ``gradient_flow_<task>.png`` (the
curves), ``.csv`` (every step) and ``.md`` (a table, the settings and the command).

The per-step cell dropout is :class:`CellDropout`, a regularizer defined here and not
registered (it is not one of the benchmark's eight: ``rnndrop`` uses one mask per sequence).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = "the paper's gradient-flow experiment (Figure 6): normalised mean |dL/dc_t| per step"

VARIANTS: tuple[tuple[str, str], ...] = (
    ("none", "unregularized"),
    ("zoneout", "zoneout z_cells=0.5, z_states=0"),
    ("cell_dropout", "dropout on cells p=0.5 (per-step mask)"),
)


def _cell_dropout_class():
    from regularizers.base import Regularizer, SequenceContext
    from regularizers.hyperparameters import probability

    class CellDropout(Regularizer):
        """Dropout on the memory cell with a fresh mask at every step: ``c_t = d_t ⊙ ĉ_t``."""

        name = "cell_dropout"
        cell_types = ("lstm",)
        paper = "Krueger et al. 2016, Figure 6 baseline"
        hyperparameters = {"p": probability(0.5, "probability of zeroing a cell unit at a step", search=None,
                                            allow_one=False)}

        def masks(self, ctx: SequenceContext):
            if not ctx.training:
                return {"cell": ctx.constant(1 - self.p)}
            return {"cell": ctx.bernoulli(1 - self.p)}

    return CellDropout


_CELL_DROPOUT = None


def cell_dropout(p: float = 0.5):
    """A per-step cell-dropout regularizer instance (see the module docstring)."""
    global _CELL_DROPOUT
    if _CELL_DROPOUT is None:
        _CELL_DROPOUT = _cell_dropout_class()
    return _CELL_DROPOUT(p=p)


def make_regularizer(variant: str):
    import regularizers

    if variant == "none":
        return "none"
    if variant == "zoneout":
        return regularizers.build("zoneout", z_cells=0.5, z_states=0.0)
    if variant == "cell_dropout":
        return cell_dropout(0.5)
    raise ValueError(f"unknown variant {variant!r}")


@contextmanager
def _reference_loop(lstm):
    """Run ``lstm`` through the reference loop, the one whose steps :func:`observe_cells` sees."""
    previous = lstm.use_fused
    lstm.use_fused = False
    try:
        yield
    finally:
        lstm.use_fused = previous


def _probe(lstm, compute_loss) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(loss, ‖∂L/∂c_t‖₂ per example as (T, B)) of ``compute_loss()``, which runs ``lstm`` once."""
    import torch
    from regularizers.reference import observe_cells

    if lstm.num_layers != 1 or lstm.cell_type != "lstm" or lstm.bidirectional:
        raise ValueError("the cell-gradient probe takes a one-layer, one-direction RegularizedLSTM")
    cells = []
    with _reference_loop(lstm), observe_cells(lambda step, cell: cells.append(cell)):
        loss = compute_loss()
    # c_t is the tensor the loop carries on (and, without zoneout, h_t uses): the gradient into it
    # is the total derivative. The last cell of zoneout feeds nothing: no gradient, counted as 0.
    grads = torch.autograd.grad(loss, cells, allow_unused=True)
    norms = torch.stack([g.norm(dim=-1) if g is not None else c.new_zeros(c.size(0)) for g, c in zip(grads, cells)])
    return loss.detach(), norms.detach()


def cell_gradients(lstm, x, loss_fn) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Run a 1-layer ``RegularizedLSTM`` and return (loss, ‖∂L/∂c_t‖₂ per example), the latter (T, B).

    ``c_t`` is the cell state carried to step t+1, and ``∂L/∂c_t`` its total derivative: through
    the next steps and, where ``h_t`` is computed from it (no regularizer, cell dropout), through
    ``h_t``; zoneout's ``h_t`` uses ``ĉ_t``, not the zoned-out ``c_t`` (paper, eq. 5). The layer runs
    its own forward through the library's reference loop, whose :func:`regularizers.reference.observe_cells`
    hook hands over every ``c_t``; the forward values are the layer's (the tests check this).
    ``x`` and ``loss_fn``'s argument use the layer's layout (batch_first or not).
    """
    return _probe(lstm, lambda: loss_fn(lstm(x)[0]))


def model_cell_gradients(model, x, y) -> tuple["torch.Tensor", "torch.Tensor"]:
    """:func:`cell_gradients` of a :class:`benchmark.models.SequenceClassifier` and its own loss."""
    from torch.nn import functional as F

    return _probe(model.rnn, lambda: F.cross_entropy(model(x), y))


def layer_output(lstm, x):
    """The forward output of the loop used by :func:`cell_gradients` (to compare with ``lstm(x)``)."""
    captured = {}

    def keep(output):
        captured["output"] = output
        return output.sum()

    cell_gradients(lstm, x, keep)
    return captured["output"].detach()


@dataclass
class FlowResult:
    variant: str
    label: str
    normalized: list[float]  # per step, sums to 1
    raw: list[float]  # mean ‖∂L/∂c_t‖ per step
    train_loss: float
    valid_error: float


def _datamodule(task: str, data_dir, batch_size: int, seed: int):
    from .data.datamodules import PixelDataModule
    from .tasks import get_task

    if task not in ("digits", "pmnist"):
        raise ValueError(f"gradient-flow runs on permuted pixels: --task digits or pmnist, not {task!r}")
    spec = get_task(task)
    datamodule = PixelDataModule(spec.dataset, batch_size, spec.permuted, data_dir if task == "pmnist" else None,
                                 permutation_seed=seed, shuffle_seed=seed)
    datamodule.setup()
    return datamodule


def _train(model, datamodule, epochs: int, limit_train_batches: int | None, label: str) -> tuple[float, float]:
    """Lightning's Trainer on the module (clip 1); validation once, after the last epoch, and a
    progress bar (``label``) on stderr. Returns (mean of the last 10 training losses, validation error)."""
    import lightning.pytorch as pl
    from tqdm import tqdm

    from .runner import quiet_lightning

    class Losses(pl.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []
            self.bar = None

        def on_train_start(self, trainer, module):
            self.bar = tqdm(total=trainer.num_training_batches * trainer.max_epochs, desc=label, unit="batch",
                            file=sys.stderr, disable=None)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if loss is not None:
                self.values.append(float(loss))
                self.bar.set_postfix(loss=f"{self.values[-1]:.3f}", refresh=False)
            self.bar.update()

        def on_train_end(self, trainer, module):
            self.bar.close()

    quiet_lightning()
    losses = Losses()
    trainer = pl.Trainer(max_epochs=epochs, gradient_clip_val=1.0, check_val_every_n_epoch=epochs,
                         limit_train_batches=limit_train_batches or 1.0, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", devices=1, callbacks=[losses])
    trainer.fit(model, datamodule=datamodule)
    last = losses.values[-10:]
    return float(sum(last) / max(1, len(last))), float(trainer.callback_metrics["val_metric"])


def run_gradient_flow(task: str = "digits", data_dir=None, hidden_size: int = 100, epochs: int = 1,
                      batch_size: int = 32, lr: float = 0.001, seed: int = 0, limit_train_batches: int | None = None,
                      grad_batches: int = 8, variants=VARIANTS) -> tuple[list[FlowResult], Any]:
    """Train each variant for ``epochs`` with the benchmark's SequenceClassifier and Lightning's Trainer
    (RMSprop, clip 1, the paper's pMNIST setting), then measure."""
    import warnings

    import torch

    from .models import SequenceClassifier

    datamodule = _datamodule(task, data_dir, batch_size, seed)
    data = datamodule.pixels
    results = []
    threads = torch.get_num_threads()
    for number, (variant, label) in enumerate(variants, 1):
        torch.manual_seed(seed)
        datamodule.shuffling.manual_seed(seed)  # every variant sees the batches in the same order
        with warnings.catch_warnings():  # CellDropout is not registered: hparams keep no copy of it
            warnings.filterwarnings("ignore", ".*removed from hparams because it cannot be pickled.*")
            model = SequenceClassifier(data.num_classes, input_size=1, hidden_size=hidden_size,
                                       regularizers=[make_regularizer(variant)], optimizer="rmsprop", lr=lr,
                                       optimizer_kwargs={"alpha": 0.5})
            train_loss, error = _train(model, datamodule, epochs, limit_train_batches,
                                       f"{variant} ({number}/{len(variants)})")
        # gradient flow, with the regularizer active as in training
        model.train()
        torch.manual_seed(seed + 1)
        total = None
        count = 0
        for start in range(0, min(len(data.valid_x), grad_batches * batch_size), batch_size):
            x = data.valid_x[start:start + batch_size]
            y = data.valid_y[start:start + batch_size]
            _, norms = model_cell_gradients(model, x, y)
            total = norms.sum(dim=1) if total is None else total + norms.sum(dim=1)
            count += norms.size(1)
        raw = (total / count).double()
        normalized = raw / raw.sum()
        results.append(FlowResult(variant, label, [float(v) for v in normalized], [float(v) for v in raw],
                                  train_loss, error))
    torch.set_num_threads(threads)
    return results, data


def early_mass(values: list[float], fraction: float = 0.5) -> float:
    """Share of the normalised gradient in the first ``fraction`` of the steps."""
    cut = max(1, int(round(len(values) * fraction)))
    return float(sum(values[:cut]))


def write_outputs(results: list[FlowResult], data, out_dir, task: str, command: str, settings: dict) -> list[Path]:
    from .data import source_names

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = len(results[0].normalized)
    stem = f"gradient_flow_{task}"
    png, csv, md = out / f"{stem}.png", out / f"{stem}.csv", out / f"{stem}.md"

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result in results:
        ax.plot(range(1, steps + 1), result.normalized, label=result.label, linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel("mean |dL/dc_t|, normalised over t")
    ax.set_title(f"Gradient flow after {settings['epochs']} epoch(s): {task}, {steps} steps", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)

    header = ["step"] + [r.variant for r in results] + [f"{r.variant}_raw" for r in results]
    lines = [",".join(header)]
    for t in range(steps):
        lines.append(",".join([str(t + 1)] + [f"{r.normalized[t]:.8e}" for r in results]
                              + [f"{r.raw[t]:.8e}" for r in results]))
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")

    text = [f"# Gradient flow ({task})", "",
            "The Zoneout paper's Figure 6: mean over examples of ‖∂L/∂c_t‖₂ at every step t, normalised by "
            "its sum over t, measured with the regularizer active after training. Higher values at early "
            "steps mean more gradient reaches the start of the sequence.", "",
            f"- Data: {data.name} (permuted pixels, {steps} steps); source: {source_names(data.source)}; sha256: `{data.checksum}`",
            "- Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + "; CPU.",
            "- The paper: pMNIST (784 steps), 1 x 100 LSTM, after one epoch, GPU.", "",
            "| variant | valid error | share of the gradient in the first 10 % of steps | first half | last 10 % |",
            "|---|---|---|---|---|"]
    for r in results:
        first10 = early_mass(r.normalized, 0.1)
        last10 = 1.0 - early_mass(r.normalized, 0.9)
        text.append(f"| {r.label} | {r.valid_error:.4f} | {first10:.3e} | {early_mass(r.normalized):.3e} | "
                    f"{last10:.4f} |")
    text += ["", f"![{png.name}]({png.name})", "", "Normalised gradient per step (every step in "
             f"[{csv.name}]({csv.name})):", ""]
    every = max(1, steps // 32)
    text.append("| step | " + " | ".join(r.variant for r in results) + " |")
    text.append("|---|" + "---|" * len(results))
    for t in range(0, steps, every):
        text.append(f"| {t + 1} | " + " | ".join(f"{r.normalized[t]:.3e}" for r in results) + " |")
    if (steps - 1) % every:
        text.append(f"| {steps} | " + " | ".join(f"{r.normalized[-1]:.3e}" for r in results) + " |")
    text += ["", "Reproduce:", "", "```", command, "```", ""]
    md.write_text("\n".join(text), encoding="utf-8")
    return [csv, md, png]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli.arguments import gradient_flow_arguments

    gradient_flow_arguments(parser)


def run(args) -> int:
    for name in ("hidden_size", "epochs", "batch_size", "grad_batches"):
        if getattr(args, name) < 1:
            print(f"regbench gradient-flow: error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    settings = {"hidden_size": args.hidden_size, "epochs": args.epochs, "batch_size": args.batch_size,
                "lr": args.lr, "optimizer": "RMSprop(alpha=0.5)", "clip": 1.0, "seed": args.seed,
                "limit_train_batches": args.limit_train_batches, "grad_batches": args.grad_batches}
    results, data = run_gradient_flow(args.task, args.data_dir, args.hidden_size, args.epochs, args.batch_size,
                                      args.lr, args.seed, args.limit_train_batches, args.grad_batches)
    from .commands import this_invocation

    command = this_invocation("gradient-flow")
    for path in write_outputs(results, data, args.out, args.task, command, settings):
        print(path)
    for r in results:
        print(f"{r.label}: share of gradient in the first half of the steps {early_mass(r.normalized):.3e}, "
              f"valid error {r.valid_error:.4f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.gradient_flow", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
