"""A real but tiny training run for the study tests (about a second): a RegularizedLSTM of 16 units
on 512 of the embedded 8x8 digits, pixels one at a time, plain PyTorch. A study's run function:
``tiny_run(config: RunConfig, callbacks) -> RunRecord``; it reports its validation error per epoch
to the pruning callbacks in ``callbacks`` (``callback.report(epoch, value)``)."""

from __future__ import annotations

import math
import time

from benchmark.records import RunRecord
from benchmark.runner import RunConfig

TINY = "tiny_objective:tiny_run"


def tiny_run(config: RunConfig, callbacks: list) -> RunRecord:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only add contention
    try:
        return _tiny_run(config, callbacks, int(config.seed or 0), int(config.epochs or 3))
    finally:
        torch.set_num_threads(threads)


def _tiny_run(config: RunConfig, callbacks: list, seed: int, epochs: int) -> RunRecord:
    import torch
    from torch import nn

    import regularizers
    from benchmark.data import load_pixels

    torch.manual_seed(seed)
    data = load_pixels("digits", permuted=False, seed=0)
    x, y = data.train_x[:512], data.train_y[:512]
    vx, vy = data.valid_x[:200], data.valid_y[:200]
    regularizer = regularizers.build(config.regularizer)  # a spec: every hyperparameter
    lstm = regularizers.RegularizedLSTM(1, 16, batch_first=True, regularizers=[config.regularizer])
    head = nn.Linear(16, 10)
    params = list(lstm.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=float(config.lr or 0.02))
    curve = []
    start = time.perf_counter()
    status, reason = "ok", ""
    for epoch in range(epochs):
        lstm.train()
        for i in range(0, len(x), 32):
            out, _ = lstm(x[i:i + 32])
            loss = nn.functional.cross_entropy(head(out[:, -1]), y[i:i + 32]) + regularizers.penalty(lstm)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        lstm.eval()
        with torch.no_grad():
            out, _ = lstm(vx)
            error = float((head(out[:, -1]).argmax(-1) != vy).float().mean())
        if not math.isfinite(float(loss.detach())):
            status, reason = "diverged", f"NaN loss in epoch {epoch}"
            break
        curve.append(error)
        if any(c.report(epoch, error) for c in callbacks if hasattr(c, "report")):
            break
    wall = time.perf_counter() - start
    return RunRecord(
        task=config.task, regularizer=regularizer.name, hyperparameters=regularizer.params,
        spec=regularizer.spec, cell="lstm", seed=seed, track=config.track,
        preset=None if config.track else config.preset, scale=None if config.track else str(config.scale),
        dataset="digits", data_source=data.source, data_checksum=data.checksum, metric="error_rate",
        best_val_metric=min(curve) if curve else None, test_metric=None,
        epochs=len(curve), wall_time_s=wall, throughput=len(x) * len(curve) / max(wall, 1e-9),
        throughput_unit="samples/s", val_curve=curve, status=status, reason=reason or None,
        settings={"hidden_size": 16, "objective": "tiny_run"})
