"""Tests of benchmark.data: small files written here in the standard formats, the
embedded data sets, and (when present) the real files in shared/data.

Everything runs offline (HF_DATASETS_OFFLINE=1) with a temporary Hugging Face cache.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    import benchmark.data as D
except ImportError:  # running pytest without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import benchmark.data as D


@pytest.fixture(scope="module", autouse=True)
def offline_tmp_hf_cache(tmp_path_factory):
    import datasets.config

    cache = tmp_path_factory.mktemp("hf_datasets_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_CACHE", str(cache))
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
        mp.delenv(D.DATA_DIR_ENV, raising=False)
        yield cache


# ------------------------------------------------------------------ file writers


def char_ptb_text(sentences: list[str]) -> str:
    """The char-PTB file for these sentences (recipe of shared/data/README.md)."""
    text = "".join(s.strip().replace(" ", "_") + "\n" for s in sentences)
    return "".join(ch + " " for ch in text)


def write_char_ptb(folder: Path, train, valid, test) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, sents in zip(("train", "valid", "test"), (train, valid, test)):
        (folder / f"ptb.char.{split}.txt").write_text(char_ptb_text(sents))
    return folder


def write_word_ptb(folder: Path, train, valid, test) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, sents in zip(("train", "valid", "test"), (train, valid, test)):
        (folder / f"ptb.{split}.txt").write_text("".join(f" {s} \n" for s in sents))
    return folder


def write_idx(path: Path, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">I", 0x800 + arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def write_mnist(folder: Path, n_train=24, n_test=5, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in data.items():
        write_idx(folder / name, arr)
    return data


# ------------------------------------------------------------------ API basics


def test_expected_files_and_names():
    assert D.expected_files("char_ptb") == ["ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt"]
    assert D.expected_files("word_ptb") == ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"]
    assert D.expected_files("text8") == ["text8"]
    assert D.expected_files("mnist") == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert D.expected_files("digits") == [] and D.expected_files("embedded_text") == []
    assert D.TEXT_DATASETS == ("char_ptb", "word_ptb", "text8", "embedded_text")
    assert D.PIXEL_DATASETS == ("mnist", "digits")
    with pytest.raises(ValueError):
        D.load_text("mnist")
    with pytest.raises(ValueError):
        D.load_pixels("char_ptb")
    with pytest.raises(ValueError):
        D.expected_files("nope")


# ------------------------------------------------------------------ char PTB


def test_char_ptb_exact_ids(tmp_path):
    folder = write_char_ptb(tmp_path / "ptb_char", ["ab c", "c a"], ["ba"], ["c", "a b"])
    corpus = D.load_text("char_ptb", folder)
    assert corpus.name == "char_ptb" and corpus.level == "char"
    # vocabulary: train symbols sorted, "\n" is the line-end symbol
    assert corpus.vocab == ["\n", "_", "a", "b", "c"]
    assert corpus.train.dtype == torch.int64 and corpus.train.ndim == 1
    assert corpus.train.tolist() == [2, 3, 1, 4, 0, 4, 1, 2, 0]
    assert corpus.valid.tolist() == [3, 2, 0]
    assert corpus.test.tolist() == [4, 0, 2, 1, 3, 0]
    decoded = "".join(corpus.vocab[i] for i in corpus.train.tolist())
    assert decoded == "ab_c\nc_a\n"
    assert len(corpus.checksum) == 64 and int(corpus.checksum, 16) >= 0
    assert str(folder) in corpus.source


def test_char_ptb_parent_folder_and_env(tmp_path, monkeypatch):
    write_char_ptb(tmp_path / "ptb_char", ["x y"], ["y"], ["x"])
    by_parent = D.load_text("char_ptb", tmp_path)
    by_folder = D.load_text("char_ptb", tmp_path / "ptb_char")
    assert by_parent.vocab == by_folder.vocab == ["\n", "_", "x", "y"]
    assert torch.equal(by_parent.train, by_folder.train)
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    by_env = D.load_text("char_ptb")
    assert by_env.checksum == by_parent.checksum
    assert torch.equal(by_env.train, by_parent.train)


def test_char_ptb_unknown_valid_symbol_is_an_error(tmp_path):
    folder = write_char_ptb(tmp_path, ["ab"], ["az"], ["a"])
    with pytest.raises(ValueError, match="not in the training vocabulary"):
        D.load_text("char_ptb", folder)


def test_checksum_follows_content(tmp_path):
    a = D.load_text("char_ptb", write_char_ptb(tmp_path / "a", ["ab"], ["a"], ["b"]))
    b = D.load_text("char_ptb", write_char_ptb(tmp_path / "b", ["ab"], ["a"], ["b"]))
    c = D.load_text("char_ptb", write_char_ptb(tmp_path / "c", ["ab"], ["b"], ["b"]))
    assert a.checksum == b.checksum != c.checksum
    digests = [hashlib.sha256((tmp_path / "a" / f).read_bytes()).hexdigest() for f in D.expected_files("char_ptb")]
    lines = "".join(f"{f} {d}\n" for f, d in zip(D.expected_files("char_ptb"), digests))
    assert a.checksum == hashlib.sha256(lines.encode()).hexdigest()


# ------------------------------------------------------------------ word PTB


def test_word_ptb_exact_ids(tmp_path):
    folder = write_word_ptb(tmp_path, ["the cat <unk>", "a cat"], ["the dog"], ["a"])
    corpus = D.load_text("word_ptb", folder)
    assert corpus.level == "word"
    assert corpus.vocab == ["<eos>", "<unk>", "a", "cat", "the"]
    assert corpus.train.tolist() == [4, 3, 1, 0, 2, 3, 0]
    assert corpus.valid.tolist() == [4, 1, 0]  # "dog" is not in train -> <unk>
    assert corpus.test.tolist() == [2, 0]


def test_word_ptb_unknown_word_without_unk_is_an_error(tmp_path):
    folder = write_word_ptb(tmp_path, ["the cat"], ["the dog"], ["cat"])
    with pytest.raises(ValueError, match="dog"):
        D.load_text("word_ptb", folder)


# ------------------------------------------------------------------ text8


def test_text8_splits_90_5_5(tmp_path):
    rng = np.random.default_rng(1)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ", dtype=np.uint8)
    raw = letters[rng.integers(0, 27, 2000)].tobytes()
    (tmp_path / "text8").mkdir()
    (tmp_path / "text8" / "text8").write_bytes(raw)
    corpus = D.load_text("text8", tmp_path)
    text = raw.decode()
    assert corpus.level == "char"
    assert corpus.vocab == sorted(set(text[:1800]))
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (1800, 100, 100)
    for ids, part in ((corpus.train, text[:1800]), (corpus.valid, text[1800:1900]), (corpus.test, text[1900:])):
        assert "".join(corpus.vocab[i] for i in ids.tolist()) == part
    assert corpus.checksum == hashlib.sha256(f"text8 {hashlib.sha256(raw).hexdigest()}\n".encode()).hexdigest()


# ------------------------------------------------------------------ missing data


@pytest.mark.parametrize("name", ["char_ptb", "word_ptb", "text8", "mnist"])
def test_missing_data_error_names_folders_files_and_hub(tmp_path, name):
    loader = D.load_pixels if name == "mnist" else D.load_text
    start = time.perf_counter()
    with pytest.raises(D.DataNotFoundError) as info:
        loader(name, tmp_path)
    assert time.perf_counter() - start < 10  # offline: no network retries
    message = str(info.value)
    assert str(tmp_path) in message
    assert str(tmp_path / D.SUBDIRS[name]) in message
    for f in D.expected_files(name):
        assert f in message
    assert D.HUB_REPOS[name] in message
    assert D.DATA_DIR_ENV in message
    assert isinstance(info.value, RuntimeError)


def test_missing_data_error_lists_env_folder_and_missing_files(tmp_path, monkeypatch):
    partial = tmp_path / "ptb"
    write_word_ptb(partial, ["a"], ["a"], ["a"])
    (partial / "ptb.test.txt").unlink()
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(D.DataNotFoundError) as info:
        D.load_text("word_ptb")
    message = str(info.value)
    assert str(partial) in message and "missing ptb.test.txt" in message


# ------------------------------------------------------------------ pixels


def test_mnist_small_idx_files(tmp_path):
    data = write_mnist(tmp_path / "mnist")
    seq = D.load_pixels("mnist", tmp_path, permuted=False)
    images = data["train-images-idx3-ubyte.gz"].reshape(24, 784).astype(np.float32) / 255
    labels = data["train-labels-idx1-ubyte.gz"].astype(np.int64)
    # the last N // 12 training images are the validation split (5,000 of 60,000)
    assert seq.train_x.shape == (22, 784, 1) and seq.valid_x.shape == (2, 784, 1)
    assert seq.test_x.shape == (5, 784, 1) and seq.test_y.shape == (5,)
    assert seq.train_x.dtype == torch.float32 and seq.train_y.dtype == torch.int64
    np.testing.assert_allclose(seq.train_x[:, :, 0].numpy(), images[:22], rtol=0, atol=1e-7)
    np.testing.assert_allclose(seq.valid_x[:, :, 0].numpy(), images[22:], rtol=0, atol=1e-7)
    assert seq.train_y.tolist() == labels[:22].tolist() and seq.valid_y.tolist() == labels[22:].tolist()
    assert seq.test_y.tolist() == data["t10k-labels-idx1-ubyte.gz"].tolist()
    assert seq.permutation is None and seq.num_classes == 10
    perm = D.load_pixels("mnist", tmp_path, permuted=True, seed=3)
    assert torch.equal(perm.permutation, torch.randperm(784, generator=torch.Generator().manual_seed(3)))
    for split in ("train_x", "valid_x", "test_x"):
        assert torch.equal(getattr(perm, split), getattr(seq, split)[:, perm.permutation])
    assert perm.checksum == seq.checksum and len(perm.checksum) == 64


def test_mnist_bad_magic_is_an_error(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((24, 1), dtype=np.uint8))  # 2-D: wrong magic
    with pytest.raises(ValueError, match="magic"):
        D.load_pixels("mnist", tmp_path)


def test_digits_shapes_and_split():
    ds = D.load_pixels("digits", permuted=False)
    assert ds.name == "digits" and ds.num_classes == 10 and ds.permutation is None
    assert ds.train_x.shape == (1297, 64, 1) and ds.valid_x.shape == (250, 64, 1) and ds.test_x.shape == (250, 64, 1)
    assert ds.train_y.shape == (1297,) and ds.train_y.dtype == torch.int64
    allx = torch.cat([ds.train_x, ds.valid_x, ds.test_x])
    assert allx.dtype == torch.float32 and allx.min() == 0 and allx.max() == 1
    assert set(torch.cat([ds.train_y, ds.valid_y, ds.test_y]).tolist()) == set(range(10))
    # the split does not depend on the permutation seed
    other = D.load_pixels("digits", permuted=True, seed=5)
    assert torch.equal(other.train_y, ds.train_y)
    # every image once: the three splits together are the whole data set
    from sklearn.datasets import load_digits

    full = torch.from_numpy(load_digits().data / 16).float()
    assert sorted(map(tuple, allx[:, :, 0].tolist())) == sorted(map(tuple, full.tolist()))


def test_permutation_true_deterministic_and_seeded():
    a = D.load_pixels("digits", permuted=True, seed=0)
    b = D.load_pixels("digits", permuted=True, seed=0)
    c = D.load_pixels("digits", permuted=True, seed=1)
    seq = D.load_pixels("digits", permuted=False)
    p = a.permutation
    assert p.dtype == torch.int64 and p.shape == (64,)
    assert torch.equal(p.sort().values, torch.arange(64))
    assert torch.equal(p, b.permutation) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(p, c.permutation)
    assert torch.equal(p, torch.randperm(64, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(a.test_x, seq.test_x[:, p])
    assert not torch.equal(a.test_x, seq.test_x)


# ------------------------------------------------------------------ embedded text


def test_embedded_text():
    from pydoc_data.topics import topics

    corpus = D.load_text("embedded_text")
    assert corpus.name == "embedded_text" and corpus.level == "char"
    assert len(corpus.vocab) < 100 and D.UNK_CHAR in corpus.vocab
    assert corpus.vocab == sorted(corpus.vocab) and all(len(s) == 1 for s in corpus.vocab)
    text = D.embedded_text()
    assert all(topics[k].strip("\n") in text for k in topics)
    assert corpus.checksum == hashlib.sha256(text.encode()).hexdigest()
    n = len(text)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (
        int(0.9 * n), int(0.95 * n) - int(0.9 * n), n - int(0.95 * n))
    unk = corpus.vocab.index(D.UNK_CHAR)
    decoded = "".join(corpus.vocab[i] for i in corpus.train[:5000].tolist())
    expected = "".join(ch if ch in corpus.vocab else D.UNK_CHAR for ch in text[:5000])
    assert decoded == expected
    assert (corpus.train == unk).float().mean() < 0.01
    for ids in (corpus.train, corpus.valid, corpus.test):
        assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < len(corpus.vocab)
    again = D.load_text("embedded_text")
    assert torch.equal(again.train, corpus.train)


# ------------------------------------------------------------------ real data (shared/data)


def shared_data() -> Path:
    env = os.environ.get("REGBENCH_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root


def need(sub: str) -> Path:
    folder = shared_data() / sub
    if not folder.is_dir():
        pytest.skip(f"real data not present: {folder} (set REGBENCH_SHARED_DATA to shared/data)")
    return folder


# sha256 of the files, from shared/data/README.md
README_SHA256 = {
    "ptb.char.train.txt": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    "ptb.char.valid.txt": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    "ptb.char.test.txt": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


def readme_checksum(name: str) -> str:
    lines = "".join(f"{f} {README_SHA256[f]}\n" for f in D.expected_files(name))
    return hashlib.sha256(lines.encode()).hexdigest()


def test_real_char_ptb():
    need("ptb_char")
    corpus = D.load_text("char_ptb", shared_data())
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (5_017_482, 393_042, 442_423)
    assert len(corpus.vocab) == 50 and corpus.vocab[0] == "\n"
    assert set(corpus.vocab) == set("abcdefghijklmnopqrstuvwxyz0123456789_N<>#$&'*-./\\\n")
    assert int((corpus.train == 0).sum()) == 42_068  # one line end per line
    assert "".join(corpus.vocab[i] for i in corpus.train[:13].tolist()) == "aer_banknote_"
    assert corpus.checksum == readme_checksum("char_ptb")
    start = time.perf_counter()
    again = D.load_text("char_ptb", need("ptb_char"))  # the folder itself; memo / cache hit
    assert time.perf_counter() - start < 5
    assert torch.equal(again.train, corpus.train) and again.vocab == corpus.vocab


def test_real_word_ptb():
    need("ptb")
    corpus = D.load_text("word_ptb", shared_data())
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (929_589, 73_760, 82_430)
    assert len(corpus.vocab) == 10_000 and "<eos>" in corpus.vocab and "<unk>" in corpus.vocab
    assert int((corpus.train == corpus.vocab.index("<eos>")).sum()) == 42_068
    assert " ".join(corpus.vocab[i] for i in corpus.train[:3].tolist()) == "aer banknote berlitz"
    assert corpus.checksum == readme_checksum("word_ptb")


def test_real_mnist():
    need("mnist")
    seq = D.load_pixels("mnist", shared_data(), permuted=False)
    assert seq.train_x.shape == (55_000, 784, 1) and seq.valid_x.shape == (5_000, 784, 1)
    assert seq.test_x.shape == (10_000, 784, 1)
    assert seq.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert seq.test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    counts = torch.bincount(torch.cat([seq.train_y, seq.valid_y]), minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    mean = (seq.train_x.sum() + seq.valid_x.sum()) / (60_000 * 784)
    assert abs(float(mean) - 0.1307) < 1e-4
    assert seq.checksum == readme_checksum("mnist")
    perm = D.load_pixels("mnist", shared_data(), permuted=True, seed=0)
    assert torch.equal(perm.test_x, seq.test_x[:, perm.permutation])


# ------------------------------------------------------------------ hub conversion (no network)


def test_hub_ptb_rows_give_the_same_corpus_as_the_files(tmp_path):
    """The hub path's conversion, fed a local DatasetDict shaped like the PTB parquet repo."""
    import datasets

    train, valid, test = ["the cat <unk> N", "a cat"], ["the N"], ["a a"]
    raw = datasets.DatasetDict(
        {k: datasets.Dataset.from_dict({"sentence": v}) for k, v in
         (("train", train), ("validation", valid), ("test", test))}
    )
    for name, writer in (("char_ptb", write_char_ptb), ("word_ptb", write_word_ptb)):
        from_files = D.load_text(name, writer(tmp_path / name, train, valid, test))
        from_hub = D.text_from_dataset_dict(name, raw, "hub")
        assert from_hub.vocab == from_files.vocab
        for split in ("train", "valid", "test"):
            assert torch.equal(getattr(from_hub, split), getattr(from_files, split))


