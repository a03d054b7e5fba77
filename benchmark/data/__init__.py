"""Data sets for the regularizer benchmark (the tasks of the Zoneout paper).

Text (:func:`load_text`), each returned as one stream of token ids per split:

* ``char_ptb``  character-level Penn Treebank (``ptb.char.{train,valid,test}.txt``);
  every line of the file contributes its characters plus one end-of-line symbol
  ``"\\n"`` (50 symbols on the standard files).
* ``word_ptb``  word-level Penn Treebank (``ptb.{train,valid,test}.txt``):
  whitespace tokens plus one ``<eos>`` per line (10,000 words on the standard files).
* ``text8``     the 100M-character text8 file, split 90M / 5M / 5M in file order
  (in general the first 90 % / next 5 % / last 5 % of the characters).
* ``embedded_text`` the Python documentation topics shipped with every Python
  (``pydoc_data.topics``), character level; needs no files.

Pixel-by-pixel classification (:func:`load_pixels`):

* ``mnist``   the four official idx ``.gz`` files; the last 5,000 of the 60,000
  training images (in general the last ``N // 12``) form the validation split.
* ``digits``  scikit-learn's 8x8 digits (1797 images, embedded in scikit-learn),
  split 1297 / 250 / 250 with a fixed seed.

Sources, in order (:mod:`benchmark.data.loading`): a pinned Hugging Face hub repository
(``hub="REPO@REVISION"``, the ``--hub`` option); else the ``data_dir`` argument, then the folder
in ``$REGBENCH_DATA_DIR``, each of which may hold the standard files themselves or a subfolder
named like ``shared/data`` (``ptb/``, ``ptb_char/``, ``mnist/``, ``text8/``); else a Hugging Face
dataset in one of those folders (saved with ``save_to_disk``, or parquet files named by split such
as ``data/train-*.parquet``); else the default hub repository (parquet repositories only). When
none has the data, :class:`DataNotFoundError` says where it looked and what to put where.

Modules, one concern each: ``sources`` (names, standard files, folders, checksums), ``corpora``
(tokenizing into :class:`TextCorpus`), ``text_files`` (PTB and text8 files), ``embedded_text``,
``mnist``, ``digits``, ``hf`` (Hugging Face hub and local datasets), ``loading`` (the order of
the sources), ``text`` and ``pixels`` (the two loaders), ``memo``, ``errors``, and
``datamodules`` (the Lightning DataModules; import it from ``benchmark.data.datamodules``, it
needs Lightning). Loads are memoized in the process; the tensors returned from the memo are shared
between calls: do not modify them in place.
"""

from __future__ import annotations

from .corpora import CHAR_EOL, EOS, UNK_CHAR, UNK_WORD, TextCorpus
from .digits import DIGITS_SPLIT, DIGITS_SPLIT_SEED
from .embedded_text import EMBEDDED_MIN_COUNT, embedded_text
from .errors import DataFormatError, DataNotFoundError, DataSourceError
from .hf import HUB_REPOS, hub_argument, hub_source, parse_hub, text_from_dataset_dict
from .mnist import mnist_from_dataset_dict
from .pixels import PixelDataset, load_pixels
from .sources import DATA_DIR_ENV, PIXEL_DATASETS, SPLITS, SUBDIRS, TEXT_DATASETS, expected_files, source_names
from .text import load_text
from .text_files import TEXT8_CHUNK

__all__ = [
    "source_names",
    "DATA_DIR_ENV",
    "DataNotFoundError",
    "DataFormatError",
    "DataSourceError",
    "TextCorpus",
    "PixelDataset",
    "TEXT_DATASETS",
    "PIXEL_DATASETS",
    "load_text",
    "load_pixels",
    "expected_files",
    "parse_hub",
    "hub_argument",
    "hub_source",
    "HUB_REPOS",
    "SUBDIRS",
    "SPLITS",
    "EOS",
    "UNK_WORD",
    "CHAR_EOL",
    "UNK_CHAR",
    "EMBEDDED_MIN_COUNT",
    "DIGITS_SPLIT",
    "DIGITS_SPLIT_SEED",
    "TEXT8_CHUNK",
    "embedded_text",
    "text_from_dataset_dict",
    "mnist_from_dataset_dict",
]
