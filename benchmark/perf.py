"""``regbench perf``: speed and memory of the regularized layers against torch's own layers.

One training step (forward, and backward of ``output.sum()``) of every regularizer's layer and of
``torch.nn.LSTM`` / ``GRU`` / ``RNN`` at the same shape, interleaved in one process over several
repetitions so that drifts of the machine hit all of them alike. It reports the time ratio to
torch's layer (the median over repetitions of each repetition's own ratio, so that a burst of load
during one repetition moves one sample, not the whole estimate; with its quartiles) and the peak
memory ratio (the most tensor memory a step holds at once beyond
what was held before it; CPU: torch's profiler's allocation events, in a separate process per
shape and cell; CUDA: ``max_memory_allocated``).

Shapes are named (:data:`SHAPES`): the CPU tracks' models (derived from the track definitions, so
they cannot drift apart), the paper's tasks, and two sweeps, over sequence length and over hidden
size, whose table shows how each ratio grows with steps and with width.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import regularizers

__all__ = ["HELP", "Shape", "SHAPES", "DEFAULT_SHAPES", "SWEEPS", "PerfRow", "measure", "growth", "format_table", "summary_table",
           "format_growth", "track_shape"]

HELP = ("speed and peak memory of every regularizer's layer against torch.nn.LSTM / GRU / RNN at named shapes "
        "(one process, interleaved)")


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    steps: int
    input_size: int
    hidden: int
    layers: int = 1
    note: str = ""

    def describe(self) -> str:
        layers = f"{self.layers} layers, " if self.layers > 1 else ""
        return f"{layers}batch {self.batch}, {self.steps} steps, input {self.input_size}, hidden {self.hidden}"


_IMAGE_SIDE = {"digits": 8, "mnist": 28}  # the data sets' own image sides (tests check them against the data)


def track_shape(track: str) -> Shape:
    """The recurrent layer's shape in a track's model: the batch, the steps a forward pass runs (the
    BPTT window of a language model, the pixels of an image) and the layer's input size."""
    from .tasks import get_task
    from .tracks import get_track

    definition = get_track(track)
    settings = definition.settings
    task = get_task(definition.task)
    if task.kind == "language_model":
        steps, input_size = settings.bptt, settings.embedding_size or settings.hidden_size
    else:
        side = settings.image_side or _IMAGE_SIDE[task.dataset]
        steps, input_size = side * side, 1
    return Shape(track, settings.batch_size, steps, input_size, settings.hidden_size, settings.num_layers,
                 note=f"the {track} track's model")


_PAPER = [
    Shape("pmnist/paper", 100, 784, 1, 100, note="permuted MNIST, one pixel a step"),
    Shape("char_ptb/paper", 32, 100, 1000, 1000, note="character-level PTB, 1x1000"),
    Shape("word_ptb/small", 20, 35, 200, 200, 2, note="Zaremba et al.'s small word-level PTB model"),
    Shape("word_ptb/medium", 20, 35, 650, 650, 2, note="Zaremba et al.'s medium word-level PTB model"),
    Shape("word_ptb/paper", 20, 35, 1500, 1500, 2, note="the paper's 2x1500 word-level PTB model (slow on a CPU)"),
    Shape("text8/paper", 128, 180, 2000, 2000, note="text8, 1x2000 (very slow on a CPU)"),
    Shape("tuned/256", 32, 100, 64, 256, note="the shape the fused loops were first tuned on"),
    Shape("tuned/1000", 32, 100, 64, 1000, note="the same, hidden 1000"),
]
_TRACKS = ["digits/cpu-v1", "pmnist/cpu-v1", "char_ptb/cpu-v1"]
SWEEPS = {
    "steps": [Shape(f"steps/{n}", 32, n, 64, 256, note="length sweep at hidden 256") for n in (25, 100, 400, 1600)],
    "hidden": [Shape(f"hidden/{h}", 32, 100, 64, h, note="width sweep at 100 steps") for h in (64, 128, 256, 512, 1024)],
}


def _all_shapes() -> dict[str, Shape]:
    shapes = {shape.name: shape for shape in _PAPER}
    shapes.update({shape.name: shape for sweep in SWEEPS.values() for shape in sweep})
    for track in _TRACKS:
        shapes[track] = track_shape(track)
    return shapes