def test_hub_mnist_rows_are_converted(tmp_path):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 30)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})

    def part(lo, hi):
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(a) for a in imgs[lo:hi]], "label": labels[lo:hi].tolist()}, features=features)

    raw = datasets.DatasetDict({"train": part(0, 24), "test": part(24, 30)})
    out = D.mnist_from_dataset_dict(raw, "hub")
    assert np.array_equal(out["train"][0], imgs[:22].reshape(22, 784))
    assert np.array_equal(out["valid"][1], labels[22:24])
    assert np.array_equal(out["test"][0], imgs[24:].reshape(6, 784))


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


@pytest.mark.parametrize("name, writer", [("char_ptb", lambda f: write_char_ptb(f, ["ab"], ["a"], ["b"])),
                                          ("word_ptb", lambda f: write_word_ptb(f, ["a b"], ["a"], ["b"])),
                                          ("mnist", lambda f: write_mnist(f))])
def test_a_data_file_of_binary_garbage_is_named_in_one_line(tmp_path, name, writer):
    folder = tmp_path / name
    writer(folder)
    broken = folder / D.expected_files(name)[1]
    _garbage(broken)
    loader = D.load_pixels if name == "mnist" else D.load_text
    with pytest.raises(D.DataFormatError) as error:
        loader(name, folder)
    message = str(error.value)
    assert message.startswith(str(broken)) and "\n" not in message, message


def test_a_validation_character_absent_from_training_names_the_file(tmp_path):
    folder = write_char_ptb(tmp_path, ["ab"], ["az"], ["a"])
    with pytest.raises(D.DataFormatError, match="not in the training vocabulary") as error:
        D.load_text("char_ptb", folder)
    assert str(error.value).startswith(str(folder / "ptb.char.valid.txt"))
