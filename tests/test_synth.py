"""The synthetic dataset: exact boxes, determinism, variety, files, and the CLI."""

import inspect
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detkit.cli import app
from detkit.data import synth
from detkit.data.dataset import load_dataset
from detkit.errors import UsageError

runner = CliRunner()


def reference_box(instances, k):
    """Loop-based extent of the pixels equal to ``k`` (x2, y2 exclusive), or None."""
    x1 = y1 = None
    x2 = y2 = None
    for y in range(instances.shape[0]):
        for x in range(instances.shape[1]):
            if instances[y, x] == k:
                x1 = x if x1 is None else min(x1, x)
                y1 = y if y1 is None else min(y1, y)
                x2 = x + 1 if x2 is None else max(x2, x + 1)
                y2 = y + 1 if y2 is None else max(y2, y + 1)
    return None if x1 is None else [x1, y1, x2, y2]


@pytest.mark.parametrize("index", [0, 1, 2, 5])
def test_boxes_are_the_exact_extent_of_visible_pixels(index):
    _, boxes, classes, instances = synth.render_sample(3, index, size=64, num_classes=6,
                                                       with_instances=True)
    assert len(boxes) == len(classes) > 0
    for k, box in enumerate(boxes, start=1):
        np.testing.assert_array_equal(box, reference_box(instances, k))
    assert instances.max() == len(boxes)


def test_draw_shape_window_holds_every_pixel():
    rng = np.random.default_rng(0)
    for kind in synth.SHAPES:
        for _ in range(10):
            mask = np.zeros((80, 80), np.uint8)
            center = tuple(rng.uniform(0, 80, 2))
            half = tuple(rng.uniform(2, 30, 2))
            rows, cols = synth.draw_shape(mask, kind, center, half, rng)
            inside = mask[rows, cols].sum()
            assert inside == mask.sum(), kind


def test_shape_pixels_differ_from_background():
    image, boxes, _, instances = synth.render_sample(1, 0, size=96, num_classes=4,
                                                     with_instances=True)
    image = image.astype(np.float64)
    background = image[instances == 0].mean(axis=0)
    for k in range(1, len(boxes) + 1):
        mean = image[instances == k].mean(axis=0)
        assert np.linalg.norm(mean - background) > 30


def test_same_seed_same_image_and_different_seed_differs():
    a = synth.render_sample(7, 4, size=64)
    b = synth.render_sample(7, 4, size=64)
    c = synth.render_sample(8, 4, size=64)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_variety_of_sizes_classes_and_empty_images():
    sizes, classes, empty = [], [], []
    for index in range(60):
        _, boxes, labels = synth.render_sample(0, index, size=64, num_classes=6)
        sizes.extend(np.max(boxes[:, 2:] - boxes[:, :2], axis=1) / 64)
        classes.extend(labels)
        if len(boxes) == 0:
            empty.append(index)
    assert empty == [19, 39, 59]
    np.testing.assert_array_equal(np.unique(classes), np.arange(6))
    sizes = np.asarray(sizes)
    assert sizes.min() < 0.08 and sizes.max() > 0.4
    assert np.all(sizes <= 1.0)


def test_aspect_ratios_vary():
    ratios = []
    for index in range(40):
        _, boxes, labels = synth.render_sample(2, index, size=128, num_classes=2)
        wh = boxes[labels == 1, 2:] - boxes[labels == 1, :2]
        ratios.extend(wh[:, 0] / wh[:, 1])
    assert min(ratios) < 0.6 and max(ratios) > 1.7


def test_split_indices_partition():
    val = synth.split_indices(50, 0.2, seed=1)
    assert len(val) == 10 and len(set(val.tolist())) == 10
    assert np.all(np.diff(val) > 0) and val.min() >= 0 and val.max() < 50
    assert len(synth.split_indices(3, 0.01, 0)) == 1  # at least one val image
    assert len(synth.split_indices(2, 0.9, 0)) == 1  # at least one train image
    assert len(synth.split_indices(10, 0.0, 0)) == 0