SHAPES: dict[str, Shape] = _all_shapes()
# The regularizers that act inside the recurrence through masks (the fused loops' reason to exist).
MASK_BASED = ("zoneout", "recurrent_dropout", "variational_dropout", "rnndrop", "stochastic_depth")
DEFAULT_SHAPES = ["digits/cpu-v1", "pmnist/cpu-v1", "char_ptb/cpu-v1", "pmnist/paper", "word_ptb/small",
                  "word_ptb/medium", "tuned/256"]


@dataclass
class PerfRow:
    shape: str
    cell: str
    regularizer: str
    threads: int
    median_ms: float
    ratio: float
    peak_mb: float | None
    memory_ratio: float | None
    ratio_low: float | None = None  # the quartiles of the per-repetition ratios
    ratio_high: float | None = None


_TORCH_LAYERS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
_REGULARIZED_LAYERS = {"lstm": regularizers.RegularizedLSTM, "gru": regularizers.RegularizedGRU,
                       "rnn": regularizers.RegularizedRNN}


def _make_layer(cell: str, name: str, shape: Shape) -> torch.nn.Module:
    if name == "torch":
        return _TORCH_LAYERS[cell](shape.input_size, shape.hidden, shape.layers)
    spec = name
    if name == "recurrent_batchnorm" and shape.steps > 1000:  # its per-step statistics stop at max_steps
        spec = f"recurrent_batchnorm:max_steps={shape.steps}"
    return _REGULARIZED_LAYERS[cell](shape.input_size, shape.hidden, shape.layers, regularizers=[spec])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(layer: torch.nn.Module, x: torch.Tensor) -> None:
    output, _ = layer(x)
    output.sum().backward()
    regularizers.penalty(layer)  # taken and dropped: a layer keeps untaken terms, and their graphs


_MEMORY_PROBE = """
import json, sys, torch
from benchmark.perf import Shape, _make_layer, _step
from regularizers.torch_internals import allocation_peak
cell, names, shape = sys.argv[1], sys.argv[2].split(","), Shape(**json.loads(sys.argv[3]))
torch.manual_seed(0)
x = torch.randn(shape.steps, shape.batch, shape.input_size)
peaks = {}
for name in names:
    layer = _make_layer(cell, name, shape)
    _step(layer, x)  # one-time costs first (packed weights, the first masks' buffers)
    layer.zero_grad(set_to_none=True)
    peaks[name] = allocation_peak(lambda: _step(layer, x))
    del layer
print(json.dumps(peaks))
"""


def _peak_memory(cell: str, names: list[str], shape: Shape, device: torch.device) -> dict[str, int]:
    """Peak bytes that one training step adds to what was allocated before it, per layer.

    On CUDA, the allocator's own statistics. On the CPU, which keeps none, torch's profiler records
    every allocation and free of a second step (the first takes the one-time costs), in a separate
    process per shape and cell (the profiler's log lines go there, and nothing of it stays here).
    Counted are the tensors' bytes, exactly and in any order of layers; the resident memory that
    this read before (Linux's high-water mark) moved by up to 2x with the order of measurement.
    """
    if device.type == "cuda":
        peaks = {}
        for name in names:
            torch.manual_seed(0)
            layer = _make_layer(cell, name, shape).to(device)
            x = torch.randn(shape.steps, shape.batch, shape.input_size, device=device)
            _step(layer, x)
            layer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            _step(layer, x)
            torch.cuda.synchronize(device)
            peaks[name] = torch.cuda.max_memory_allocated(device) - before
        return peaks
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    shape_json = json.dumps(shape.__dict__)
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, cell, ",".join(names), shape_json],
                            capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def paired_ratios(times: list[float], base_times: list[float]) -> tuple[float, float, float]:
    """The median and the quartiles of ``times[i] / base_times[i]``: each repetition's time over
    torch's in the same repetition, measured moments apart, so that load that comes and goes
    cancels in the pair instead of landing in one layer's median."""
    ratios = [t / b for t, b in zip(times, base_times, strict=True)]
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return statistics.median(ratios), low, high


def _supported(cell: str, names: list[str] | None) -> list[str]:
    return [n for n in (names or regularizers.available()) if cell in regularizers.get(n).cell_types]


