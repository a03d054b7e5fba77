"""``regbench perf``: speed and memory of the regularized layers against torch's fused layers.

One training step (forward + backward of ``output.sum()``) of every regularizer's layer
and of ``torch.nn.LSTM`` / ``torch.nn.GRU`` at the same shape, interleaved in one process
over several repetitions so that drifts of the machine hit all of them alike. Reports the
median time ratio to torch and the peak memory ratio (CPU: bytes allocated by the step as
measured in a fresh process per layer; CUDA: ``max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import regularizers

HELP = "speed and peak memory of every regularizer's layer against torch.nn.LSTM / GRU (one process, interleaved)"

@dataclass
class PerfRow:
    cell: str
    hidden: int
    regularizer: str
    median_ms: float
    ratio: float
    peak_mb: float
    memory_ratio: float


def _torch_layer(cell: str, input_size: int, hidden: int) -> torch.nn.Module:
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](input_size, hidden)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(layer: torch.nn.Module, x: torch.Tensor) -> None:
    output, _ = layer(x)
    output.sum().backward()
    regularizers.penalty(layer)  # taken and dropped, as before: a layer keeps untaken terms, and their graphs


_MEMORY_PROBE = """
import gc, sys, torch, regularizers
from benchmark.perf import _make_layer, _step
cell, name = sys.argv[1], sys.argv[3]
hidden, batch, steps, input_size = int(sys.argv[2]), *map(int, sys.argv[4:])
torch.manual_seed(0)
layer = _make_layer(cell, name, input_size, hidden)
x = torch.randn(steps, batch, input_size)
_step(layer, x)  # one-time costs first: library loads, thread pools, the allocator's own growth
layer.zero_grad(set_to_none=True)
gc.collect()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark (VmHWM) to the current size
before = status("VmRSS:")
_step(layer, x)
print(status("VmHWM:") - before)
"""


def _peak_memory(cell: str, hidden: int, name: str, batch: int, steps: int, input_size: int,
                 device: torch.device) -> int:
    """Peak bytes that one training step adds to what was allocated before it.

    On CUDA, the allocator's own statistics. On the CPU, which keeps none, a fresh process
    per layer takes one warm-up step, resets the kernel's high-water mark of its resident
    memory (Linux's ``clear_refs``) and reads how far a second step raises it.
    """
    if device.type == "cuda":
        torch.manual_seed(0)
        layer = _make_layer(cell, name, input_size, hidden).to(device)
        x = torch.randn(steps, batch, input_size, device=device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        _step(layer, x)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           # glibc: every block over 64 KiB gets its own mapping, returned to the system when freed,
           # so that resident memory follows the live tensors instead of the allocator's cache.
           "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, cell, str(hidden), name, str(batch), str(steps),
                             str(input_size)], capture_output=True, text=True, env=env, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def _make_layer(cell: str, name: str, input_size: int, hidden: int) -> torch.nn.Module:
    if name == "torch":
        return _torch_layer(cell, input_size, hidden)
    layer_class = {"lstm": regularizers.RegularizedLSTM, "gru": regularizers.RegularizedGRU,
                   "rnn": regularizers.RegularizedRNN}[cell]
    return layer_class(input_size, hidden, regularizers=[name])


def measure(cells=("lstm", "gru"), hidden_sizes=(256, 1000), names=None, batch: int = 32, steps: int = 100,
            input_size: int = 64, repeats: int = 7, device: str = "cpu", progress=print) -> list[PerfRow]:
    device = torch.device(device)
    rows = []
    for cell in cells:
        supported = [n for n in (names or regularizers.available()) if cell in regularizers.get(n).cell_types]
        for hidden in hidden_sizes:
            torch.manual_seed(0)
            x = torch.randn(steps, batch, input_size, device=device)
            layers = {name: _make_layer(cell, name, input_size, hidden).to(device) for name in ["torch", *supported]}
            for layer in layers.values():  # warm-up: allocator, thread pools, lazy init
                _step(layer, x)
            times: dict[str, list[float]] = {name: [] for name in layers}
            for repeat in range(repeats):
                for name, layer in layers.items():
                    layer.zero_grad(set_to_none=True)
                    _synchronize(device)
                    start = time.perf_counter()
                    _step(layer, x)
                    _synchronize(device)
                    times[name].append(time.perf_counter() - start)
                progress(f"  {cell} hidden={hidden}: repetition {repeat + 1}/{repeats}")
            memory = {name: _peak_memory(cell, hidden, name, batch, steps, input_size, device) for name in layers}
            base_time = statistics.median(times["torch"])
            for name in layers:
                median = statistics.median(times[name])
                rows.append(PerfRow(cell, hidden, name, median * 1e3, median / base_time,
                                    memory[name] / 2**20, memory[name] / max(memory["torch"], 1)))
    return rows


def format_table(rows: list[PerfRow]) -> str:
    lines = ["| cell | hidden | regularizer | step (ms) | × torch | peak MB | memory × torch |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.cell} | {r.hidden} | {r.regularizer} | {r.median_ms:.1f} | {r.ratio:.2f} | "
                     f"{r.peak_mb:.1f} | {r.memory_ratio:.2f} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=regularizers.CELL_TYPES)
    parser.add_argument("--hidden", nargs="+", type=int, default=[256, 1000], metavar="H")
    parser.add_argument("--regularizers", nargs="+", default=None, metavar="NAME",
                        help="default: every registered regularizer that supports the cell type")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from benchmark.errors import UsageError

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    for name in args.regularizers or []:
        regularizers.get(name)  # unknown names fail here, with the list of valid ones
    print(f"regbench perf: batch {args.batch}, {args.steps} steps, input {args.input_size}, device {args.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = measure(args.cells, args.hidden, args.regularizers, args.batch, args.steps, args.input_size,
                   args.repeats, args.device)
    print(format_table(rows))
    return 0
