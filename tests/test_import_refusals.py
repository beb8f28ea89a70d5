"""`python -m training import` refuses, with exit 2, one sentence and nothing written, what it cannot serve."""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def refused(export: Path, out: Path, *extra: str) -> str:
    code, stdout, stderr = run_cli("import", str(export), "--name", "x", "--out", str(out), *extra)
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert not out.exists() or list(out.iterdir()) == [], "a refusal writes nothing"
    return line


def test_not_a_pickle(tmp_path: Path) -> None:
    png = next((FIXTURES / "images").glob("*.png"))
    assert "is not a pickle, so not a fastai export" in refused(png, tmp_path / "out")


def test_a_plain_pickle(tmp_path: Path) -> None:
    export = tmp_path / "export.pkl"
    export.write_bytes(pickle.dumps({"vocab": ["cat", "dog"]}))
    assert "is a pickle but not a fastai export" in refused(export, tmp_path / "out")


def test_a_torch_file_that_is_not_a_learner(tmp_path: Path) -> None:
    export = tmp_path / "weights.pkl"
    torch.save(torch.nn.Linear(2, 2).state_dict(), export)
    assert "is a torch file but not a fastai Learner export" in refused(export, tmp_path / "out")


def test_fastai_objects_without_a_learner(tmp_path: Path) -> None:
    from fastai.vision.augment import Resize

    export = tmp_path / "resize.pkl"
    torch.save({"item_tfms": Resize(16)}, export)
    assert "refers to fastai but holds no Learner" in refused(export, tmp_path / "out")


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")  # fastai on pandas 3
def test_a_tabular_learner_is_named(tmp_path: Path) -> None:
    from fastai.tabular.all import CategoryBlock, Normalize, TabularDataLoaders, tabular_learner

    frame = pd.DataFrame({"a": [0.1, 0.5, 0.9, 0.3] * 4, "b": [1.0, 2.0, 3.0, 4.0] * 4, "y": ["p", "q"] * 8})
    dls = TabularDataLoaders.from_df(frame, procs=[Normalize], cont_names=["a", "b"], y_names="y",
                                     y_block=CategoryBlock(), bs=4, num_workers=0)  # fmt: skip
    export = tmp_path / "tabular.pkl"
    tabular_learner(dls, layers=[4]).export(export)
    assert "is a tabular learner (fastai.tabular)" in refused(export, tmp_path / "out")


def test_a_collaborative_filtering_learner_is_named(tmp_path: Path) -> None:
    from fastai.collab import CollabDataLoaders, collab_learner

    ratings = pd.DataFrame(
        {"user": [1, 2, 3, 1, 2, 3] * 2, "item": [1, 1, 2, 2, 3, 3] * 2, "rating": [3.0] * 12}
    )
    dls = CollabDataLoaders.from_df(ratings, bs=4, num_workers=0)
    export = tmp_path / "collab.pkl"
    collab_learner(dls, n_factors=2, y_range=(0, 5)).export(export)
    assert "is a collaborative filtering learner (fastai.collab)" in refused(export, tmp_path / "out")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # fastai's AWD_LSTM scripts a function with torch.jit
def test_a_text_learner_is_named(tmp_path: Path) -> None:
    from fastai.text.all import AWD_LSTM, BaseTokenizer, TextDataLoaders, text_classifier_learner

    frame = pd.DataFrame(
        {"text": ["good film", "bad film", "great plot", "awful plot"] * 4, "label": ["+", "-"] * 8}
    )
    dls = TextDataLoaders.from_df(frame, text_col="text", label_col="label", tok_tfm=BaseTokenizer(), bs=4,
                                  num_workers=0, seq_len=8)  # fmt: skip
    export = tmp_path / "text.pkl"
    text_classifier_learner(
        dls, AWD_LSTM, pretrained=False, config={"emb_sz": 8, "n_hid": 8, "n_layers": 1}
    ).export(export)
    assert "is a text learner (fastai.text)" in refused(export, tmp_path / "out")


def test_a_multi_label_learner_without_a_threshold(tmp_path: Path) -> None:
    """Multi-label is served with its loss's threshold (BCEWithLogitsLossFlat's `thresh`, which learn.predict
    decodes with); a plain torch loss has none, so its labels cannot be told: refused, saying so."""
    from fastai.vision.all import ColReader, DataBlock, ImageBlock, Learner, MultiCategoryBlock, Resize
    from torch import nn

    images = sorted((FIXTURES / "images").glob("*.png"))
    frame = pd.DataFrame({"path": [str(p) for p in images], "tags": ["red round", "blue", "green round"] * 2})
    block = DataBlock(blocks=(ImageBlock, MultiCategoryBlock), get_x=ColReader("path"),
                      get_y=ColReader("tags", label_delim=" "), item_tfms=Resize(8))  # fmt: skip
    dls = block.dataloaders(frame, bs=2, num_workers=0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, len(dls.vocab))
    )
    export = tmp_path / "tags.pkl"
    Learner(dls, model, loss_func=nn.BCEWithLogitsLoss()).export(export)
    line = refused(export, tmp_path / "out")
    assert "a multi-label classifier whose loss (BCEWithLogitsLoss) has no threshold" in line


def test_a_notebook_class_that_answering_needs(tmp_path: Path) -> None:
    line = refused(FIXTURES / "fastai27" / "grayish.pkl", tmp_path / "out")
    assert "it needs __main__.Grayish to answer" in line
    assert "pass it with --code FILE.py" in line


def test_a_module_that_is_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A learner that refers to a function of the notebook's own package, not installed here."""
    from fastai.learner import load_learner

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mylabels.py").write_text("def label(path):\n    return path.name.split('_')[0]\n")
    monkeypatch.syspath_prepend(str(package))
    import mylabels  # type: ignore[import-not-found]

    learn = load_learner(FIXTURES / "fastai28" / "pets_regex.pkl")
    learn.label_func = mylabels.label  # by reference: the pickle names mylabels.label
    export = tmp_path / "export.pkl"
    learn.export(export)
    del sys.modules["mylabels"]
    line = refused(export, tmp_path / "out")
    assert "it refers to the module 'mylabels', which is not installed here" in line


def test_the_export_itself_is_never_overwritten(tmp_path: Path) -> None:
    export = tmp_path / "x.pkl"
    shutil.copy(FIXTURES / "fastai28" / "pets_regex.pkl", export)
    code, _, stderr = run_cli("import", str(export), "--name", "x", "--out", str(tmp_path))
    assert code == 2
    assert "is the export itself: choose another --out or --name" in stderr


def test_a_missing_export_and_a_bad_name(tmp_path: Path) -> None:
    assert "does not exist" in refused(tmp_path / "nope.pkl", tmp_path / "out")
    code, _, stderr = run_cli("import", str(FIXTURES / "fastai28" / "pets_regex.pkl"), "--name", "../up")
    assert code == 2
    assert "--name '../up'" in stderr


def test_a_notebook_class_compiled_by_another_python_needs_code(tmp_path: Path) -> None:
    """fastai 2.8 under Python 3.12 embeds 3.12 bytecode, which kills a 3.11 interpreter (SIGSEGV) when unpickled:
    the child takes the crash, the import replaces the embedded code, and a notebook class cannot be replaced."""
    line = refused(FIXTURES / "fastai28-py312" / "grayish.pkl", tmp_path / "out")
    assert "it embeds __main__.Grayish, defined in the notebook and compiled by another Python" in line
    assert "pass it with --code FILE.py" in line