def test_make_synth_dataset_files_and_consistency(tmp_path):
    result = synth.make_synth_dataset(tmp_path / "d", images=12, size=64, classes=3,
                                      seed=5, val_fraction=0.25)
    out = tmp_path / "d"
    assert (out / "classes.txt").read_text() == "circle\nrectangle\ntriangle\n"
    assert result.n_train == 9 and result.n_val == 3 and result.n_empty == 0
    images = sorted((out / "images").iterdir())
    assert len(images) == 12 and all(p.suffix == ".jpg" for p in images)
    assert cv2.imread(str(images[0])).shape == (64, 64, 3)
    train = load_dataset(out / "train.txt")
    val = load_dataset(out / "val.txt")
    assert train.class_names == ["circle", "rectangle", "triangle"]
    names = {p.name for p in images}
    assert {r.image_path.split("/")[-1] for r in train.records + val.records} == names
    # boxes in the lines file are the rendered ones
    for record in train.records + val.records:
        index = int(record.image_path.split("/")[-1].split(".")[0])
        _, boxes, labels = synth.render_sample(5, index, size=64, num_classes=3)
        np.testing.assert_array_equal(record.boxes, boxes)
        np.testing.assert_array_equal(record.classes, labels)
    assert result.n_boxes == train.num_boxes + val.num_boxes
    np.testing.assert_array_equal(result.class_counts,
                                  train.class_counts() + val.class_counts())
    # val.json is the COCO ground truth of val.txt, with the same image ids
    coco = load_dataset(out / "val.json")
    assert [r.image_id for r in coco.records] == [r.image_id for r in val.records]
    for a, b in zip(coco.records, val.records):
        assert a.image_path == b.image_path
        np.testing.assert_allclose(a.boxes, b.boxes)
    assert len(json.loads((out / "train.json").read_text())["images"]) == 9
    assert not (out / "dataset.manifest.json").exists()  # the command writes it


