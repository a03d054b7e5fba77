"""Hugging Face ``datasets`` as sources: save_to_disk and parquet folders as --data-dir, and
``--hub REPO@REVISION`` (``datasets.load_dataset`` monkeypatched: everything runs offline).

Each fixture is written here with ``datasets`` itself; each form must give the same corpus as
the standard files of the same data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmark.data as D  # noqa: E402
from test_data import offline_tmp_hf_cache, write_char_ptb, write_mnist, write_word_ptb  # noqa: E402,F401

TRAIN, VALID, TEST = ["the cat <unk> N", "a cat"], ["the N"], ["a a"]


def sentences(valid_name="validation", column="sentence"):
    import datasets

    return datasets.DatasetDict({k: datasets.Dataset.from_dict({column: v})
                                 for k, v in (("train", TRAIN), (valid_name, VALID), ("test", TEST))})


def same_corpus(a, b) -> None:
    assert a.vocab == b.vocab and a.level == b.level
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(a, split), getattr(b, split))


def write_parquet(raw, folder: Path, layout: str = "data/{split}-00000-of-00001.parquet") -> Path:
    for split, ds in raw.items():
        path = folder / layout.format(split=split)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(path))
    return folder


def mnist_dict(data):
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})

    def part(images, labels):
        return datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images],
                                           "label": labels.astype(int).tolist()}, features=features)

    return datasets.DatasetDict({"train": part(data["train-images-idx3-ubyte.gz"], data["train-labels-idx1-ubyte.gz"]),
                                 "test": part(data["t10k-images-idx3-ubyte.gz"], data["t10k-labels-idx1-ubyte.gz"])})


# ------------------------------------------------------------------ local folders


@pytest.mark.parametrize("name, writer", [("word_ptb", write_word_ptb), ("char_ptb", write_char_ptb)])
def test_a_save_to_disk_folder_is_the_same_corpus_as_the_files(tmp_path, name, writer):
    files = D.load_text(name, writer(tmp_path / "files", TRAIN, VALID, TEST))
    sentences().save_to_disk(str(tmp_path / "saved"))
    saved = D.load_text(name, tmp_path / "saved")
    same_corpus(saved, files)
    assert saved.source == f"{(tmp_path / 'saved').resolve()} (save_to_disk)"
    assert saved.checksum == D.text_from_dataset_dict(name, sentences(), "x").checksum  # over the content


@pytest.mark.parametrize("layout", ["data/{split}-00000-of-00001.parquet", "{split}.parquet",
                                    "ptb_text_only/{split}/0000.parquet"])
def test_a_hub_style_parquet_folder_is_the_same_corpus_as_the_files(tmp_path, layout):
    files = D.load_text("word_ptb", write_word_ptb(tmp_path / "files", TRAIN, VALID, TEST))
    folder = write_parquet(sentences(valid_name="valid", column="text"), tmp_path / "pq", layout)
    parquet = D.load_text("word_ptb", folder)
    same_corpus(parquet, files)
    assert parquet.source.endswith("(parquet)") and D.source_names(parquet.source) == "pq (parquet)"


def test_a_parquet_folder_is_found_through_the_data_dir_environment(tmp_path, monkeypatch):
    write_parquet(sentences(), tmp_path / "ptb")
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    assert D.load_text("word_ptb").vocab == D.text_from_dataset_dict("word_ptb", sentences(), "x").vocab


def test_standard_files_win_over_a_dataset_in_a_parent_folder(tmp_path):
    write_parquet(sentences(), tmp_path)  # tmp_path/data/*.parquet
    write_word_ptb(tmp_path / "ptb", ["x y"], ["x"], ["y"])
    assert D.load_text("word_ptb", tmp_path).vocab == ["<eos>", "x", "y"]


def test_mnist_from_parquet_and_save_to_disk_equals_the_idx_files(tmp_path):
    data = write_mnist(tmp_path / "idx")
    files = D.load_pixels("mnist", tmp_path / "idx", permuted=True, seed=1)
    write_parquet(mnist_dict(data), tmp_path / "pq")
    mnist_dict(data).save_to_disk(str(tmp_path / "saved"))
    for folder in ("pq", "saved"):
        other = D.load_pixels("mnist", tmp_path / folder, permuted=True, seed=1)
        for split in ("train_x", "train_y", "valid_x", "valid_y", "test_x", "test_y"):
            assert torch.equal(getattr(other, split), getattr(files, split)), (folder, split)
    assert D.load_pixels("mnist", tmp_path / "pq").checksum == D.load_pixels("mnist", tmp_path / "saved").checksum


def test_a_single_saved_dataset_without_splits_is_refused(tmp_path):
    sentences()["train"].save_to_disk(str(tmp_path / "one"))
    with pytest.raises(D.DataFormatError, match="DatasetDict with the splits train, validation, test"):
        D.load_text("word_ptb", tmp_path / "one")


def test_parquet_files_that_name_no_split_are_refused_with_the_names_to_use(tmp_path):
    sentences()["train"].to_parquet(str(tmp_path / "part-0.parquet"))
    with pytest.raises(D.DataFormatError, match=r"train-\*\.parquet, validation-\*\.parquet"):
        D.load_text("word_ptb", tmp_path)


@pytest.mark.parametrize("layout", ["{config}/{split}-0.parquet", "{config}/{split}/0000.parquet"])
def test_several_configurations_in_one_folder_are_refused(tmp_path, layout):
    for config in ("one", "two"):
        write_parquet(sentences(), tmp_path, layout.replace("{config}", config))
    with pytest.raises(D.DataFormatError, match="several configurations .* pass the folder of one"):
        D.load_text("word_ptb", tmp_path)
    assert D.load_text("word_ptb", tmp_path / "two").vocab == D.text_from_dataset_dict("word_ptb", sentences(), "x").vocab


def test_a_missing_split_or_column_is_named(tmp_path):
    raw = sentences()
    del raw["test"]
    write_parquet(raw, tmp_path / "a")
    with pytest.raises(D.DataFormatError, match="no split 'test'"):
        D.load_text("word_ptb", tmp_path / "a")
    write_parquet(sentences(column="words"), tmp_path / "b")
    with pytest.raises(D.DataFormatError, match="no text column .*'sentence'"):
        D.load_text("word_ptb", tmp_path / "b")


def test_a_folder_with_nothing_usable_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(D.DataNotFoundError) as info:
        D.load_text("word_ptb", tmp_path)
    message = str(info.value)
    for looked_for in ("ptb.train.txt", "dataset_dict.json", "train-*.parquet", "--hub REPO@REVISION"):
        assert looked_for in message


# ------------------------------------------------------------------ --hub REPO@REVISION


@pytest.fixture
def fake_hub(monkeypatch):
    """``datasets.load_dataset`` replaced: it records its arguments and returns ``responses[repo]``
    (the PTB sentences by default)."""
    import datasets

    calls, responses = [], {}
    real = datasets.load_dataset  # still reads the local files ("text", "parquet") of other sources

    def load_dataset(path, *args, **kwargs):
        if path in ("text", "parquet"):
            return real(path, *args, **kwargs)
        calls.append((path, args, kwargs))
        return responses.get(path) or sentences()

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls, responses


def test_hub_passes_repo_and_revision_and_records_the_revision(fake_hub, tmp_path):
    calls, _ = fake_hub
    corpus = D.load_text("word_ptb", hub="someone/ptb@0123abc")
    assert calls == [("someone/ptb", (), {"revision": "0123abc"})]
    assert corpus.source == "hf://datasets/someone/ptb@0123abc"
    assert D.source_names(corpus.source) == corpus.source  # no machine folder to strip
    same_corpus(corpus, D.load_text("word_ptb", write_word_ptb(tmp_path, TRAIN, VALID, TEST)))
    D.load_text("word_ptb", hub="someone/ptb@0123abc")  # memoized
    D.load_text("word_ptb", hub="someone/ptb@v2")  # another revision is another load
    assert [c[2]["revision"] for c in calls] == ["0123abc", "v2"]


def test_hub_mnist_through_the_runner_records_the_revision(fake_hub, tmp_path):
    from benchmark.runner import RunConfig, command_line, plan_run, prepare

    calls, responses = fake_hub
    responses["ylecun/mnist"] = mnist_dict(write_mnist(tmp_path / "m"))
    plan = plan_run(RunConfig(task="pmnist", scale="tiny", hub="ylecun/mnist@abc123", out_dir=str(tmp_path)))
    datamodule = prepare(plan)
    assert calls[-1] == ("ylecun/mnist", (), {"revision": "abc123"})
    assert datamodule.pixels.source == "hf://datasets/ylecun/mnist@abc123"  # the record's data_source
    assert len(datamodule.pixels.checksum) == 64
    assert "--hub ylecun/mnist@abc123" in command_line(plan)
    other = plan_run(RunConfig(task="pmnist", scale="tiny", out_dir=str(tmp_path)))
    assert other.base_run_dir != plan.base_run_dir


@pytest.mark.parametrize("spec, why", [("ylecun/mnist", "has no revision: a hub repository must be pinned"),
                                       ("@main", "no repository before '@'"),
                                       ("ylecun/mnist@", "no usable revision"),
                                       ("a b/c@main", "not a repository name")])
def test_hub_spec_errors_say_why_and_show_the_form(spec, why):
    with pytest.raises(D.DataSourceError, match=why) as info:
        D.parse_hub(spec)
    assert "REPO@REVISION" in str(info.value)
    with pytest.raises(D.DataSourceError):
        D.load_text("word_ptb", hub=spec)


def test_hub_options_on_the_command_line(capsys, tmp_path):
    from benchmark.cli import build_parser, main

    assert D.parse_hub("ptb-text-only/ptb_text_only@refs/convert/parquet") == (
        "ptb-text-only/ptb_text_only", "refs/convert/parquet")
    parser, _ = build_parser()
    for command in ("run", "study"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--task", "digits", "--regularizer", "none", "--hub", "ylecun/mnist"])
        assert "must be pinned" in capsys.readouterr().err
    args = parser.parse_args(["study", "--task", "word_ptb", "--regularizer", "none", "--trials", "1",
                              "--hub", "o/r@main"])
    from benchmark.study import _config_from_args

    assert _config_from_args(args, "none").run_options["hub"] == "o/r@main"
    assert main(["run", "--task", "digits", "--hub", "o/r@main", "--data-dir", "x"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["run", "--task", "digits", "--scale", "tiny", "--hub", "o/r@main", "--no-leaderboard",
                 "--out", str(tmp_path), "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "embedded data" in capsys.readouterr().err
