"""``regbench list``: the tracks, the tasks and the regularizers with their hyperparameters."""

from __future__ import annotations

import argparse

HELP = "show the benchmark tracks, the tasks (data, metric, presets) and the regularizers with their hyperparameters"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", choices=("all", "tracks", "tasks", "regularizers"), default="all",
                        help="what to list (default: all)")


def _table(rows: list[list[str]], header: list[str], indent: str = "  ") -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(indent + "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def format_tracks() -> str:
    from .tracks import DEFAULT_TRACK, TRACKS

    rows = []
    for track in TRACKS.values():
        s = track.settings
        budget = f"{track.trials} trials, {track.seeds} seeds" if track.trials else f"no tuning, {track.seeds} seeds"
        kind = "smoke (not results)" if track.smoke else "default" if track.name == DEFAULT_TRACK else ""
        rows.append([track.name, f"{s.num_layers}x{s.hidden_size} {s.cell}", f"{s.epochs}", budget, kind])
    descriptions = "\n".join(f"  {t.name}: {t.description}" for t in TRACKS.values())
    return ("Tracks (--track; a track fixes the task, the model, the data budget, the training and the protocol):\n"
            + _table(rows, ["track", "model", "epochs", "protocol", ""]) + "\n\n" + descriptions)


def format_tasks() -> str:
    from .data import expected_files
    from .tasks import TASKS

    rows = []
    for task in TASKS.values():
        files = expected_files(task.dataset)
        data = "embedded (no download)" if not task.needs_download else \
            f"{task.dataset}: {files[0]}" + (f" and {len(files) - 1} more" if len(files) > 1 else "")
        rows.append([task.name, task.metric.name, ", ".join(task.presets), data])
    descriptions = "\n".join(f"  {t.name}: {t.description}; metric: {t.metric.description}" for t in TASKS.values())
    return ("Tasks (--task; scales: tiny, small, paper or a number in (0, 1]):\n"
            + _table(rows, ["task", "metric", "presets", "data"]) + "\n\n" + descriptions)


def format_regularizers() -> str:
    import regularizers

    blocks = []
    for name in regularizers.available():
        cls = regularizers.get(name)
        title = f"  {name}  [cells: {', '.join(cls.cell_types)}]"
        if cls.paper:
            title += f"  {cls.paper}"
        rows = [[key, _value(spec.default), spec.describe_range(), spec.help]
                for key, spec in cls.hyperparameters.items()]
        body = _table(rows, ["hyperparameter", "default", "range", "help"], indent="    ") if rows \
            else "    (no hyperparameters)"
        blocks.append(title + "\n" + body)
    return ("Regularizers (--regularizer NAME, --set key=value):\n" + "\n\n".join(blocks))


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    parts = []
    if args.what in ("all", "tracks"):
        parts.append(format_tracks())
    if args.what in ("all", "tasks"):
        parts.append(format_tasks())
    if args.what in ("all", "regularizers"):
        parts.append(format_regularizers())
    print("\n\n".join(parts))
    return 0