def measure(shapes: list[Shape], cells=("lstm",), names=None, repeats: int = 7, device: str = "cpu",
            memory: bool = True, progress=None) -> list[PerfRow]:
    """Every regularizer's layer and torch's at each shape and cell: median step time, its ratio to
    torch's, and (``memory``) the peak memory of a step and its ratio to torch's."""
    device = torch.device(device)
    rows = []
    for shape in shapes:
        for cell in cells:
            torch.manual_seed(0)
            x = torch.randn(shape.steps, shape.batch, shape.input_size, device=device)
            layers = {name: _make_layer(cell, name, shape).to(device) for name in ["torch", *_supported(cell, names)]}
            for layer in layers.values():  # warm-up: allocator, thread pools, lazy init, the native build
                _step(layer, x)
                _step(layer, x)  # a second one: the first sizes the buffers the second reuses
            times: dict[str, list[float]] = {name: [] for name in layers}
            for _ in range(repeats):
                for name, layer in layers.items():
                    layer.zero_grad(set_to_none=True)
                    _synchronize(device)
                    start = time.perf_counter()
                    _step(layer, x)
                    _synchronize(device)
                    times[name].append(time.perf_counter() - start)
                if progress is not None:
                    progress.update(1)
            peaks = _peak_memory(cell, list(layers), shape, device) if memory else {}
            for name in layers:
                ratio, low, high = paired_ratios(times[name], times["torch"])
                peak = peaks.get(name)
                rows.append(PerfRow(shape.name, cell, name, torch.get_num_threads(), statistics.median(times[name]) * 1e3,
                                    ratio, None if peak is None else peak / 2**20,
                                    peak / peaks["torch"] if peak is not None and peaks["torch"] > 0 else None,
                                    low, high))
    return rows


