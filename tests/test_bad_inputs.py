"""Every bad input gets one clear line on stderr and exit status 2, never a traceback.

A table of bad command lines across every subcommand, each expected to fail before any
training or model loading. Most run through ``main()`` in-process (cheap); a few run as real
subprocesses, in parallel, to prove no traceback reaches a user's terminal. Paths under
``/proc`` stand in for a read-only folder (root writes in any other; tests run as root), and
real mode-000 / mode-555 cases run wherever permissions are enforced.
Also here: the CLI boundary itself (bugs keep their traceback) and the permissions of written
files under the user's umask.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slimtorch.cli.errors import describe_user_error
from slimtorch.cli.main import main
from slimtorch.io import atomic_output, atomic_write_bytes, check_writable


def _permissions_bypassed() -> bool:
    """True where this process reads a mode-000 file (root, or CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            probe.read_text()
        except PermissionError:
            return False
        return True


BYPASSES_PERMISSIONS = _permissions_bypassed()

# (id, argv with {w} for the fixture folder, needle the one stderr line must contain)
CASES: list[tuple[str, str, str]] = [
    # train
    ("train-out-ro", "train --out /proc/t --epochs 1 --quiet", "--out /proc/t"),
    ("train-out-ro-missing", "train --out /proc/no/t --epochs 1", "--out /proc/no/t"),
    ("train-out-under-file", "train --out {w}/afile/t --epochs 1", "afile is not a folder"),
    ("train-out-is-file", "train --out {w}/afile --epochs 1", "--out {w}/afile"),
    ("train-out-holds-ck", "train --out {w}/ck --epochs 1", "--overwrite"),
    ("train-data-missing", "train --data {w}/none.npz --out {w}/t1", "none.npz"),
    ("train-data-not-npz", "train --data {w}/notutf8.txt --out {w}/t1", "notutf8.txt"),
    ("train-data-bad-idx", "train --data idx:{w}/afile,{w}/afile --out {w}/t1", "afile"),
    ("train-data-npz-no-y", "train --data {w}/no_y.npz --out {w}/t1", "no_y.npz"),
    ("train-data-npz-mismatch", "train --data {w}/mismatch.npz --out {w}/t1", "mismatch.npz"),
    ("train-data-bad-image", "train --data {w}/images --out {w}/t1", "x.png"),
    ("train-data-no-classes", "train --data {w}/no_classes --out {w}/t1", "no_classes"),
    ("train-data-digits-0", "train --data digits:0 --out {w}/t1", "digits:0"),
    ("train-data-digits-huge", "train --data digits:100000 --out {w}/t1", "digits:100000"),
    ("train-model-unknown", "train --model no_such_model --out {w}/t1", "no_such_model"),
    ("train-epochs-0", "train --epochs 0 --out {w}/t1", "epochs"),
    ("train-optimizer", "train --optimizer bogus --out {w}/t1", "bogus"),
    ("train-lr-negative", "train --lr -1 --out {w}/t1", "lr"),
    ("train-batch-size-0", "train --batch-size 0 --out {w}/t1", "batch_size"),
    # evaluate
    ("evaluate-json-ro", "evaluate {w}/ck --json /proc/e.json", "--json /proc/e.json"),
    ("evaluate-json-ro-missing", "evaluate {w}/ck --json /proc/no/e.json", "--json"),
    ("evaluate-json-under-file", "evaluate {w}/ck --json {w}/afile/e.json", "afile"),
    ("evaluate-json-is-folder", "evaluate {w}/ck --json {w}/ck", "--json {w}/ck: is a folder"),
    ("evaluate-seed-string", "evaluate {w}/seed_str", "metrics.seed"),
    ("evaluate-seed-negative", "evaluate {w}/seed_neg", "metrics.seed"),
    ("evaluate-seed-float", "evaluate {w}/seed_float", "metrics.seed"),
    ("evaluate-seed-bool", "evaluate {w}/seed_bool", "metrics.seed"),
    ("evaluate-data-int", "evaluate {w}/data_int", "metrics.data"),
    ("evaluate-metrics-list", "evaluate {w}/metrics_list", "metrics"),
    ("evaluate-edited-header", "evaluate {w}/edited", "model.json"),
    ("evaluate-header-not-utf8", "evaluate {w}/json_not_utf8", "model.json"),
    ("evaluate-weights-folder", "evaluate {w}/weights_dir", "model.safetensors"),
    ("evaluate-missing", "evaluate {w}/nothing", "nothing"),
    ("evaluate-not-ck", "evaluate {w}/afile", "afile"),
    ("evaluate-data-missing", "evaluate {w}/ck --data {w}/none.npz", "none.npz"),
    ("evaluate-data-digits-huge", "evaluate {w}/ck --data digits:99999999", "digits:99999999"),
    ("evaluate-batch-size-0", "evaluate {w}/ck --batch-size 0", "batch_size"),
    # profile
    ("profile-huge-shape", "profile lenet300 --input-shape 1,1,99999999,99999999", "--input-shape"),
    ("profile-overflow-shape", "profile lenet300 --input-shape 999999999999999999999",
     "--input-shape"),
    ("profile-huge-batch", "profile lenet300 --batch-sizes 99999999", "--batch-sizes"),
    ("profile-bad-shape", "profile lenet300 --input-shape 1,x", "--input-shape"),
    ("profile-json-ro", "profile lenet300 --json /proc/p.json", "--json /proc/p.json"),
    ("profile-csv-ro", "profile lenet300 --csv /proc/p.csv", "--csv /proc/p.csv"),
    ("profile-plot-ro", "profile lenet300 --plot /proc/p.png", "--plot /proc/p.png"),
    ("profile-roofline-ro", "profile lenet300 --roofline-plot /proc/r.png", "--roofline-plot"),
    ("profile-json-under-file", "profile lenet300 --json {w}/afile/p.json", "afile"),
    ("profile-unknown", "profile no_such_model", "no_such_model"),
    ("profile-three", "profile lenet300 lenet300 lenet300", "two"),
    ("profile-weight-bits", "profile lenet300 --weight-bits 0 --no-latency", "--weight-bits"),
    # decode / inspect
    ("decode-out-is-file", "decode {w}/m.slim --out {w}/afile", "--out {w}/afile"),
    ("decode-out-ro", "decode {w}/m.slim --out /proc/d", "--out /proc/d"),
    ("decode-out-under-file", "decode {w}/m.slim --out {w}/afile/d", "afile"),
    ("decode-out-holds-ck", "decode {w}/m.slim --out {w}/ck", "--overwrite"),
    ("decode-missing", "decode {w}/none.slim --out {w}/d1", "none.slim"),
    ("decode-not-slim", "decode {w}/afile --out {w}/d1", "afile"),
    ("decode-folder", "decode {w}/ck --out {w}/d1", "ck"),
    ("decode-truncated", "decode {w}/truncated.slim --out {w}/d1", "truncated.slim"),
    ("inspect-missing", "inspect {w}/none.slim", "none.slim"),
    ("inspect-not-slim", "inspect {w}/notutf8.txt", "notutf8.txt"),
    ("inspect-truncated", "inspect {w}/truncated.slim", "truncated.slim"),
    ("inspect-folder", "inspect {w}/ck", "ck"),
    # compress
    ("compress-recipe-not-utf8", "compress --recipe {w}/bad.toml --out {w}/o", "--recipe"),
    ("compress-recipe-missing", "compress --recipe {w}/none.toml --out {w}/o", "--recipe"),
    ("compress-recipe-folder", "compress --recipe {w}/ck --out {w}/o", "--recipe"),
    ("compress-recipe-not-toml", "compress --recipe {w}/afile --out {w}/o", "afile"),
    ("compress-recipe-unknown", "compress --recipe no_such_recipe --out {w}/o", "no_such_recipe"),
    ("compress-out-ro", "compress --out /proc/o", "--out /proc/o"),
    ("compress-out-is-file", "compress --out {w}/afile", "--out {w}/afile"),
    ("compress-epochs-0", "compress --epochs 0 --out {w}/o", "--epochs"),
    ("compress-model-unknown", "compress --model no_such_model --out {w}/o", "no_such_model"),
    # prune
    ("prune-out-ro", "prune {w}/ck --out /proc/p", "--out /proc/p"),
    ("prune-out-is-file", "prune {w}/ck --out {w}/afile", "--out {w}/afile"),
    ("prune-seed-string", "prune {w}/seed_str --out {w}/p1", "metrics.seed"),
    ("prune-missing", "prune {w}/nothing --out {w}/p1", "nothing"),
    ("prune-sparsity", "prune {w}/ck --sparsity 1.5 --out {w}/p1", "sparsity"),
    ("prune-granularity", "prune {w}/ck --granularity bogus --out {w}/p1", "bogus"),
    # quantize
    ("quantize-out-ro", "quantize {w}/ck --out /proc/q", "--out /proc/q"),
    ("quantize-out-is-file", "quantize {w}/ck --out {w}/afile", "--out {w}/afile"),
    ("quantize-seed-string", "quantize {w}/seed_str --out {w}/q1", "metrics.seed"),
    ("quantize-data-int", "quantize {w}/data_int --out {w}/q1", "metrics.data"),
    ("quantize-bits", "quantize {w}/ck --bits 99 --out {w}/q1", "99"),
    ("quantize-missing", "quantize {w}/nothing --out {w}/q1", "nothing"),
    # distill
    ("distill-out-ro", "distill --teacher {w}/ck --student lenet300 --out /proc/d", "--out"),
    ("distill-teacher-missing", "distill --teacher {w}/nothing --student lenet5 --out {w}/s",
     "nothing"),
    ("distill-teacher-data-int", "distill --teacher {w}/data_int --student lenet5 --out {w}/s",
     "metrics.data"),
    ("distill-student-unknown", "distill --teacher {w}/ck --student no_such --out {w}/s",
     "no_such"),
    ("distill-temperature", "distill --teacher {w}/ck --student lenet5 --temperature -1 "
     "--out {w}/s", "temperature"),
    # search
    ("search-netadapt-missing", "search netadapt {w}/nothing --out {w}/sn", "nothing"),
    ("search-netadapt-out-ro", "search netadapt {w}/ck --out /proc/sn", "--out"),
    ("search-netadapt-budget", "search netadapt {w}/ck --budget-ratio 1.5 --out {w}/sn",
     "budget_ratio"),
    ("search-netadapt-cost", "search netadapt {w}/ck --cost flops --out {w}/sn", "cost"),
    ("search-amc-data-int", "search amc {w}/data_int --out {w}/sa", "metrics.data"),
    ("search-amc-warmup", "search amc {w}/ck --episodes 3 --warmup 9 --out {w}/sa", "warmup"),
    ("search-amc-workers", "search amc {w}/ck --workers 0 --out {w}/sa", "Workers.count"),
    # bench
    ("bench-json-ro", "bench {w}/ck --json /proc/b.json", "--json /proc/b.json"),
    ("bench-summary-ro", "bench {w}/ck --summary /proc/s.txt", "--summary /proc/s.txt"),
    ("bench-plot-ro", "bench {w}/ck --plot /proc/p.png", "--plot /proc/p.png"),
    ("bench-markdown-ro", "bench {w}/ck --markdown /proc/m.md", "--markdown /proc/m.md"),
    ("bench-not-ck", "bench {w}/afile", "afile"),
    ("bench-slim-missing", "bench {w}/none.slim", "none.slim"),
    ("bench-data-missing", "bench {w}/ck --data {w}/none.npz", "none.npz"),
    # llm
    ("llm-eval-text-not-utf8", "llm eval {w}/bad.gguf --text {w}/notutf8.txt", "--text"),
    ("llm-eval-text-missing", "llm eval --text {w}/none.txt", "--text"),
    ("llm-eval-text-folder", "llm eval --text {w}/ck", "--text"),
    ("llm-eval-json-ro", "llm eval --text {w}/afile --json /proc/e.json", "--json /proc/e.json"),
    ("llm-eval-not-gguf", "llm eval {w}/bad.gguf --text {w}/afile", "bad.gguf"),
    ("llm-eval-no-config", "llm eval {w}/ck --text {w}/afile", "config.json"),
    ("llm-eval-hf-bad-json", "llm eval {w}/hf_bad_json --text {w}/afile", "config.json"),
    ("llm-eval-hf-not-utf8", "llm eval {w}/hf_not_utf8 --text {w}/afile", "config.json"),
    ("llm-eval-hf-list", "llm eval {w}/hf_list --text {w}/afile", "config.json"),
    ("llm-eval-hf-zero-heads", "llm eval {w}/hf_zero_heads --text {w}/afile", "config.json"),
    ("llm-eval-hf-bad-weights", "llm eval {w}/hf_bad_weights --text {w}/afile",
     "model.safetensors"),
    ("llm-generate-not-gguf", "llm generate {w}/bad.gguf --prompt hi", "bad.gguf"),
    ("llm-generate-missing", "llm generate {w}/none.gguf --prompt hi", "none.gguf"),
    ("llm-chat-not-gguf", "llm chat {w}/bad.gguf", "bad.gguf"),
    ("llm-export-out-ro", "llm export --out /proc/x.gguf", "--out /proc/x.gguf"),
    ("llm-export-out-under-file", "llm export --out {w}/afile/x.gguf", "afile"),
    ("llm-export-not-gguf", "llm export {w}/bad.gguf --out {w}/x.gguf", "bad.gguf"),
    ("llm-compress-out-suffix", "llm compress {w}/bad.gguf --method rtn --out {w}/x.txt", "--out"),
    ("llm-compress-out-ro", "llm compress --method rtn --out /proc/x.gguf", "--out /proc/x.gguf"),
    ("llm-compress-report-ro", "llm compress --method rtn --out {w}/x.gguf --report /proc/r.json",
     "--report /proc/r.json"),
    ("llm-compress-not-gguf", "llm compress {w}/bad.gguf --method rtn --out {w}/x.gguf",
     "bad.gguf"),
    ("llm-profile-not-gguf", "llm profile {w}/bad.gguf", "bad.gguf"),
]  # fmt: skip

# Also run as real processes, side by side with the in-process cases: each pays ~5 CPU-seconds
# of importing torch and matplotlib, so one per kind of check (output, size, text, metadata).
SUBPROCESS_CASES = (
    "evaluate-json-ro",
    "profile-huge-shape",
    "compress-recipe-not-utf8",
    "quantize-seed-string",
)


def _rewrite_header(folder: Path, edit: Callable[[dict], None]) -> None:
    """Edit model.json and give it a valid header_sha256 (the canonical JSON the format
    documents: sorted keys, no spaces, without that field), as an attacker could."""
    path = folder / "model.json"
    header = json.loads(path.read_text())
    edit(header)
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    header["header_sha256"] = hashlib.sha256(canonical.encode("ascii")).hexdigest()
    path.write_text(json.dumps(header))


def _save(folder: Path, metrics: object) -> Path:
    from slimtorch.checkpoint import save_checkpoint
    from slimtorch.models import build_model, make_spec

    spec = make_spec("lenet300")
    return save_checkpoint(folder, build_model(spec), spec, metrics)  # type: ignore[arg-type]


HF_CONFIG = {"model_type": "llama", "vocab_size": 32, "hidden_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 32}  # fmt: skip


def _hf_folders(w: Path) -> None:
    """Hugging Face model folders with a broken config.json or weights file."""
    configs = {
        "hf_bad_json": b"{",
        "hf_not_utf8": b"\xff",
        "hf_list": b"[1]",
        "hf_zero_heads": json.dumps({**HF_CONFIG, "num_attention_heads": 0}).encode(),
        "hf_bad_weights": json.dumps(HF_CONFIG).encode(),
    }
    for name, config in configs.items():
        (w / name).mkdir()
        (w / name / "config.json").write_bytes(config)
    (w / "hf_bad_weights" / "model.safetensors").write_bytes(b"\x08" + bytes(15))


def _data_files(w: Path) -> None:
    """Data sets that are wrong in one way each."""
    import numpy as np

    np.savez(w / "no_y.npz", x=np.zeros((10, 1, 8, 8), np.float32))
    np.savez(w / "mismatch.npz", x=np.zeros((10, 1, 8, 8), np.float32), y=np.zeros(7, np.int64))
    for label in ("a", "b"):
        (w / "images" / label).mkdir(parents=True)
        (w / "images" / label / "x.png").write_text("not an image")
    (w / "no_classes").mkdir()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch LeNet-300 checkpoint, a .slim file of it, and bad files beside them."""
    from slimtorch.checkpoint import load_checkpoint
    from slimtorch.encode import save_compressed

    w = tmp_path_factory.mktemp("bad")
    assert main(["train", "--model", "lenet300", "--epochs", "1", "--out", str(w / "ck"),
                 "--quiet"]) == 0  # fmt: skip
    model, spec, _ = load_checkpoint(w / "ck")
    save_compressed(w / "m.slim", model, spec)
    blob = (w / "m.slim").read_bytes()
    (w / "truncated.slim").write_bytes(blob[: len(blob) // 2])
    (w / "afile").write_text("x")
    (w / "notutf8.txt").write_bytes(b"\xff\xfe not UTF-8")
    (w / "bad.toml").write_bytes(b"[model]\nname = '\xff'\n")
    (w / "bad.gguf").write_text("not a GGUF file")
    # Crafted headers with valid checksums: saved through the API, as anyone could.
    for name, metrics in {
        "seed_str": {"data": "digits", "seed": "abc"},
        "seed_neg": {"data": "digits", "seed": -1},
        "seed_float": {"data": "digits", "seed": 1.5},
        "seed_bool": {"data": "digits", "seed": True},
        "data_int": {"data": 7, "seed": 0},
        "metrics_list": {"data": "digits"},
    }.items():
        _save(w / name, metrics)
    _rewrite_header(w / "metrics_list", lambda h: h.update(metrics=[1, 2]))
    edited = _save(w / "edited", {"data": "digits", "seed": 0})
    header = json.loads((edited / "model.json").read_text())
    header["metrics"]["seed"] = 1
    (edited / "model.json").write_text(json.dumps(header))
    bad_json = _save(w / "json_not_utf8", {"seed": 0})
    (bad_json / "model.json").write_bytes(b"{\xff}")
    _hf_folders(w)
    _data_files(w)
    weights_dir = _save(w / "weights_dir", {"seed": 0})
    (weights_dir / "model.safetensors").unlink()
    (weights_dir / "model.safetensors").mkdir()  # read as a file: IsADirectoryError
    return w


def _argv(template: str, w: Path) -> list[str]:
    return template.format(w=w).split()


@pytest.mark.usefixtures("real_processes")  # they run meanwhile
@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(
    argv: str, needle: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(_argv(argv, work))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("slimtorch ") and ": error: " in lines[0]
    assert needle.format(w=work) in lines[0]


def test_table_covers_every_subcommand() -> None:
    from slimtorch.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    llm = next(a for a in sub.choices["llm"]._actions if a.dest == "llm_command")
    covered = {c[1].split()[0] for c in CASES}
    covered_llm = {c[1].split()[1] for c in CASES if c[1].startswith("llm ")}
    assert len(CASES) >= 60
    assert set(sub.choices) <= covered
    assert set(llm.choices) <= covered_llm
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def real_processes(work: Path) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """The SUBPROCESS_CASES as ``python -m slimtorch`` processes, all started at once."""
    table = {c[0]: c[1] for c in CASES}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "slimtorch", *_argv(table[name], work)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in SUBPROCESS_CASES
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(
    name: str, work: Path, real_processes: dict[str, subprocess.Popen[str]]
) -> None:
    _, err = real_processes[name].communicate(timeout=300)
    rc = real_processes[name].returncode
    needle = next(c[2] for c in CASES if c[0] == name).format(w=work)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert needle in lines[0]


@pytest.mark.skipif(
    BYPASSES_PERMISSIONS, reason="this user (root) reads mode-000 files; weights_dir covers it"
)
def test_unreadable_weights(work: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ck = _save(tmp_path / "ck", {"seed": 0})
    (ck / "model.safetensors").chmod(0)
    assert main(["evaluate", str(ck)]) == 2
    line = capsys.readouterr().err.strip()
    assert "model.safetensors" in line and "Permission denied" in line


@pytest.mark.skipif(
    BYPASSES_PERMISSIONS, reason="this user (root) writes in mode-555 folders; /proc covers it"
)
def test_read_only_folder(work: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["evaluate", str(work / "ck"), "--json", str(ro / "e.json")]) == 2
    finally:
        ro.chmod(0o755)
    line = capsys.readouterr().err.strip()
    assert f"--json {ro / 'e.json'}" in line and "Permission denied" in line


# --- the boundary ---------------------------------------------------------------------------


def test_describe_names_the_option_that_gave_the_path() -> None:
    argv = ["evaluate", "ck", "--json", "out/e.json"]
    exact = PermissionError(errno.EACCES, "Permission denied", "out/e.json")
    assert describe_user_error(exact, argv) == "--json out/e.json: Permission denied"
    inside = OSError(errno.EROFS, "Read-only file system", "o/baseline/model.json")
    assert describe_user_error(inside, ["compress", "--out=o"]) == (
        "o/baseline/model.json: Read-only file system (in --out o)"
    )
    above = FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/d")
    message = describe_user_error(above, ["x", "--json", "/proc/d/x.json"])
    assert message == "/proc/d: No such file or directory (in --json /proc/d/x.json)"
    positional = IsADirectoryError(errno.EISDIR, "Is a directory", "ck/model.safetensors")
    assert describe_user_error(positional, ["evaluate", "ck"]) == (
        "ck/model.safetensors: Is a directory"
    )


def test_describe_keeps_bugs_as_bugs() -> None:
    assert describe_user_error(OSError(errno.ENOSPC, "No space left on device"), []) == (
        "No space left on device"
    )
    assert describe_user_error(OSError(errno.ECHILD, "No child processes"), []) is None
    assert describe_user_error(ValueError("bug"), []) is None
    assert describe_user_error(RuntimeError("shape mismatch"), []) is None
    assert "memory" in describe_user_error(MemoryError(), [])
    alloc = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 10 bytes")
    assert "memory" in describe_user_error(alloc, [])
    decode = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    assert "UTF-8" in describe_user_error(decode, [])


def _command_raising(exc: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``slimtorch inspect`` raise ``exc`` from inside the command."""
    import slimtorch.cli.encode as encode_cli

    def boom(args: object) -> int:
        raise exc

    monkeypatch.setattr(encode_cli, "_cmd_inspect", boom)


def test_main_reports_os_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _command_raising(PermissionError(errno.EACCES, "Permission denied", "m.slim"), monkeypatch)
    assert main(["inspect", "m.slim"]) == 2
    assert capsys.readouterr().err == "slimtorch inspect: error: m.slim: Permission denied\n"
    _command_raising(MemoryError(), monkeypatch)
    assert main(["inspect", "m.slim"]) == 2
    assert "memory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bug", [ValueError("a bug"), KeyError("k"), OSError(errno.ECHILD, "No child processes")]
)
def test_main_lets_bugs_through(bug: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    _command_raising(bug, monkeypatch)
    with pytest.raises(type(bug)):
        main(["inspect", "m.slim"])


def test_disk_full_names_the_target_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "e.json"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"new")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "No space left" in info.value.strerror
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_write_check_leaves_nothing_behind(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper" / "e.json", "--json")
    check_writable(tmp_path, "--out")
    assert list(tmp_path.iterdir()) == []


# --- permissions of written files -----------------------------------------------------------


@pytest.fixture(params=[0o027, 0o002], ids=["umask027", "umask002"])
def umask(request: pytest.FixtureRequest) -> int:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_honour_the_umask(umask: int, tmp_path: Path) -> None:
    new = atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert _mode(new) == 0o666 & ~umask
    with atomic_output(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"y")
    assert _mode(tmp_path / "b.bin") == 0o666 & ~umask


def test_replaced_files_keep_their_mode(umask: int, tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    target.chmod(0o600)
    atomic_write_bytes(target, b"new")
    assert _mode(target) == 0o600 and target.read_bytes() == b"new"
    target.chmod(0o664)
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"newer")
    assert _mode(target) == 0o664 and target.read_bytes() == b"newer"


def test_cli_outputs_honour_the_umask(umask: int, work: Path, tmp_path: Path) -> None:
    out = tmp_path / "decoded"
    assert main(["decode", str(work / "m.slim"), "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--json", str(tmp_path / "e.json")]) == 0
    for path in (out / "model.json", out / "model.safetensors", tmp_path / "e.json"):
        assert _mode(path) == 0o666 & ~umask, path


def test_gguf_export_honours_the_umask(umask: int, tmp_path: Path) -> None:
    from slimtorch.llm.gguf_export import export_gguf
    from slimtorch.llm.model import Llama, LlamaConfig

    cfg = LlamaConfig(vocab_size=32, dim=32, n_layers=1, n_heads=2, n_kv_heads=2,
                      hidden_dim=32, max_seq_len=16)  # fmt: skip
    path = export_gguf(Llama(cfg).eval(), tmp_path / "m.gguf")
    assert _mode(path) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]
