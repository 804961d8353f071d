"""Recognize a Darknet cfg as a layout detkit imports, and map its convs onto detkit.

Layouts: ``yolov3`` and ``yolov3-tiny`` (the official detector cfgs, with any class count
and anchors) and ``darknet53`` (the yolov3 body alone, optionally followed by the
ImageNet classifier's ``[avgpool]``/``[convolutional]``/``[softmax]``/``[cost]`` tail,
which is read but not mapped). Each layout is spelled out layer by layer from detkit's
own architecture constants, so a cfg is accepted only when every layer computes what the
detkit layer it lands on computes; anything else is refused naming the first section that
differs and its line.

Darknet and detkit agree on the order of every concatenation (``[route] layers=-1, 61``:
the upsampled map first, as detkit's ``concat`` layers), so kernels are copied without
permuting their input channels. Output convs are permuted per anchor only where a
``[yolo]`` mask lists its anchors in another order than by area.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from detkit.darknet.cfg import Section
from detkit.darknet.weights import ConvShape
from detkit.errors import DataError
from detkit.models import yolov3, yolov3_tiny
from detkit.models.layers import BOX_VALUES, LEAKY_SLOPE

#: Activation names in cfgs.
LEAKY, LINEAR = "leaky", "linear"
#: Darknet's leaky slope, which detkit's DarknetConv shares.
DARKNET_LEAKY_SLOPE = 0.1
assert LEAKY_SLOPE == DARKNET_LEAKY_SLOPE
#: Layout name -> detkit model it maps onto.
LAYOUT_MODELS = {"yolov3": "yolov3", "yolov3-tiny": "yolov3-tiny", "darknet53": "yolov3"}
#: Layer types allowed after the darknet53 body (the ImageNet classifier's tail).
CLASSIFIER_TAIL = ("avgpool", "convolutional", "softmax", "cost")
#: Options each layer type may carry; any other could change the arithmetic.
KNOWN_OPTIONS = {
    "convolutional": {"filters", "size", "stride", "pad", "padding", "activation",
                      "batch_normalize", "groups", "dilation"},
    "maxpool": {"size", "stride", "padding"},
    "route": {"layers"},
    "shortcut": {"from", "activation"},
    "upsample": {"stride", "scale"},
    "avgpool": set(), "softmax": {"groups", "temperature"}, "cost": {"type", "scale"},
}
#: ``[yolo]`` options that change how outputs decode (refused unless at their default).
YOLO_DECODE_DEFAULTS = {"scale_x_y": 1.0, "new_coords": 0.0}
ANCHORS_PER_SCALE = yolov3.ANCHORS_PER_SCALE


@dataclasses.dataclass(frozen=True)
class Expected:
    """One layer of a layout: its type, the options it must have, where it lands."""

    type: str
    params: tuple[tuple[str, Any], ...] = ()
    target: str | None = None
    head: int | None = None


@dataclasses.dataclass(frozen=True)
class ConvMapping:
    """A conv of the cfg and where its weights go.

    Attributes:
        section: the ``[convolutional]`` section.
        shape: what it takes from the weights file.
        target: the detkit layer path (``body/stem``: a DarknetConv; ``heads/head_out_0``:
            an output conv with bias), or ``None`` when it is not imported.
        head: detkit head index of an output conv, else ``None``.
    """

    section: Section
    shape: ConvShape
    target: str | None
    head: int | None = None


@dataclasses.dataclass
class Layout:
    """A recognized cfg.

    Attributes:
        name: ``yolov3``, ``yolov3-tiny`` or ``darknet53``.
        model: the detkit model it maps onto.
        convs: every conv in cfg order (the order of the weights file).
        num_classes: ``classes=`` of the ``[yolo]`` layers (None without them).
        anchors: ``(K, 2)`` anchors as detkit lists them (per head, finest head first,
            each head's three by area), network-input pixels; None without ``[yolo]``.
        anchor_orders: per detkit head, the Darknet mask slot of each detkit slot.
        yolo_sections: the ``[yolo]`` sections, coarsest stride first.
        net: the ``[net]`` section.
        notes: remarks for the user (e.g. an anchor shared by two scales).
    """

    name: str
    model: str
    convs: list[ConvMapping]
    net: Section
    num_classes: int | None = None
    anchors: np.ndarray | None = None
    anchor_orders: list[list[int]] = dataclasses.field(default_factory=list)
    yolo_sections: list[Section] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def input_size(self) -> int | None:
        """``[net] width`` when it equals ``height`` and is a multiple of 32, else None."""
        width, height = self.net.get_int("width", 0), self.net.get_int("height", 0)
        if width == height and width > 0 and width % 32 == 0:
            return width
        return None


# Layout descriptions ------------------------------------------------------------------

def _conv(filters: int, size: int, stride: int = 1, target: str | None = None, *,
          bn: bool = True, head: int | None = None) -> Expected:
    return Expected("convolutional", (
        ("filters", filters), ("size", size), ("stride", stride),
        ("batch_normalize", int(bn)), ("activation", LEAKY if bn else LINEAR),
        ("padding", size // 2), ("groups", 1), ("dilation", 1)), target, head)


def _darknet53(seq: list[Expected]) -> dict[int, int]:
    """Append the Darknet-53 body; return stage -> index of its last layer."""
    seq.append(_conv(yolov3.STEM_FILTERS, 3, 1, "body/stem"))
    ends = {}
    for stage, (filters, units) in enumerate(yolov3.DARKNET53_STAGES, start=1):
        seq.append(_conv(filters, 3, 2, f"body/stage{stage}_down"))
        for unit in range(1, units + 1):
            name = f"body/stage{stage}_res{unit}"
            seq.append(_conv(filters // 2, 1, 1, f"{name}/reduce"))
            seq.append(_conv(filters, 3, 1, f"{name}/expand"))
            seq.append(Expected("shortcut", (("from", len(seq) - 3),
                                             ("activation", LINEAR))))
        ends[stage] = len(seq) - 1
    return ends


def _upsample() -> Expected:
    return Expected("upsample", (("stride", 2), ("scale", 1.0)))


def _yolo(head: int, num_classes: int, num_anchors: int) -> Expected:
    return Expected("yolo", (("classes", num_classes), ("mask_size", ANCHORS_PER_SCALE),
                             ("num", num_anchors)), head=head)


def _yolov3(num_classes: int) -> list[Expected]:
    seq: list[Expected] = []
    ends = _darknet53(seq)
    outputs = ANCHORS_PER_SCALE * (BOX_VALUES + num_classes)
    neck_end = -1
    for scale, (stage, filters) in enumerate(zip(yolov3.FEATURE_STAGES,
                                                 yolov3.NECK_FILTERS)):
        if scale:
            seq.append(Expected("route", (("layers", (neck_end,)),)))
            seq.append(_conv(filters, 1, 1, f"heads/lateral{scale}"))
            seq.append(_upsample())
            seq.append(Expected("route", (("layers", (len(seq) - 1, ends[stage + 1])),)))
        for i in range(5):
            kernel = 1 if i % 2 == 0 else 3
            seq.append(_conv(filters if kernel == 1 else 2 * filters, kernel, 1,
                             f"heads/neck{scale}_{i + 1}"))
        neck_end = len(seq) - 1
        seq.append(_conv(2 * filters, 3, 1, f"heads/head{scale}_conv"))
        seq.append(_conv(outputs, 1, 1, f"heads/head_out_{scale}", bn=False, head=scale))
        seq.append(_yolo(scale, num_classes, 3 * ANCHORS_PER_SCALE))
    return seq


def _yolov3_tiny(num_classes: int) -> list[Expected]:
    t = yolov3_tiny
    seq: list[Expected] = []
    stride16 = -1
    for i, filters in enumerate(t.BODY_FILTERS):
        seq.append(_conv(filters, 3, 1, f"body/conv{i + 1}"))
        if i == t.STRIDE16_CONV:
            stride16 = len(seq) - 1
        if i < len(t.BODY_FILTERS) - 1:
            stride = 1 if i == t.STRIDE1_POOL_CONV else 2
            seq.append(Expected("maxpool", (("size", 2), ("stride", stride),
                                            ("padding", 1))))
    outputs = ANCHORS_PER_SCALE * (BOX_VALUES + num_classes)
    num_anchors = 2 * ANCHORS_PER_SCALE
    seq.append(_conv(t.REDUCE_FILTERS, 1, 1, "heads/neck0_1"))
    reduce = len(seq) - 1
    seq.append(_conv(t.HEAD32_FILTERS, 3, 1, "heads/head0_conv"))
    seq.append(_conv(outputs, 1, 1, "heads/head_out_0", bn=False, head=0))
    seq.append(_yolo(0, num_classes, num_anchors))
    seq.append(Expected("route", (("layers", (reduce,)),)))
    seq.append(_conv(t.LATERAL_FILTERS, 1, 1, "heads/lateral1"))
    seq.append(_upsample())
    seq.append(Expected("route", (("layers", (len(seq) - 1, stride16)),)))
    seq.append(_conv(t.HEAD16_FILTERS, 3, 1, "heads/head1_conv"))
    seq.append(_conv(outputs, 1, 1, "heads/head_out_1", bn=False, head=1))
    seq.append(_yolo(1, num_classes, num_anchors))
    return seq


def _darknet53_only(num_classes: int) -> list[Expected]:
    seq: list[Expected] = []
    _darknet53(seq)
    return seq


#: Layout name -> (builder of its layer list, whether a classifier tail may follow).
LAYOUTS = {"yolov3": (_yolov3, False), "yolov3-tiny": (_yolov3_tiny, False),
           "darknet53": (_darknet53_only, True)}


# Reading sections -----------------------------------------------------------------------

def _absolute(section: Section, index: int, key: str) -> int:
    """A layer reference as an absolute index (Darknet: negative is relative)."""
    target = section.index + index if index < 0 else index
    if not 0 <= target < section.index:
        raise section.error(f"{key} refers to layer {target}, which does not precede "
                            f"layer {section.index}", key)
    return target


def _check_options(section: Section) -> None:
    known = KNOWN_OPTIONS.get(section.type)
    if known is None:
        return
    for key in section.options:
        if key not in known:
            raise section.error(f"option {key!r} is not supported by detkit's import "
                                f"(it could change the layer's arithmetic)", key)


def signature(section: Section) -> dict[str, Any]:
    """The options of ``section`` that decide what it computes, with Darknet's defaults.

    Raises:
        DataError: an unsupported option or a malformed value (naming its line).
    """
    _check_options(section)
    get = section.get_int
    if section.type == "convolutional":
        size = get("size", 1)
        padding = size // 2 if get("pad", 0) else get("padding", 0)
        return {"filters": get("filters", 1), "size": size, "stride": get("stride", 1),
                "batch_normalize": get("batch_normalize", 0),
                "activation": section.get_str("activation", "logistic"),
                "padding": padding, "groups": get("groups", 1),
                "dilation": get("dilation", 1)}
    if section.type == "maxpool":
        stride = get("stride", 1)
        size = get("size", stride)
        return {"size": size, "stride": stride, "padding": get("padding", size - 1)}
    if section.type == "route":
        return {"layers": tuple(_absolute(section, i, "layers")
                                for i in section.get_ints("layers"))}
    if section.type == "shortcut":
        return {"from": _absolute(section, get("from"), "from"),
                "activation": section.get_str("activation", LINEAR)}
    if section.type == "upsample":
        return {"stride": get("stride", 2), "scale": section.get_float("scale", 1.0)}
    if section.type == "yolo":
        for key, default in YOLO_DECODE_DEFAULTS.items():
            if section.get_float(key, default) != default:
                raise section.error(f"{key}={section.options[key]} changes how outputs "
                                    f"decode; detkit decodes as YOLOv3 ({key}="
                                    f"{default:g})", key)
        return {"classes": get("classes", 20), "mask_size": len(section.get_ints("mask")),
                "num": get("num", 1)}
    return {}


def _show(params: dict[str, Any] | tuple) -> str:
    items = params.items() if isinstance(params, dict) else params
    return " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in items)


def _fits(want: Expected, found: dict[str, Any]) -> bool:
    """Whether a layer with signature ``found`` computes what ``want`` does."""
    return all(found.get(key) == value for key, value in want.params)


def _closeness(expected: list[Expected], layers: list[Section], signatures: list[dict],
               tail_ok: bool) -> tuple[int, int, int]:
    """How close a cfg is to a layout, larger is closer: (layers that fit at their
    position, layers of the expected type there, minus the layers missing or extra).
    A classifier tail the layout allows counts as fitting."""
    shared = min(len(layers), len(expected))
    pairs = [(expected[i], layers[i].type, signatures[i]) for i in range(shared)]
    same_type = sum(want.type == kind for want, kind, _ in pairs)
    fit = sum(want.type == kind and _fits(want, found) for want, kind, found in pairs)
    tail = sum(tail_ok and section.type in CLASSIFIER_TAIL for section in layers[shared:])
    gap = len(expected) - shared + len(layers) - shared - tail
    return fit + tail, same_type + tail, -gap


def _match(name: str, expected: list[Expected], layers: list[Section],
           signatures: list[dict], tail_ok: bool) -> DataError | None:
    """The error at the first layer that does not fit layout ``name`` (None: all fit)."""
    refuse = (f"; detkit imports the official yolov3, yolov3-tiny and darknet53 layouts "
              f"(this cfg comes closest to {name})")
    for i, section in enumerate(layers):
        if i >= len(expected):
            if tail_ok and section.type in CLASSIFIER_TAIL:
                continue
            after = (" (then only a classifier's [avgpool], [convolutional], [softmax], "
                     "[cost])" if tail_ok else "")
            return section.error(f"the {name} layout ends at layer {len(expected) - 1}"
                                 f"{after}, the cfg goes on" + refuse)
        want = expected[i]
        if section.type != want.type:
            return section.error(f"expected a [{want.type}] here" + refuse)
        found = signatures[i]
        for key, value in want.params:
            if found.get(key) != value:
                return section.error(
                    f"expected {_show(want.params)}, found {_show(found)}" + refuse,
                    key if key in section.options else None)
    if len(layers) < len(expected):
        last = layers[-1]
        return DataError(
            f"the cfg ends at layer {last.index}; the {name} layout goes on with "
            f"[{expected[len(layers)].type}] (layer {len(layers)})" + refuse,
            path=last.path, line=last.line)
    return None


def _classes(layers: list[Section]) -> int:
    for section in layers:
        if section.type == "yolo":
            return section.get_int("classes", 20)
    return 0


def recognize(sections: list[Section]) -> Layout:
    """Match a parsed cfg against the layouts detkit imports.

    Args:
        sections: :func:`detkit.darknet.cfg.parse_cfg` output (``[net]`` first).

    Returns:
        The :class:`Layout`, its convs mapped onto detkit layer paths.

    Raises:
        DataError: no layout fits (naming the first differing section and its line),
            ``[net] channels`` other than 3, or ``[yolo]`` layers that disagree.
    """
    net, layers = sections[0], sections[1:]
    if net.get_int("channels", 3) != 3:
        raise net.error(f"channels={net.options['channels']}: detkit models take RGB "
                        f"images (channels=3)", "channels")
    signatures = [signature(section) for section in layers]
    num_classes = _classes(layers)
    refusals: list[tuple[tuple[int, int, int], DataError]] = []
    for name, (build, tail_ok) in LAYOUTS.items():
        expected = build(num_classes)
        error = _match(name, expected, layers, signatures, tail_ok)
        if error is None:
            return _layout(name, expected, net, layers, num_classes)
        refusals.append((_closeness(expected, layers, signatures, tail_ok), error))
    raise max(refusals, key=lambda refusal: refusal[0])[1]


def _channels(layers: list[Section]) -> list[int]:
    """Output channels of every layer (Darknet's shape rules)."""
    out: list[int] = []
    for section in layers:
        previous = out[-1] if out else 3
        if section.type == "convolutional":
            out.append(section.get_int("filters", 1))
        elif section.type == "route":
            out.append(sum(out[i] for i in signature(section)["layers"]))
        else:
            out.append(previous)
    return out


def _layout(name: str, expected: list[Expected], net: Section, layers: list[Section],
            num_classes: int) -> Layout:
    channels = _channels(layers)
    convs = []
    for i, section in enumerate(layers):
        if section.type != "convolutional":
            continue
        want = expected[i] if i < len(expected) else None
        number = len(convs) + 1
        shape = ConvShape(
            filters=section.get_int("filters", 1),
            channels=channels[i - 1] if i else 3, size=section.get_int("size", 1),
            batch_normalize=bool(section.get_int("batch_normalize", 0)),
            name=f"conv {number} (layer {section.index}, [convolutional] at line "
                 f"{section.line})")
        convs.append(ConvMapping(section, shape, want.target if want else None,
                                 want.head if want else None))
    layout = Layout(name, LAYOUT_MODELS[name], convs, net)
    yolos = [section for section in layers if section.type == "yolo"]
    if yolos:
        layout.num_classes = num_classes
        layout.yolo_sections = yolos
        _map_anchors(layout)
    return layout


def _map_anchors(layout: Layout) -> None:
    """Fill ``anchors`` and ``anchor_orders`` from the ``[yolo]`` masks.

    detkit's head ``i`` (coarsest first) uses rows ``anchor_masks(K)[i]`` of its anchors
    file; the file therefore lists each head's three anchors, finest head first, each
    head's sorted by area (its output conv permuted to match).
    """
    first = layout.yolo_sections[0]
    anchors = np.asarray(first.get_floats("anchors"), dtype=np.float64)
    num = first.get_int("num", 1)
    if anchors.size != 2 * num:
        raise first.error(f"anchors= lists {anchors.size} values, num={num} needs "
                          f"{2 * num}", "anchors")
    anchors = anchors.reshape(-1, 2)
    if np.any(anchors <= 0):
        raise first.error("anchor sizes must be positive", "anchors")
    groups, used = [], []
    for section in layout.yolo_sections:
        if section.get_floats("anchors") != first.get_floats("anchors"):
            raise section.error(f"anchors differ from those of the [yolo] at line "
                                f"{first.line}; detkit uses one anchor list", "anchors")
        mask = section.get_ints("mask")
        if any(not 0 <= m < num for m in mask) or len(set(mask)) != len(mask):
            raise section.error(f"mask={section.options['mask']} must name distinct "
                                f"anchors among 0..{num - 1}", "mask")
        rows = anchors[mask]
        order = np.lexsort((rows[:, 0], rows[:, 0] * rows[:, 1]))
        groups.append(rows[order])
        layout.anchor_orders.append([int(o) for o in order])
        used += mask
    layout.anchors = np.concatenate(groups[::-1]).astype(np.float32)
    shared = sorted({m for m in used if used.count(m) > 1})
    unused = sorted(set(range(num)) - set(used))
    if shared or unused:
        layout.notes.append(
            f"the [yolo] masks use anchor(s) {shared or 'none'} at two scales and "
            f"{unused or 'none'} at none (as the official yolov3-tiny.cfg does); the "
            f"anchors file lists the {len(used)} anchors the heads use, in head order")
    area = layout.anchors.prod(axis=1)
    if np.any(np.diff(area) < 0):
        layout.notes.append("the anchors file is not sorted by area: the cfg's masks "
                            "give a finer scale a larger anchor than a coarser one")