def growth(rows: list[PerfRow], sweep: str) -> list[dict]:
    """How each layer's time ratio moves along a sweep: its ratio at every point, and the change per
    doubling of the swept size (a least-squares slope of the ratio against log2 of the size)."""
    import numpy as np

    points = [shape.name for shape in SWEEPS[sweep]]
    size = {shape.name: shape.steps if sweep == "steps" else shape.hidden for shape in SWEEPS[sweep]}
    swept = [r for r in rows if r.shape in size]
    table = []
    for threads, cell, name in dict.fromkeys((r.threads, r.cell, r.regularizer) for r in swept):
        ratios = {r.shape: r.ratio for r in swept if (r.threads, r.cell, r.regularizer) == (threads, cell, name)}
        measured = [p for p in points if p in ratios]
        slope = (float(np.polyfit(np.log2([size[p] for p in measured]), [ratios[p] for p in measured], 1)[0])
                 if len(measured) >= 2 else float("nan"))
        table.append({"threads": threads, "cell": cell, "regularizer": name, "ratios": [ratios[p] for p in measured],
                      "sizes": [size[p] for p in measured], "per_doubling": slope})
    return table


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_table(rows: list[PerfRow]) -> str:
    lines = ["| shape | threads | cell | regularizer | step (ms) | × torch | quartiles | peak MB | memory × torch |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        quartiles = "–" if r.ratio_low is None else f"{r.ratio_low:.2f}–{r.ratio_high:.2f}"
        lines.append(f"| {r.shape} | {r.threads} | {r.cell} | {r.regularizer} | {r.median_ms:.1f} | {r.ratio:.2f} | "
                     f"{quartiles} | {_number(r.peak_mb, 1)} | {_number(r.memory_ratio, 2)} |")
    return "\n".join(lines)


def format_growth(table: list[dict], sweep: str) -> str:
    if not table:
        return ""
    sizes = table[0]["sizes"]
    label = "steps" if sweep == "steps" else "hidden"
    lines = ["| threads | cell | regularizer | " + " | ".join(f"{label} {s}" for s in sizes) + " | per doubling |",
             "|---:|---|---|" + "---:|" * (len(sizes) + 1)]
    for row in table:
        lines.append(f"| {row['threads']} | {row['cell']} | {row['regularizer']} | "
                     + " | ".join(f"{r:.2f}" for r in row["ratios"]) + f" | {row['per_doubling']:+.3f} |")
    return "\n".join(lines)


# The groups whose worst ratio the speed bounds are about (1.1, 1.3 and 1.05 of torch's time).
_BOUNDED_GROUPS = {"mask-based": MASK_BASED, "recurrent BN": ("recurrent_batchnorm",), "weight noise": ("weight_noise",)}


def _slowest(rows: list[PerfRow]) -> PerfRow | None:
    return max(rows, key=lambda r: r.ratio, default=None)


def worst_ratios(rows: list[PerfRow]) -> str:
    """Per shape, cell and thread count: the slowest mask-based regularizer's ratio, batch norm's and
    weight noise's (the issue's bounds: 1.1, 1.3 and 1.05)."""
    lines = ["| shape | cell | threads | worst mask-based | recurrent BN | weight noise | worst memory × torch |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for shape, cell, threads in dict.fromkeys((r.shape, r.cell, r.threads) for r in rows):
        here = [r for r in rows if (r.shape, r.cell, r.threads) == (shape, cell, threads) and r.regularizer != "torch"]
        cells = []
        for members in _BOUNDED_GROUPS.values():
            chosen = [r for r in here if r.regularizer in members]
            worst = _slowest(chosen)
            cells.append("–" if worst is None else f"{worst.ratio:.2f}"
                         + (f" ({worst.regularizer})" if len(chosen) > 1 else ""))
        memory = [r.memory_ratio for r in here if r.memory_ratio is not None and r.regularizer in MASK_BASED]
        cells.append(f"{max(memory):.2f}" if memory else "–")
        lines.append(f"| {shape} | {cell} | {threads} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(rows: list[PerfRow]) -> str:
    """The README's speed table: per shape, the worst ratio of each group that the issue bounds, with
    every measured thread count side by side in one cell (``1 thread / 2 threads``)."""
    columns = [("LSTM: worst mask-based", "lstm", "mask-based"), ("LSTM: recurrent BN", "lstm", "recurrent BN"),
               ("LSTM: weight noise", "lstm", "weight noise"), ("GRU: worst mask-based", "gru", "mask-based"),
               ("tanh-RNN: worst mask-based", "rnn", "mask-based")]
    thread_counts = list(dict.fromkeys(r.threads for r in rows))
    label = " / ".join(f"{n} thread{'s' if n > 1 else ''}" for n in thread_counts)
    lines = [f"| shape (each cell: {label}) | " + " | ".join(c[0] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for shape in dict.fromkeys(r.shape for r in rows):
        cells = []
        for _, cell, group in columns:
            worst = [_slowest([r for r in rows if (r.shape, r.cell, r.threads) == (shape, cell, threads)
                               and r.regularizer in _BOUNDED_GROUPS[group]]) for threads in thread_counts]
            cells.append(" / ".join("–" if w is None else f"{w.ratio:.2f}" for w in worst))
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shape_list() -> str:
    return "; ".join(f"{s.name} ({s.describe()})" for s in SHAPES.values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", nargs="+", default=None, metavar="NAME",
                        help=f"named shapes to measure (default: {' '.join(DEFAULT_SHAPES)}); known: {_shape_list()}")
    parser.add_argument("--sweep", nargs="+", default=[], choices=sorted(SWEEPS),
                        help="also measure a sweep (steps: 25-1600 steps at hidden 256; hidden: 64-1024 at 100 "
                             "steps) and report how the ratio changes per doubling")
    parser.add_argument("--cells", nargs="+", default=["lstm"], choices=regularizers.CELL_TYPES)
    parser.add_argument("--regularizers", nargs="+", default=None, metavar="NAME",
                        help="default: every registered regularizer that supports the cell type")
    parser.add_argument("--repeats", type=int, default=7)
    from .cli.options import add_option

    add_option(parser, "threads", nargs="+", default=None,
               note="here a list of thread counts, each measured in turn (default: torch's own choice)")
    parser.add_argument("--no-memory", action="store_true", help="time only (the memory probe starts a process "
                                                                 "per shape and cell)")
    parser.add_argument("--training", action="store_true",
                        help="instead: a training step of the benchmark's own models (Lightning's Trainer, "
                             "metrics, logging) on the CPU tracks against a plain loop with torch.nn.LSTM")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows to this JSON file")
    parser.add_argument("--markdown", default=None, metavar="FILE",
                        help="also write a report (machine, date, command, the tables) to this markdown file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .errors import UsageError

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    for name in args.regularizers or []:
        regularizers.get(name)  # unknown names fail here, with the list of valid ones
    unknown = [n for n in args.shapes or [] if n not in SHAPES]
    if unknown:
        raise UsageError(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    if args.repeats < 1 or any(n < 1 for n in args.threads or []):
        raise UsageError("--repeats and --threads must be at least 1")
    from regularizers import native

    native.loops()  # build (or load) the native loops before any clock starts
    if args.training:
        return _run_training(args)
    shapes = [SHAPES[n] for n in (args.shapes if args.shapes is not None else DEFAULT_SHAPES)]
    shapes += [s for sweep in args.sweep for s in SWEEPS[sweep] if s not in shapes]
    thread_counts = args.threads or [torch.get_num_threads()]
    print(f"regbench perf: device {args.device}, {'/'.join(map(str, thread_counts))} thread(s), "
          f"torch {torch.__version__}, {args.repeats} interleaved repetitions (ratios: the median of each "
          "repetition's own)")
    for shape in shapes:
        print(f"  {shape.name}: {shape.describe()}")
    rows = []
    with tqdm(total=len(thread_counts) * len(shapes) * len(args.cells) * args.repeats, desc="repetitions",
              file=sys.stderr, disable=None) as bar:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for shape in shapes:  # shape by shape, so that an interrupted run keeps what it measured
                rows += measure([shape], args.cells, args.regularizers, args.repeats, args.device,
                                memory=not args.no_memory, progress=bar)
                if args.json:
                    Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1) + "\n")
    report = [summary_table(rows), "", worst_ratios(rows), "", format_table(rows)]
    for sweep in args.sweep:
        report += ["", f"How the time ratio changes along the {sweep} sweep:", "", format_growth(growth(rows, sweep), sweep)]
    print("\n".join(report))
    if args.markdown:
        _write_report(Path(args.markdown), report, thread_counts, args)
    return 0


def _machine() -> str:
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def _write_report(path: Path, report: list[str], thread_counts: list[int], args: argparse.Namespace) -> None:
    from datetime import date

    from .commands import regbench_command

    command = regbench_command("perf", {"training": args.training, "shapes": args.shapes, "sweep": args.sweep,
                                        "cells": args.cells, "regularizers": args.regularizers,
                                        "repeats": args.repeats, "threads": thread_counts,
                                        "no_memory": args.no_memory, "device": args.device},
                               one_flag={"shapes", "sweep", "cells", "regularizers", "threads"})
    if args.training:
        title = "# Speed of a whole training step against a plain PyTorch loop"
        method = ("each track's own LightningModule trained by Lightning's Trainer (optimizer, gradient clipping, "
                  "torchmetrics, a CSV logger) against a hand-written loop with `torch.nn.LSTM` of the same size, "
                  f"on the same synthetic batches: {args.repeats} alternating epochs of 20 steps per side, and the "
                  "medians of their steps compared. Reproduce with:")
    else:
        title = "# Speed of the regularized layers against torch's own"
        method = (f"{args.repeats} interleaved repetitions of one training step (forward and backward) per layer, in one "
                  "process. A ratio is the median over repetitions of the layer's time over torch's in the same "
                  "repetition (the full table gives the quartiles), torch's layer being of the same cell and shape "
                  "(`torch.nn.LSTM`, `GRU`, `RNN`); `none`, `weight_noise` (mostly) and `norm_stabilizer` run torch's "
                  "own kernel, so their spread around 1.00 is the noise of the measurement. Reproduce with:")
    header = [title, "", f"Measured on {date.today().isoformat()} on {_machine()}, with "
              f"{'/'.join(map(str, thread_counts))} thread(s): {method}", "",
              "```bash", command, "```", ""]
    path.write_text("\n".join(header + report) + "\n")


def _run_training(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .perf_training import TRAINING_TRACKS, format_training, measure_training

    names = args.regularizers or ["none", "zoneout"]
    thread_counts = args.threads or [torch.get_num_threads()]
    print(f"regbench perf --training: {'/'.join(map(str, thread_counts))} thread(s), torch {torch.__version__}, "
          f"per-step medians of {args.repeats} alternating epochs of 20 steps")
    rows = []
    with tqdm(total=len(thread_counts) * len(TRAINING_TRACKS) * len(names) * args.repeats, desc="epochs",
              file=sys.stderr, disable=None) as bar:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            rows += measure_training(TRAINING_TRACKS, names, repeats=args.repeats, progress=bar)
    report = [format_training(rows)]
    print(report[0])
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1) + "\n")
    if args.markdown:
        _write_report(Path(args.markdown), report, thread_counts, args)
    return 0
