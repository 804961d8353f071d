"""The package's shape: the import-linter layers, commands derived from their Options,
and the family registry as the one place a model name is known."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import detkit.commands
from detkit.cli import app
from detkit.errors import ArtifactMismatchError, UsageError
from detkit.families import FAMILIES, get_family
from detkit.options import Spec, check, option, specs

ROOT = Path(__file__).resolve().parents[1]
COMMAND_MODULES = sorted(m.name for m in pkgutil.iter_modules(detkit.commands.__path__)
                         if not m.name.startswith("_") and m.name != "groups")


def test_import_layers_are_kept():
    """`lint-imports` checks .importlinter; a violation names the offending import."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


@pytest.mark.parametrize("module_name", COMMAND_MODULES)
def test_each_command_is_its_options(module_name):
    """The Typer parameters of a command are exactly its Options fields plus --config."""
    module = importlib.import_module(f"detkit.commands.{module_name}")
    name = module_name.replace("_", "-")
    command = get_command(app).get_command(None, name)
    params = {param.name for param in command.params}
    fields = {field.name for field, _ in specs(module.Options)}
    assert params == fields | {"config"}
    fixed = set(getattr(module.Options, "FIXED", ()))   # a parent's options fixed here
    assert set(f.name for f in dataclasses.fields(module.Options)) - fields <= {"given"} | fixed
    for field, spec in specs(module.Options):
        if not spec.positional:
            param = next(p for p in command.params if p.name == field.name)
            assert spec.flag in param.opts
            assert param.default == field.default or param.default is None


def test_spec_names_the_flag():
    spec = Spec(help="", flag="--k", integer=True, low=1)
    spec.check(1)
    with pytest.raises(UsageError, match=r"--k must be >= 1, got 0"):
        spec.check(0)
    with pytest.raises(UsageError, match=r"--k must be an integer, got 1.5"):
        spec.check(1.5)
    with pytest.raises(UsageError, match=r"--x must be in \(0, 1\], got 0"):
        Spec(help="", flag="--x", above=0, high=1).check(0)
    with pytest.raises(UsageError, match="--m must be one of a, b, got 'c'"):
        Spec(help="", flag="--m", choices=("a", "b")).check("c")


def test_check_derives_flags_from_field_names():
    @dataclasses.dataclass(kw_only=True)
    class Options:
        max_boxes: int = option(100, "Most boxes.", integer=True, low=1)

    check(Options())
    with pytest.raises(UsageError, match="--max-boxes must be >= 1"):
        check(Options(max_boxes=0))


