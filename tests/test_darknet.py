"""``detkit import-darknet``: cfg parsing, the weights binary, exactness against a NumPy
Darknet forward pass, partial files, every error, and using the imported files.

The cfgs are generated with the official layer sequences (``darknet_cfgs``) and the
weights are random, written in Darknet's binary format by the tests. Models are full
width (the import's only width) at 64 px, batch 1.
"""

import json
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

import darknet_cfgs as dc
from detkit.cli import app
from detkit.commands.import_darknet import Options, anchors_path_for, run
from detkit.darknet.cfg import parse_cfg, read_cfg
from detkit.darknet.convert import fold_gamma
from detkit.darknet.layout import recognize
from detkit.darknet.weights import read_weights
from detkit.errors import ArtifactError, DataError

SIZE = 64
CLASSES = 2
runner = CliRunner()


def _image(seed=1):
    return np.random.default_rng(seed).random((SIZE, SIZE, 3)).astype(np.float32)


def _relative_error(outputs, references):
    """Largest absolute difference over the largest reference value, all outputs."""
    scale = max(float(np.abs(r).max()) for r in references)
    return max(float(np.abs(np.asarray(o)[0] - r).max()) for o, r in
               zip(outputs, references)) / scale


def _write(folder, name, cfg_text, convs, **header):
    cfg, weights = folder / f"{name}.cfg", folder / f"{name}.weights"
    cfg.write_text(cfg_text)
    weights.write_bytes(dc.weights_bytes(convs, **header))
    return cfg, weights


def _line_of(text, needle, occurrence=1):
    """1-based line of the ``occurrence``-th line equal to ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if line == needle]
    return hits[occurrence - 1]


def _model(name, weights_path, classes=CLASSES):
    from detkit.models import build_model

    model = build_model(name, classes, 1.0, SIZE)
    model.load_weights(weights_path)  # plain Keras loading: every variable must match
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The official yolov3-tiny layout (masks 3,4,5 and 1,2,3), 2 classes, imported."""
    folder = tmp_path_factory.mktemp("tiny")
    text = dc.yolov3_tiny_cfg(classes=CLASSES)
    convs = dc.random_convs(text, seed=0)
    cfg, weights = _write(folder, "yolov3-tiny", text, convs)
    result = run(Options(cfg=cfg, weights=weights, out=folder / "tiny.weights.h5"))
    return dict(folder=folder, text=text, convs=convs, cfg=cfg, weights=weights,
                result=result)


@pytest.fixture(scope="module")
def yolov3(tmp_path_factory):
    """The official yolov3 layout, 2 classes, imported."""
    folder = tmp_path_factory.mktemp("yolov3")
    text = dc.yolov3_cfg(classes=CLASSES)
    convs = dc.random_convs(text, seed=1)
    cfg, weights = _write(folder, "yolov3", text, convs)
    result = run(Options(cfg=cfg, weights=weights, out=folder / "yolov3.weights.h5"))
    return dict(folder=folder, text=text, convs=convs, cfg=cfg, weights=weights,
                result=result)


# ---------------------------------------------------------------------------------------
# Exactness against the NumPy reference
# ---------------------------------------------------------------------------------------

def test_yolov3_tiny_matches_the_numpy_darknet_forward(tiny):
    result = tiny["result"]
    assert (result.layout, result.model, result.num_classes) == ("yolov3-tiny",
                                                                 "yolov3-tiny", CLASSES)
    assert (result.convs_read, result.convs_in_cfg) == (13, 13)
    assert not result.left_at_init and not result.not_imported
    image = _image()
    outputs = _model("yolov3-tiny", result.out).predict(image[None], verbose=0)
    references = dc.forward(tiny["text"], tiny["convs"], image)
    assert [np.shape(o)[1:] for o in outputs] == [r.shape for r in references] == [
        (2, 2, 3, 5 + CLASSES), (4, 4, 3, 5 + CLASSES)]
    assert _relative_error(outputs, references) < 1e-4