def test_images_do_not_depend_on_the_image_count(tmp_path):
    synth.make_synth_dataset(tmp_path / "a", images=4, size=48, seed=2, val_fraction=0,
                             image_format="png")
    synth.make_synth_dataset(tmp_path / "b", images=6, size=48, seed=2, val_fraction=0,
                             image_format="png")
    for index in range(4):
        name = f"{index:06d}.png"
        assert (tmp_path / "a" / "images" / name).read_bytes() == \
            (tmp_path / "b" / "images" / name).read_bytes()
    lines_a = (tmp_path / "a" / "train.txt").read_text().splitlines()
    lines_b = (tmp_path / "b" / "train.txt").read_text().splitlines()
    assert lines_a == lines_b[:4]
    assert (tmp_path / "a" / "val.txt").read_text() == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"images": 0}, "--images"), ({"size": 16}, "--size"), ({"classes": 7}, "--classes"),
    ({"seed": -1}, "--seed"), ({"val_fraction": 1.0}, "--val-fraction"),
    ({"image_format": "gif"}, "--image-format"), ({"max_objects": 0}, "--max-objects"),
    ({"min_size": 0.5, "max_size": 0.2}, "--min-size"),
])
def test_bad_options_raise_usage_error(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        synth.make_synth_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli_writes_dataset_and_manifest(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["synth", str(out), "--images", "6", "--size", "48",
                                 "--classes", "5", "--seed", "3", "--val-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    assert "3 train and 3 val" in result.output and "star" in result.output
    for name in ("train.txt", "val.txt", "classes.txt", "val.json", "train.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "dataset.manifest.json").read_text())
    assert manifest["command"] == "synth" and manifest["seed"] == 3
    assert manifest["config"]["classes"] == 5
    assert len((out / "classes.txt").read_text().split()) == 5


def test_cli_config_file_and_override(tmp_path):
    config = tmp_path / "synth.yaml"
    config.write_text("images: 3\nsize: 40\nval-fraction: 0.4\nclasses: 2\n")
    out = tmp_path / "c"
    result = runner.invoke(app, ["synth", str(out), "--config", str(config),
                                 "--classes", "3"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "images").iterdir())) == 3
    assert (out / "classes.txt").read_text().split() == ["circle", "rectangle", "triangle"]


@pytest.mark.parametrize("args, message", [
    (["--classes", "9"], "--classes must be in 1..6"),
    (["--val-fraction", "1.5"], "--val-fraction"),
    (["--size", "10"], "--size"),
])
def test_cli_bad_options_exit_2(tmp_path, args, message):
    result = runner.invoke(app, ["synth", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output


def test_cli_output_is_a_file_exit_2_and_unwritable_exit_1(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    result = runner.invoke(app, ["synth", str(blocker), "--images", "2", "--size", "32"])
    assert result.exit_code == 2
    assert "exists and is not a folder" in result.output
    result = runner.invoke(app, ["synth", str(blocker / "sub"), "--images", "2",
                                 "--size", "32"])
    assert result.exit_code == 1
    assert "error:" in result.output and "cannot write OUT" in result.output
    assert "Traceback" not in result.output


def test_cli_unknown_config_key_exit_2(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("imagez: 3\n")
    result = runner.invoke(app, ["synth", str(tmp_path / "o"), "--config", str(config)])
    assert result.exit_code == 2
    assert "imagez" in result.output


def test_command_defaults_are_the_library_defaults():
    from detkit.commands.synth import SETTINGS, Options

    library = inspect.signature(synth.make_synth_dataset).parameters
    command = Options(out=Path("x"))
    assert {key: getattr(command, key) for key in SETTINGS} == \
        {key: library[key].default for key in SETTINGS}


def test_cli_never_writes_over_a_folder_of_other_files(tmp_path):
    """A user's dataset folder is refused (even with --exist-ok); a synthetic dataset is
    replaced only with --exist-ok, leaving none of its former images."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.txt").write_text("imgs/a.jpg 1,1,50,50,0\n")
    (mine / "classes.txt").write_text("raccoon\n")
    for extra in ([], ["--exist-ok"]):
        result = runner.invoke(app, ["synth", str(mine), "--images", "3", "--size", "32",
                                     *extra])
        assert result.exit_code == 2, result.output
        assert "is a folder of other files" in " ".join(result.output.split())
    assert (mine / "classes.txt").read_text() == "raccoon\n"
    assert sorted(p.name for p in mine.iterdir()) == ["classes.txt", "train.txt"]

    out = tmp_path / "s"
    args = ["synth", str(out), "--size", "32"]
    assert runner.invoke(app, [*args, "--images", "10"]).exit_code == 0
    again = runner.invoke(app, [*args, "--images", "4"])
    assert again.exit_code == 2 and "pass --exist-ok" in again.output
    assert len(list((out / "images").iterdir())) == 10
    assert runner.invoke(app, [*args, "--images", "4", "--exist-ok"]).exit_code == 0
    assert len(list((out / "images").iterdir())) == 4
    assert json.loads((out / "dataset.manifest.json").read_text())["n_train"] + \
        json.loads((out / "dataset.manifest.json").read_text())["n_val"] == 4


def test_cli_folder_of_dotfiles_counts_as_empty(tmp_path):
    """A folder holding only dotfiles takes a dataset; the dotfiles stay, also when the
    dataset is replaced with --exist-ok."""
    out = tmp_path / "d"
    out.mkdir()
    (out / ".gitkeep").write_text("")
    (out / ".DS_Store").write_bytes(b"\0\1")
    args = ["synth", str(out), "--images", "3", "--size", "32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list((out / "images").iterdir())) == 3
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass --exist-ok" in again.output
    assert runner.invoke(app, [*args, "--exist-ok"]).exit_code == 0
    assert (out / ".gitkeep").read_text() == ""
    assert (out / ".DS_Store").read_bytes() == b"\0\1"


def test_run_out_under_a_file_is_an_artifact_error(tmp_path):
    """The library entry point checks OUT before the work, as the CLI does."""
    from detkit.commands.synth import Options, run
    from detkit.errors import ArtifactError

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(ArtifactError, match=r"cannot write OUT .*blocker/ds: .*blocker "
                                            r"is a file, not a folder"):
        run(Options(out=blocker / "ds", images=2, size=32))
    assert blocker.read_text() == "x"


def test_run_mkdir_oserror_is_an_artifact_error(tmp_path, monkeypatch):
    """An OSError creating OUT (an unwritable parent) names OUT, exit 1."""
    from detkit.commands.synth import Options, run
    from detkit.errors import ArtifactError

    out = tmp_path / "ds"

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ArtifactError, match="Permission denied") as caught:
        run(Options(out=out, images=2, size=32))
    assert caught.value.exit_code == 1
    assert str(caught.value) == f"cannot write OUT {out}: Permission denied"
    assert not out.exists()


@pytest.mark.parametrize("fail_at", [1, 2])
def test_cli_manifest_oserror_is_one_line_exit_1(tmp_path, monkeypatch, fail_at):
    """An OSError writing the first or the final manifest: one line naming OUT and the
    file, exit 1, no traceback."""
    from detkit.commands import synth as command

    out = tmp_path / "ds"
    calls = []
    real = command.write_manifest

    def write_manifest(path, **kwargs):
        calls.append(path)
        if len(calls) == fail_at:
            raise PermissionError(13, "Permission denied", str(path) + ".manifest.json")
        return real(path, **kwargs)

    monkeypatch.setattr(command, "write_manifest", write_manifest)
    result = runner.invoke(app, ["synth", str(out), "--images", "2", "--size", "32"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"error: cannot write OUT {out}: Permission denied "
                     f"({out / 'dataset.manifest.json'})"]
    assert "Traceback" not in result.output