def test_max_boxes_default_is_written_once():
    """Grep-able bar of the architecture issue: one declaration of the default."""
    pattern = re.compile(r"max_boxes\w*\s*(:\s*int\s*)?=\s*(option\()?\s*100\b",
                         re.IGNORECASE)
    hits = [path.relative_to(ROOT).as_posix() for path in (ROOT / "detkit").rglob("*.py")
            if pattern.search(path.read_text(encoding="utf-8"))]
    assert hits == ["detkit/data/records.py"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_anchor_layout_matches_its_model(name):
    """The registry's strides are the model's output strides, coarsest first."""
    import numpy as np

    family = get_family(name)
    model = family.build(2, 0.0625, 64, 0.0)
    grids = [int(output.shape[1]) for output in model.outputs]
    assert [64 // grid for grid in grids] == list(family.strides)
    assert all(int(output.shape[3]) == family.anchors_per_scale for output in model.outputs)
    anchors, path = family.resolve_anchors(None)
    assert anchors.shape == (family.num_anchors, 2) and path.is_file()
    assert np.all(np.diff(anchors.prod(axis=1)) >= 0)


def test_nms_defaults_come_from_the_family_unless_given():
    """predict, eval-map, export and training's validation mAP share Family.nms: the RPN
    keeps Faster R-CNN's proposal NMS (0.7) and 1000 proposals, the others 0.45 and 100."""
    assert get_family("yolov3").nms(None, None) == (0.45, 100)
    assert get_family("rpn").nms(None, None) == (0.7, 1000)
    assert get_family("rpn").nms(0.5, 30) == (0.5, 30)
    for family in FAMILIES.values():
        assert family.max_det == family.max_dets[-1]
        assert family.class_agnostic == (family.name == "rpn")


def test_wrong_anchor_count_is_one_error_everywhere(tmp_path):
    path = tmp_path / "three.txt"
    path.write_text("10,13, 16,30, 33,23\n")
    with pytest.raises(ArtifactMismatchError, match="yolov3 needs 9 anchors") as err:
        get_family("yolov3").resolve_anchors(path)
    assert err.value.exit_code == 1 and str(path) in str(err.value)
    with pytest.raises(UsageError, match="unknown model 'yolov9'"):
        get_family("yolov9")


def test_catalog_lists_every_command_module():
    """Each command module in detkit.cli is one catalog entry, and each entry a module."""
    import detkit.cli
    from detkit.cli._catalog import COMMANDS

    modules = {m.name for m in pkgutil.iter_modules(detkit.cli.__path__)
               if m.name != "app" and not m.name.startswith("_")}
    assert {entry.module for entry in COMMANDS.values()} == modules
    group = get_command(app)
    for name, entry in COMMANDS.items():
        command = group.get_command(None, name)
        assert command.name == name and command.help == entry.help


def test_root_help_imports_no_command_module():
    """`detkit --help` lists the catalog without importing NumPy, Keras or a command."""
    probe = ("import sys\nfrom typer.testing import CliRunner\nfrom detkit.cli import app\n"
             "result = CliRunner().invoke(app, ['--help'])\n"
             "assert result.exit_code == 0, result.output\n"
             "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
             "('numpy', 'keras', 'tensorflow') or m.startswith('detkit.commands'))\n"
             "print(loaded)\nprint(result.output)\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded, output = run.stdout.split("\n", 1)
    assert loaded == "[]"
    for name in ("synth", "kmeans-anchors", "train", "eval-map", "export", "version"):
        assert name in output


def test_help_shows_no_value_for_flags_and_short_choices():
    """`--help` draws flags without a value type (Typer writes `<bool>`) and short
    choice lists as the value (`letterbox|stretch`); long lists stay `<str>`."""
    runner = CliRunner()
    root = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    command = runner.invoke(app, ["kmeans-anchors", "--help"], env={"COLUMNS": "120"})
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "120"})
    version = runner.invoke(app, ["version", "--help"], env={"COLUMNS": "120"})
    for result in (root, command, train, version):
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output
        assert re.search(r"--help\s+Show this message", result.output)
    assert re.search(r"--resize\s+letterbox\|stretch\s", command.output)
    assert re.search(r"--model\s+<str>\s", train.output)
    # --flag/--no-flag options have their own panel (its wide --no-x column stays there).
    options, switches = train.output.split("─ Switches ─")
    assert "--exist-ok" in switches and "--exist-ok" not in options
    assert "--epochs" in options and "--epochs" not in switches


@pytest.mark.parametrize("argv, message", [
    (["kmeans-anchors", "x", "--epoch", "3"],
     "error: No such option: --epoch (see 'detkit kmeans-anchors --help')"),
    (["trian"], "error: No such command 'trian'"),     # (Click may add: Did you mean...)
    (["kmeans-anchors", "x", "--model", "rpn"],          # Click's near miss was --help
     "error: No such option: --model (see 'detkit kmeans-anchors --help')"),
    (["kmeans-anchors", "x", "--kk", "3"],
     "error: No such option: --kk (Possible options: --k) (see 'detkit kmeans-anchors"),
    (["kmeans-anchors"], "error: Missing argument 'DATA' (see 'detkit kmeans-anchors --help')"),
    (["kmeans-anchors", "x", "--k", "abc"], "error: Invalid value for '--k'"),
    (["kmeans-anchors", "x", "--k"],       # (Click's error carries no command context)
     "error: Option '--k' requires an argument (see 'detkit kmeans-anchors --help')"),
])
def test_command_line_mistakes_are_one_error_line(argv, message):
    """An unknown option or command, a missing argument, a value of the wrong type: one
    `error:` line naming the help to read, exit code 2 (not Typer's boxed panel)."""
    result = CliRunner().invoke(app, argv, prog_name="detkit")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert lines[0].endswith("--help')"), result.output


@pytest.mark.parametrize("command", ["doctor", "encode-labels", "kmeans-anchors"])
def test_help_speaks_only_of_the_commands_own_options(command):
    """The shared --input-size, --anchors and --model texts tell where a value comes from
    when not given (--weights, a resumed run, distill's teacher); a command without those
    says what applies to it."""
    result = CliRunner().invoke(app, [command, "--help"], prog_name="detkit")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for other in ("--weights", "resumed", "teacher"):
        assert other not in text, (other, result.output)


def test_help_shows_no_default_where_the_text_tells_it():
    """An option whose help says what it becomes when not given (`--input-size` of
    predict: the weights' size, else 416) shows no `[default: 416]` beside that; one
    without (`--input-size` of kmeans-anchors) still shows its default."""
    runner = CliRunner()
    predict = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "120"})
    kmeans = runner.invoke(app, ["kmeans-anchors", "--help"], env={"COLUMNS": "120"})
    for flag in ("--input-size", "--model", "--width", "--anchors"):
        block = predict.output.split(f"│ {flag} ", 1)[1].split("│ --", 1)[0]
        assert "Not given:" in " ".join(block.split()) and "[default:" not in block, block
    block = kmeans.output.split("│ --input-size ", 1)[1].split("│ --", 1)[0]
    assert "[default: 416]" in block, block


def test_detkit_alone_prints_its_help_and_no_error():
    result = CliRunner().invoke(app, [], prog_name="detkit")
    assert "Commands" in result.output and "error" not in result.output