def test_yolov3_matches_the_numpy_darknet_forward(yolov3):
    result = yolov3["result"]
    assert (result.layout, result.convs_read, result.convs_in_cfg) == ("yolov3", 75, 75)
    assert not result.left_at_init
    image = _image(2)
    outputs = _model("yolov3", result.out).predict(image[None], verbose=0)
    references = dc.forward(yolov3["text"], yolov3["convs"], image)
    assert [r.shape[:2] for r in references] == [(2, 2), (4, 4), (8, 8)]
    assert _relative_error(outputs, references) < 1e-3


def test_batch_norm_fold_reproduces_darknet_normalization():
    variance = np.float32([0.0, 1e-8, 1e-4, 0.5, 2.0, 1e3])
    gamma = np.float32([1.0, 0.5, -2.0, 1.5, 0.7, 3.0])
    for epsilon in (1e-3, 1e-5):
        folded = fold_gamma(gamma, variance, epsilon)
        keras_scale = folded.astype(np.float64) / np.sqrt(variance.astype(np.float64)
                                                          + epsilon)
        darknet_scale = gamma / (np.sqrt(variance.astype(np.float64)) + 1e-6)
        np.testing.assert_allclose(keras_scale, darknet_scale, rtol=1e-6)


def test_anchors_file_and_manifest(tiny):
    result = tiny["result"]
    # Official tiny masks: 3,4,5 at stride 32 and 1,2,3 at stride 16 (anchor 3 twice,
    # anchor 0 unused); detkit's file lists what each head uses, finest head first.
    assert result.anchors_path == anchors_path_for(result.out)
    assert result.anchors_path.read_text() == (
        "23,27, 37,58, 81,82, 81,82, 135,169, 344,319\n")
    assert any("at two scales" in note for note in result.notes)
    manifest = json.loads((result.out.parent / "tiny.weights.h5.manifest.json").read_text())
    assert manifest["command"] == "import-darknet"
    assert (manifest["model"], manifest["width"], manifest["input_size"]) == (
        "yolov3-tiny", 1.0, 416)
    assert "class_names" not in manifest  # placeholder names are not recorded
    assert result.class_names is None
    np.testing.assert_array_equal(manifest["anchors"], result.anchors)
    from detkit.artifacts import sha256_file

    assert manifest["inputs"] == {str(tiny["cfg"]): sha256_file(tiny["cfg"]),
                                  str(tiny["weights"]): sha256_file(tiny["weights"])}
    assert manifest["darknet"]["version"] == "0.2.0"
    assert manifest["darknet"]["seen"] == 32013312


def test_yolov3_anchors_follow_detkit_masks(yolov3):
    from detkit.anchors import load_anchors

    anchors = load_anchors(yolov3["result"].anchors_path)
    expected = np.float32(dc.YOLOV3_ANCHORS.replace(",", " ").split()).reshape(-1, 2)
    np.testing.assert_array_equal(anchors, expected)


def test_permuted_masks_permute_the_output_anchors(tmp_path):
    """Masks listing anchors out of area order: detkit's slot j of head i must hold the
    output Darknet computes for the anchor detkit's anchors file gives slot j."""
    from detkit.anchors import anchor_masks, load_anchors

    anchors = "81,82,  10,14,  344,319,  23,27,  135,169,  37,58"
    masks = ("4,2,0", "5,3,1")
    text = dc.yolov3_tiny_cfg(classes=CLASSES, anchors=anchors, masks=masks)
    convs = dc.random_convs(text, seed=3)
    cfg, weights = _write(tmp_path, "perm", text, convs)
    result = run(Options(cfg=cfg, weights=weights, out=tmp_path / "perm.weights.h5"))
    image = _image(3)
    outputs = _model("yolov3-tiny", result.out).predict(image[None], verbose=0)
    references = dc.forward(text, convs, image)
    cfg_anchors = np.float32(anchors.replace(",", " ").split()).reshape(-1, 2)
    detkit_anchors = load_anchors(result.anchors_path)
    areas = detkit_anchors.prod(axis=1)
    assert np.all(np.diff(areas) >= 0)  # this cfg still allows an area-sorted file
    for head, rows in enumerate(anchor_masks(6)):
        mask = [int(m) for m in masks[head].split(",")]
        for slot, row in enumerate(rows):
            darknet_slot = [tuple(cfg_anchors[m]) for m in mask].index(
                tuple(detkit_anchors[row]))
            np.testing.assert_allclose(outputs[head][0, :, :, slot],
                                       references[head][:, :, darknet_slot],
                                       atol=1e-4 * np.abs(references[head]).max())


