"""The CLI's contract with its user: `--help` everywhere; a bad option value answered at once with argparse's usage
line, and bad data or an impossible request with one `error:` line; exit 2 either way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_image, run_cli

from training.__main__ import main

pytestmark = [
    pytest.mark.slow,
    # torch 2.14 warns when fastai's layers module calls torch.jit.script at import; third-party, harmless here.
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

FAST = ("--size", "16", "--bs", "16", "--untrained", "--no-verify")  # checks that stop before any training
ONE_EPOCH = ("--size", "16", "--bs", "16", "--epochs", "1", "--no-verify")


def assert_clean_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in out + err


def assert_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    """argparse's answer: the command's usage line, then `... error: argument --x: ...`, exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"usage: python -m training {argv[0]} ")
    for fragment in fragments:
        assert fragment in captured.err
    assert "Traceback" not in captured.err


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- help ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["COMMAND", "data", "show", "train", "lr-find", "interpret", "clean", "summary", "examples:",
              "torchrun"]),
        (["data"], ["digits", "dest", "--size"]),
        (["show"], ["--out", "--valid", "--augment", "--arch", "--size", "--bs", "--valid-pct", "is_valid"]),
        (["train"], ["--out", "--arch", "--pretrained", "--no-pretrained", "--size", "--bs", "--epochs", "--lr",
                     "--freeze-epochs", "--valid-pct", "--seed", "--early-stop", "--no-verify", "--augment",
                     "--monitor", "valid_loss,accuracy,error_rate", "--fp16", "--reports", "reports/NAME",
                     "torchrun"]),
        (["lr-find"], ["--plot", "--arch", "--size", "--bs"]),
        (["interpret"], ["model", "data", "--out", "--top"]),
        (["clean"], ["data", "--decisions"]),
        (["summary"], ["model"]),
    ],
    ids=["top", "data", "show", "train", "lr-find", "interpret", "clean", "summary"],
)  # fmt: skip
def test_help(argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m training")
    for option in expected:
        assert option in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --- bad data -----------------------------------------------------------------------------------------------


def test_missing_data_path(tmp_path: Path) -> None:
    out = tmp_path / "m.pkl"
    assert_clean_error(
        *run_cli("train", str(tmp_path / "nowhere"), "--out", str(out), *FAST), "does not exist"
    )
    assert not out.exists()


def test_folder_with_one_class(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "one"
    shutil.copytree(dataset / "red", data / "red")
    assert_clean_error(*run_cli("train", str(data), "--out", str(tmp_path / "m.pkl"), *FAST), "two class")


def test_folder_with_no_class_folders(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "flat"
    data.mkdir()
    for src in list((dataset / "red").iterdir())[:3]:
        shutil.copy(src, data / src.name)
    assert_clean_error(*run_cli("train", str(data), "--out", str(tmp_path / "m.pkl"), *FAST), "0 class")


@pytest.mark.parametrize("junk", [None, "readme.txt"], ids=["empty-folder", "only-non-images"])
def test_class_without_images(dataset: Path, tmp_path: Path, junk: str | None) -> None:
    data = shutil.copytree(dataset, tmp_path / "colors")
    (data / "purple").mkdir()
    if junk:
        (data / "purple" / junk).write_text("no pixels here")
    code, out, err = run_cli("train", str(data), "--out", str(tmp_path / "m.pkl"), *FAST)
    assert_clean_error(code, out, err, "no readable images", "purple")


def test_class_with_only_corrupt_images(dataset: Path, tmp_path: Path) -> None:
    data = shutil.copytree(dataset, tmp_path / "colors")
    (data / "purple").mkdir()
    (data / "purple" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, out, err = run_cli("train", str(data), "--out", str(tmp_path / "m.pkl"), *FAST)
    # The report that lists skipped files is never printed after this error, so the error names them itself.
    assert_clean_error(code, out, err, "no readable images", "purple", "skipped as corrupt", "purple/a.png")


def test_data_file_that_is_not_csv(tmp_path: Path) -> None:
    data = tmp_path / "image.png"
    make_image((1, 2, 3), seed=0).save(data)
    assert_clean_error(*run_cli("train", str(data), "--out", str(tmp_path / "m.pkl"), *FAST), ".csv")


def test_csv_without_header(tmp_path: Path) -> None:
    data = tmp_path / "labels.csv"
    data.write_text("a.png,red\nb.png,blue\n")
    assert_clean_error(*run_cli("train", str(data), "--out", str(tmp_path / "m.pkl"), *FAST), "'path'")


# --- bad options --------------------------------------------------------------------------------------------


def test_unknown_arch(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", str(dataset), "--out", str(tmp_path / "m.pkl"), "--arch", "vgg16"]
    assert_usage_error(argv, capsys, "argument --arch: invalid choice: 'vgg16'", "'resnet18'")


def test_arch_choices_are_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--arch {cnn,resnet18,resnet34,resnet50}" in capsys.readouterr().out


def test_cli_offers_the_architectures_that_are_built() -> None:
    from training.architectures import RESNETS
    from training.cli import ARCHS

    assert ("cnn", *RESNETS) == ARCHS


def test_unknown_resize_method(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", str(dataset), "--out", str(tmp_path / "m.pkl"), "--resize-method", "zoom"]
    assert_usage_error(argv, capsys, "argument --resize-method: invalid choice: 'zoom'")


def test_pretrained_cnn_is_refused(dataset: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("train", str(dataset), "--out", str(tmp_path / "m.pkl"), *FAST, "--pretrained")
    assert_clean_error(code, out, err, "--no-pretrained")


def test_pretrained_resnet_without_cached_weights_or_network(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch_home = tmp_path / "torch-home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    # Offline here already; a dead proxy keeps the test offline (and fast) on machines with a network too.
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "m.pkl"
    started = time.perf_counter()
    code, stdout, err = run_cli(
        "train", str(dataset), "--out", str(out), *FAST, "--arch", "resnet18", "--pretrained"
    )
    assert time.perf_counter() - started < 60
    checkpoints = torch_home / "hub" / "checkpoints"
    assert_clean_error(code, stdout, err, "--no-pretrained", "resnet18-", ".pth", str(checkpoints))
    assert not out.exists()
    assert not any(checkpoints.glob("*.pth"))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--lr", "abc", "argument --lr: must be a number (e.g. 1e-3) or 'find', got 'abc'"),
        ("--lr", "-1", "argument --lr: must be positive, got -1"),
        ("--lr", "0", "argument --lr: must be positive, got 0"),
        ("--valid-pct", "1.5", "argument --valid-pct: must be between 0 and 1 (a share, e.g. 0.2), got 1.5"),
        ("--valid-pct", "0", "argument --valid-pct: must be between 0 and 1"),
        ("--epochs", "-1", "argument --epochs: must be at least 0, got -1"),
        (
            "--epochs",
            "0",
            "argument --epochs: 0 trains nothing; to export an untrained model, add --untrained",
        ),
        ("--epochs", "many", "argument --epochs: invalid int value: 'many'"),
        ("--bs", "0", "argument --bs: must be at least 1, got 0"),
        ("--early-stop", "0", "argument --early-stop: must be at least 1, got 0"),
    ],
)
def test_bad_option_values_are_usage_errors(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    out = tmp_path / "m.pkl"
    assert_usage_error(["train", str(dataset), "--out", str(out), option, value], capsys, message)
    assert not out.exists()


def test_option_values_are_checked_before_slow_imports_and_the_data_scan(tmp_path: Path) -> None:
    """In a fresh interpreter: a bad value never loads torch or fastai, and the data folder is not even read."""
    code = (
        "import sys\n"
        "from training.__main__ import main\n"
        "try:\n"
        f"    main(['train', {str(tmp_path / 'not-read')!r}, '--out', 'm.pkl', '--lr', 'abc'])\n"
        "except SystemExit as e:\n"
        "    print(e.code, sorted({'torch', 'fastai', 'pandas', 'PIL'} & set(sys.modules)))\n"
    )
    root = str(Path(__file__).resolve().parent.parent)  # this checkout's training, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "2 []", proc.stderr
    assert "argument --lr" in proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "3"], "argument --untrained: trains no epochs, so --epochs 3 contradicts it"),
        (["--lr", "1e-3", "--early-stop", "2"], "argument --untrained: --lr, --early-stop would do nothing"),
    ],
)
def test_untrained_refuses_training_options(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["train", str(dataset), "--out", str(tmp_path / "m.pkl"), "--untrained", *extra]
    assert_usage_error(argv, capsys, message)


def test_untrained_exports_a_model_that_was_never_trained(dataset: Path, tmp_path: Path) -> None:
    from training.manifest import read_manifest

    out = tmp_path / "m.pkl"
    code, stdout, err = run_cli("train", str(dataset), "--out", str(out), "--size", "16", "--epochs", "0",
                                "--untrained", "--no-verify", "--reports", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    m = read_manifest(out)
    assert (m.hyperparameters["epochs"], m.epochs_run, m.best_epoch) == (0, 0, None)
    assert "untrained: accuracy" in stdout
    assert "at chance level: always answering '" in err  # an untrained model has learned nothing
    assert "The model has not learned" in err
    assert not (tmp_path / "r").exists()  # no epochs, no history or plots


def test_freeze_epochs_with_cnn_is_refused(dataset: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(
        "train", str(dataset), "--out", str(tmp_path / "m.pkl"), *ONE_EPOCH, "--freeze-epochs", "1"
    )
    assert_clean_error(code, out, err, "--freeze-epochs", "--arch cnn")


def test_freeze_epochs_without_pretrained_weights_is_refused(dataset: Path, tmp_path: Path) -> None:
    argv = ["--arch", "resnet18", "--freeze-epochs", "1"]
    code, out, err = run_cli("train", str(dataset), "--out", str(tmp_path / "m.pkl"), *ONE_EPOCH, *argv)
    assert_clean_error(code, out, err, "--freeze-epochs needs --pretrained")


def test_fp16_without_a_gpu_is_refused(dataset: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --fp16 is allowed")
    out = tmp_path / "m.pkl"
    started = time.perf_counter()
    code, stdout, err = run_cli("train", str(dataset), "--out", str(out), *ONE_EPOCH, "--fp16")
    assert_clean_error(code, stdout, err, "--fp16", "GPU")
    assert stdout == ""  # refused before the data is read
    assert time.perf_counter() - started < 5
    assert not out.exists()


def test_fewer_training_images_than_one_batch(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pkl"
    code, stdout, err = run_cli("train", str(dataset), "--out", str(out), *ONE_EPOCH, "--bs", "64")
    assert_clean_error(code, stdout, err, "39 training images do not fill one batch of 64", "--bs")
    assert not out.exists()


def test_out_under_a_regular_file(dataset: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("I am a file, not a folder")
    out = blocker / "m.pkl"
    assert_clean_error(*run_cli("train", str(dataset), "--out", str(out), *FAST), "cannot write --out")
    assert blocker.read_text() == "I am a file, not a folder"


def test_out_must_be_a_pkl(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    assert_clean_error(*run_cli("train", str(dataset), "--out", str(out), *FAST), ".pkl")
    assert not out.exists()


def test_lr_find_with_fewer_images_than_a_batch_is_a_clean_error(dataset: Path) -> None:
    """fastai's finder divides by the number of training batches: 0 batches must be a sentence, not a traceback."""
    code, _, err = run_cli("lr-find", str(dataset), "--bs", "64", "--plot", str(dataset.parent / "lr.png"))
    assert code == 2
    assert "do not fill one batch of 64" in err
    assert "Traceback" not in err