# ---------------------------------------------------------------------------------------
# Partial files and the darknet53 layouts
# ---------------------------------------------------------------------------------------

def test_partial_file_loads_what_it_holds_and_reports_the_rest(tiny, tmp_path):
    from detkit.models.weights import file_layer_arrays

    weights = tmp_path / "tiny.conv.9"
    weights.write_bytes(dc.weights_bytes(tiny["convs"][:9]))
    out = tmp_path / "partial.weights.h5"
    result = runner.invoke(app, ["import-darknet", str(tiny["cfg"]), str(weights),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "the weights stop after conv 9 of 13" in result.output
    left = ["heads/lateral1", "heads/head1_conv", "heads/head_out_0", "heads/head_out_1"]
    assert "left at initialization (4 layers): " + ", ".join(left) in result.output
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["darknet"]["left_at_init"] == left
    assert manifest["darknet"]["convs_read"] == 9
    arrays = file_layer_arrays(out)
    # Conv 9 (head0_conv) came from the file, conv 10 (head_out_0) did not.
    np.testing.assert_array_equal(arrays["heads/head0_conv/conv"][0],
                                  np.transpose(tiny["convs"][8]["kernel"], (2, 3, 1, 0)))
    assert not np.allclose(arrays["heads/head_out_0"][1], tiny["convs"][9]["bias"][:21])


@pytest.mark.slow
def test_darknet53_conv74_on_yolov3_cfg_fills_the_body(yolov3, tmp_path):
    """The first 52 convs (``darknet53.conv.74``): the body equals Darknet-53's
    features, every head layer stays at its initialization."""
    weights = tmp_path / "darknet53.conv.74"
    weights.write_bytes(dc.weights_bytes(yolov3["convs"][:52]))
    result = run(Options(cfg=yolov3["cfg"], weights=weights,
                         out=tmp_path / "d53.weights.h5"))
    assert (result.convs_read, result.convs_in_cfg) == (52, 75)
    assert len(result.left_at_init) == 23 and all(
        name.startswith("heads/") for name in result.left_at_init)
    image = _image(4)
    body = _model("yolov3", result.out).get_layer("body")
    features = body.predict(image[None], verbose=0)
    references = dc.forward(dc.darknet53_cfg(classifier=False), yolov3["convs"][:52], image)
    assert [r.shape for r in references] == [(2, 2, 1024), (4, 4, 512), (8, 8, 256)]
    assert _relative_error(features, references) < 1e-3


def test_darknet53_classifier_layout_maps_the_body_and_keeps_the_tail_unmapped(tmp_path):
    text = dc.darknet53_cfg(classifier=True)
    layout = recognize(parse_cfg(text, path="darknet53.cfg"))
    assert (layout.name, layout.model, layout.num_classes) == ("darknet53", "yolov3", None)
    assert len(layout.convs) == 53
    assert layout.convs[0].target == "body/stem"
    assert layout.convs[51].target == "body/stage5_res4/expand"
    tail = layout.convs[52]
    assert tail.target is None and tail.shape.channels == 1024
    assert (tail.shape.filters, tail.shape.batch_normalize) == (1000, False)
    assert layout.input_size == 256
    # The file is read through the classifier conv (sizes checked to the last float).
    shapes = [(1000, 1024, 1, False)]
    classifier = {"kernel": np.zeros((1000, 1024, 1, 1), np.float32),
                  "bias": np.zeros(1000, np.float32)}
    body = [{"kernel": np.zeros((f, c, s, s), np.float32), "bias": np.zeros(f, np.float32),
             "gamma": np.ones(f, np.float32), "mean": np.zeros(f, np.float32),
             "variance": np.ones(f, np.float32)}
            for f, c, s, _ in dc.conv_shapes(text)[:52]]
    assert dc.conv_shapes(text)[52:] == shapes
    path = tmp_path / "darknet53.weights"
    path.write_bytes(dc.weights_bytes(body + [classifier]))
    weights = read_weights(path, [conv.shape for conv in layout.convs])
    assert len(weights.convs) == 53 and weights.convs[52].kernel.shape == (1000, 1024, 1, 1)


# ---------------------------------------------------------------------------------------
# The binary header and reader errors
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_layout(tiny):
    return recognize(parse_cfg(tiny["text"], path="yolov3-tiny.cfg"))


@pytest.mark.parametrize("major, minor, seen_bytes", [(0, 1, 4), (0, 2, 8), (1, 0, 8),
                                                      (1000, 2, 4)])
def test_seen_is_int32_before_version_0_2(tiny, tiny_layout, tmp_path, major, minor,
                                          seen_bytes):
    path = tmp_path / "w.weights"
    path.write_bytes(dc.weights_bytes(tiny["convs"], major=major, minor=minor, seen=123456))
    assert path.stat().st_size == 12 + seen_bytes + 4 * sum(
        c.shape.num_floats for c in tiny_layout.convs)
    weights = read_weights(path, [conv.shape for conv in tiny_layout.convs])
    assert (weights.major, weights.minor, weights.seen) == (major, minor, 123456)
    np.testing.assert_array_equal(weights.convs[12].kernel, tiny["convs"][12]["kernel"])
    np.testing.assert_array_equal(weights.convs[3].variance, tiny["convs"][3]["variance"])


def _tiny_bytes(tiny):
    return dc.weights_bytes(tiny["convs"])


@pytest.mark.parametrize("case, message", [
    ("short_header", "truncated file: 10 bytes"),
    ("odd_bytes", "truncated file: its 34714214 bytes after the header are not a "
                  "whole number of float32 values, and hold 8678553 of the 8678554 the "
                  "cfg needs"),
    ("trailing_bytes", "3 trailing bytes after 8678554 float32 values (the cfg needs "
                       "8678554): the 34714219 bytes after the header are not a whole "
                       "number"),
    ("inside_conv", "the weights hold 1000 floats after conv 9, the cfg needs 10773 for "
                    "conv 10 (layer 15, [convolutional] at line"),
    ("extra", "the weights hold 7 floats after conv 13 (the last conv of the cfg), the "
              "cfg needs 0"),
    ("header_only", "holds a header but no conv weights"),
    ("negative_variance", "conv 2 (layer 2, [convolutional] at line"),
])
def test_reader_errors(tiny, tiny_layout, tmp_path, case, message):
    data = _tiny_bytes(tiny)
    shapes = [conv.shape for conv in tiny_layout.convs]
    header = 20
    nine = header + 4 * sum(s.num_floats for s in shapes[:9])
    data = {
        "short_header": data[:10],
        "odd_bytes": data[:-2],
        "trailing_bytes": data + b"\0" * 3,
        "inside_conv": data[:nine + 4000],
        "extra": data + b"\0" * 28,
        "header_only": data[:header],
        # Conv 2 holds beta, gamma, mean, variance (32 each): its first variance.
        "negative_variance": data[:header + 4 * (shapes[0].num_floats + 96)]
        + struct.pack("<f", -1.0) + data[header + 4 * (shapes[0].num_floats + 97):],
    }[case]
    path = tmp_path / "bad.weights"
    path.write_bytes(data)
    with pytest.raises(ArtifactError, match=None) as info:
        read_weights(path, shapes)
    assert message in str(info.value) and str(path) in str(info.value)


# ---------------------------------------------------------------------------------------
# cfg errors: every one names the file, the line and the section
# ---------------------------------------------------------------------------------------

def _cfg_case(text, old, new, occurrence=1):
    """``text`` with the ``occurrence``-th line ``old`` replaced by ``new``; its line."""
    line = _line_of(text, old, occurrence)
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n", line


@pytest.mark.parametrize("old, new, occurrence, message", [
    ("[upsample]", "[reorg]", 1, "unknown layer type [reorg]"),
    ("filters=64", "filters=48", 1, "[convolutional] (layer 4): expected filters=64"),
    ("activation=leaky", "activation=mish", 3, "[convolutional] (layer 4): expected"),
    ("stride=1", "stride=2", 7, "[maxpool] (layer 11): expected size=2 stride=1"),
    ("layers = -1, 8", "layers = -1, 6", 1, "[route] (layer 20): expected layers=19,8"),
    ("layers = -4", "layers = 30", 1, "layers refers to layer 30, which does not precede"),
    ("size=3", "size=three", 1, "option size='three' is not an integer"),
    ("pad=1", "pad=1\nbinary=1", 2, "option 'binary' is not supported"),
    ("random=1", "scale_x_y=1.05", 1, "scale_x_y=1.05 changes how outputs decode"),
    ("classes=2", "classes=3", 2, "[yolo] (layer 23): expected classes=2"),
    ("mask = 1,2,3", "mask = 1,2,6", 1, "must name distinct anchors among 0..5"),
])
def test_cfg_errors_name_the_line(tiny, tmp_path, old, new, occurrence, message):
    text, line = _cfg_case(tiny["text"], old, new, occurrence)
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(text)
    with pytest.raises(DataError) as info:
        recognize(parse_cfg(cfg.read_text(), path=cfg))
    error = info.value
    assert message in error.message, error.message
    assert error.path == str(cfg)
    # The line is the changed option's or its section header's (a few lines above).
    assert line - 8 <= error.line <= line + new.count("\n"), (error.line, line)


def test_cfg_errors_on_structure(tiny):
    text = tiny["text"]
    cut = text[:text.index("[route]")]
    with pytest.raises(DataError, match=r"the cfg ends at layer 16; the yolov3-tiny "
                                        r"layout goes on with \[route\]"):
        recognize(parse_cfg(cut, path="cut.cfg"))
    with pytest.raises(DataError, match="must start with"):
        parse_cfg("[convolutional]\nfilters=1\n")
    with pytest.raises(DataError, match="before the first"):
        parse_cfg("filters=1\n[net]\n")
    with pytest.raises(DataError, match="given twice") as info:
        parse_cfg("[net]\nwidth=1\nwidth=2\n[maxpool]\n")
    assert info.value.line == 3
    with pytest.raises(DataError, match="channels=1"):
        recognize(parse_cfg(text.replace("channels=3", "channels=1")))
    # A darknet53 body with more than a classifier after it is refused at that section.
    extra = dc.darknet53_cfg(classifier=False) + "[avgpool]\n\n[upsample]\nstride=2\n"
    with pytest.raises(DataError, match=r"\[upsample\] \(layer 76\): the darknet53 "
                                        r"layout ends at layer 74"):
        recognize(parse_cfg(extra))


@pytest.mark.parametrize("filters", [8, 32])
def test_a_tiny_like_cfg_is_compared_with_the_tiny_layout(tiny, filters):
    """One filter count off (32 is also the yolov3 stem's): the hint names tiny's 16."""
    text, line = _cfg_case(tiny["text"], "filters=16", f"filters={filters}")
    with pytest.raises(DataError) as info:
        recognize(parse_cfg(text, path="tiny.cfg"))
    assert info.value.message.startswith(
        f"[convolutional] (layer 0): expected filters=16 size=3 stride=1 "
        f"batch_normalize=1 activation=leaky padding=1 groups=1 dilation=1, found "
        f"filters={filters} "), info.value.message
    assert info.value.message.endswith("(this cfg comes closest to yolov3-tiny)")
    assert info.value.line == line


def test_a_short_tiny_like_cfg_is_compared_with_the_tiny_layout():
    text = ("[net]\nwidth=416\nheight=416\n[convolutional]\nbatch_normalize=1\n"
            "filters=8\nsize=3\nstride=1\npad=1\nactivation=leaky\n[maxpool]\nsize=2\n"
            "stride=2\n")
    with pytest.raises(DataError, match=r"expected filters=16 .*closest to yolov3-tiny"):
        recognize(parse_cfg(text, path="short.cfg"))


def test_a_classifier_cfg_with_one_difference_is_compared_with_darknet53():
    text, _ = _cfg_case(dc.darknet53_cfg(classifier=True), "filters=128", "filters=96")
    with pytest.raises(DataError, match=r"expected filters=128 .*closest to darknet53\)$"):
        recognize(parse_cfg(text, path="d53.cfg"))


# ---------------------------------------------------------------------------------------
# Text encodings: a byte-order mark, bytes that are not UTF-8
# ---------------------------------------------------------------------------------------

def test_cfg_byte_order_mark_is_dropped(tiny, tmp_path):
    cfg = tmp_path / "bom.cfg"
    cfg.write_bytes(b"\xef\xbb\xbf" + tiny["text"].encode())
    layout = recognize(read_cfg(cfg))
    assert (layout.name, layout.net.line, len(layout.convs)) == ("yolov3-tiny", 1, 13)
    assert recognize(parse_cfg("\ufeff" + tiny["text"])).name == "yolov3-tiny"


def test_cfg_bytes_that_are_not_utf8_are_read_in_comments(tiny, tmp_path):
    """Latin-1 in comments (Darknet reads bytes); elsewhere one line naming the byte."""
    cfg = tmp_path / "latin1.cfg"
    text = tiny["text"].replace("# Testing", "# caf\xe9 ; r\xe9seau", 1)
    cfg.write_bytes(text.encode("latin-1"))
    assert recognize(read_cfg(cfg)).name == "yolov3-tiny"
    bad, line = _cfg_case(tiny["text"], "[upsample]", "[upsample\xe9]")
    cfg.write_bytes(bad.encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_cfg(cfg)
    assert str(info.value) == (f"{cfg}:{line}: byte 0xe9 is not UTF-8 text (only comment "
                               f"lines, starting with # or ;, may hold such bytes)")


def test_cli_reads_a_cfg_with_a_byte_order_mark(tmp_path):
    cfg, weights = tmp_path / "bom.cfg", tmp_path / "w.weights"
    cfg.write_bytes(b"\xef\xbb\xbf[net]\nwidth=416\n[convolutional]\nfilters=16\n")
    weights.write_bytes(b"")
    result = _invoke(cfg, weights, "--out", tmp_path / "o" / "t.weights.h5")
    assert result.exit_code == 1, result.output
    assert "ufeff" not in result.output and "before the first" not in result.output
    assert f"{cfg}:3: [convolutional] (layer 0): expected filters=16" in " ".join(
        result.output.split())


# ---------------------------------------------------------------------------------------
# The command: exit codes, messages, untouched inputs
# ---------------------------------------------------------------------------------------

def _invoke(*args):
    return runner.invoke(app, ["import-darknet", *map(str, args)])


def test_cli_imports_and_renders(tiny, tmp_path):
    out = tmp_path / "sub" / "cli.weights.h5"
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    result = _invoke(tiny["cfg"], tiny["weights"], "--out", out, "--classes", names)
    assert result.exit_code == 0, result.output
    assert "Darknet yolov3-tiny -> detkit yolov3-tiny" in result.output
    assert "13 of 13" in result.output
    assert "the [yolo] masks use anchor(s) [3] at two scales" in result.output
    assert out.is_file() and anchors_path_for(out).is_file()
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["class_names"] == ["cat", "dog"]
    assert manifest["config"]["classes"] == str(names)


@pytest.mark.parametrize("case, code, message", [
    ("unknown_layer", 1, "bad.cfg:{line}: unknown layer type [reorg]"),
    ("missing_cfg", 1, "nowhere.cfg: cfg file not found"),
    ("mismatch", 1, "the weights hold 7 floats after conv 13"),
    ("truncated", 1, "truncated file"),
    ("trailing", 1, "3 trailing bytes after"),
    ("classes", 1, "--classes lists 3 names, the cfg's [yolo] layers have classes=2"),
    ("bad_out", 2, "--out must be a NAME.weights.h5 file"),
    ("out_is_input", 2, "--out would overwrite the input"),
    ("input_size", 2, "--input-size must be >= 32"),
    ("input_size_stride", 2, "--input-size must be a multiple of 32, got 100"),
    ("unwritable", 1, "cannot write --out"),
])
def test_cli_errors(tiny, tmp_path, case, code, message):
    cfg, weights = tiny["cfg"], tiny["weights"]
    out = tmp_path / "o.weights.h5"
    extra = []
    line = None
    if case == "unknown_layer":
        text, line = _cfg_case(tiny["text"], "[upsample]", "[reorg]")
        cfg = tmp_path / "bad.cfg"
        cfg.write_text(text)
    elif case == "missing_cfg":
        cfg = tmp_path / "nowhere.cfg"
    elif case == "mismatch":
        weights = tmp_path / "long.weights"
        weights.write_bytes(_tiny_bytes(tiny) + b"\0" * 28)
    elif case == "trailing":
        weights = tmp_path / "trailing.weights"
        weights.write_bytes(_tiny_bytes(tiny) + b"\0" * 3)
    elif case == "truncated":
        weights = tmp_path / "short.weights"
        weights.write_bytes(_tiny_bytes(tiny)[:-6])
    elif case == "classes":
        names = tmp_path / "names.txt"
        names.write_text("a\nb\nc\n")
        extra = ["--classes", names]
    elif case == "bad_out":
        out = tmp_path / "o.h5"
    elif case == "out_is_input":
        weights = tmp_path / "in.weights.h5"
        weights.write_bytes(_tiny_bytes(tiny))
        out = weights
    elif case == "input_size":
        extra = ["--input-size", "16"]
    elif case == "input_size_stride":
        extra = ["--input-size", "100"]
    elif case == "unwritable":
        (tmp_path / "blocker").write_text("a file, not a folder")
        out = tmp_path / "blocker" / "o.weights.h5"
    inputs = {p: p.read_bytes() for p in (cfg, weights) if p.exists()}
    result = _invoke(cfg, weights, "--out", out, *extra)
    assert result.exit_code == code, result.output
    expected = message.format(line=line)
    assert expected in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in inputs} == inputs
    if case != "out_is_input":
        assert not out.exists() and not list(tmp_path.glob("*.manifest.json"))


# ---------------------------------------------------------------------------------------
# Using the imported files: predict, and train --weights with another class count
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth(synth_with_anchors):
    return synth_with_anchors(np.float32([[8, 8], [12, 16], [16, 12], [20, 24], [28, 28],
                                          [40, 40]]))


def test_predict_accepts_imported_weights_and_anchors(tiny, synth, tmp_path):
    result = tiny["result"]
    out = tmp_path / "dets.json"
    invoked = runner.invoke(app, [
        "predict", str(synth / "val.txt"), "--model", "yolov3-tiny", "--weights",
        str(result.out), "--anchors", str(result.anchors_path), "--input-size", str(SIZE),
        "--conf", "0.5", "--out", str(out)])
    assert invoked.exit_code == 0, invoked.output
    assert isinstance(json.loads(out.read_text()), list)


@pytest.mark.slow
def test_train_from_imported_weights_with_other_classes_keeps_body_and_neck(tmp_path,
                                                                            synth):
    """Darknet weights for 3 classes, a 2-class dataset: stage 1 loads the body and the
    necks, skips the two class-dependent output convs and says so."""
    from detkit.models.weights import file_layer_arrays

    text = dc.yolov3_tiny_cfg(classes=3)
    cfg, weights = _write(tmp_path, "three", text, dc.random_convs(text, seed=5))
    imported = run(Options(cfg=cfg, weights=weights, out=tmp_path / "three.weights.h5"))
    run_dir = tmp_path / "run"
    result = runner.invoke(app, [
        "train", str(synth / "train.txt"), "--model", "yolov3-tiny", "--anchors",
        str(synth / "anchors.txt"), "--input-size", str(SIZE), "--batch-size", "1",
        "--steps-per-epoch", "1", "--epochs", "1", "--weights", str(imported.out),
        "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    text_out = " ".join(result.output.split())
    assert "note: loaded" in text_out and "skipped 2 output convs of another class " \
           "count, which start fresh" in text_out
    assert "heads/head_out_0: kernel: shape (1, 1, 512, 24) in the file, (1, 1, 512, 21) " \
           "in the model" in text_out
    assert "heads/head_out_1" in text_out
    before, after = file_layer_arrays(imported.out), file_layer_arrays(run_dir /
                                                                       "last.weights.h5")
    body = [name for name in before if name.startswith("body/")]
    assert len(body) == 14
    for name in body:  # stage 1 froze the imported body
        for a, b in zip(before[name], after[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
