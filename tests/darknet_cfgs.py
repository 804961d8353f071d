"""Test helpers for the Darknet import: cfg texts with the official layer sequences,
Darknet weights files with random values, and a slow NumPy forward pass of a cfg.

Everything here is written from Darknet's own rules, independently of
``detkit.darknet``: the reference parses the cfg itself and computes each layer in
NCHW float64, as Darknet does (conv with symmetric ``size // 2`` padding, batch norm
with ``sqrt(var) + 1e-6``, leaky 0.1, max pool with ``size - 1`` padding split
``padding // 2`` before, nearest upsampling, route concatenation, shortcut sums).
"""

from __future__ import annotations

import struct

import numpy as np

#: Anchors of the official cfgs (network-input pixels).
YOLOV3_ANCHORS = ("10,13,  16,30,  33,23,  30,61,  62,45,  59,119,  116,90,  156,198,  "
                  "373,326")
TINY_ANCHORS = "10,14,  23,27,  37,58,  81,82,  135,169,  344,319"


def _net(size: int) -> str:
    return (f"[net]\n# Testing\nbatch=1\nsubdivisions=1\nwidth={size}\nheight={size}\n"
            "channels=3\nmomentum=0.9\ndecay=0.0005\nangle=0\nsaturation = 1.5\n"
            "exposure = 1.5\nhue=.1\n\nlearning_rate=0.001\nburn_in=1000\n"
            "max_batches = 500200\npolicy=steps\nsteps=400000,450000\nscales=.1,.1\n\n")


def conv(filters: int, size: int, stride: int = 1, bn: bool = True,
         activation: str = "leaky") -> str:
    lines = ["[convolutional]"]
    if bn:
        lines.append("batch_normalize=1")
    lines += [f"filters={filters}", f"size={size}", f"stride={stride}", "pad=1",
              f"activation={activation}"]
    return "\n".join(lines) + "\n\n"


def _yolo(mask: str, anchors: str, classes: int, num: int) -> str:
    return (f"[yolo]\nmask = {mask}\nanchors = {anchors}\nclasses={classes}\nnum={num}\n"
            "jitter=.3\nignore_thresh = .7\ntruth_thresh = 1\nrandom=1\n\n")


def darknet53_body() -> str:
    """The 75 layers of Darknet-53 as in yolov3.cfg (layers 0-74)."""
    text = conv(32, 3)
    for filters, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        text += "# Downsample\n\n" + conv(filters, 3, 2)
        for _ in range(blocks):
            text += conv(filters // 2, 1) + conv(filters, 3)
            text += "[shortcut]\nfrom=-3\nactivation=linear\n\n"
    return text


def yolov3_cfg(classes: int = 80, size: int = 416, anchors: str = YOLOV3_ANCHORS,
               masks=("6,7,8", "3,4,5", "0,1,2")) -> str:
    """The official yolov3.cfg layer sequence (107 layers, 75 convs)."""
    text = _net(size) + darknet53_body() + "######################\n\n"
    outputs = 3 * (classes + 5)
    for scale, (filters, mask) in enumerate(zip((512, 256, 128), masks)):
        if scale:
            text += "[route]\nlayers = -4\n\n" + conv(filters, 1)
            text += "[upsample]\nstride=2\n\n"
            text += f"[route]\nlayers = -1, {61 if scale == 1 else 36}\n\n\n"
        for _ in range(3):
            text += conv(filters, 1) + conv(2 * filters, 3)
        text += conv(outputs, 1, bn=False, activation="linear")
        text += _yolo(mask, anchors, classes, 9)
    return text


def yolov3_tiny_cfg(classes: int = 80, size: int = 416, anchors: str = TINY_ANCHORS,
                    masks=("3,4,5", "1,2,3")) -> str:
    """The official yolov3-tiny.cfg layer sequence (24 layers, 13 convs; its second
    [yolo] uses mask 1,2,3 as the official file does)."""
    text = _net(size)
    for i, filters in enumerate((16, 32, 64, 128, 256, 512)):
        text += conv(filters, 3)
        text += f"[maxpool]\nsize=2\nstride={1 if i == 5 else 2}\n\n"
    text += conv(1024, 3) + "###########\n\n" + conv(256, 1) + conv(512, 3)
    outputs = 3 * (classes + 5)
    text += conv(outputs, 1, bn=False, activation="linear")
    text += _yolo(masks[0], anchors, classes, 6)
    text += "[route]\nlayers = -4\n\n" + conv(128, 1) + "[upsample]\nstride=2\n\n"
    text += "[route]\nlayers = -1, 8\n\n" + conv(256, 3)
    text += conv(outputs, 1, bn=False, activation="linear")
    text += _yolo(masks[1], anchors, classes, 6)
    return text


def darknet53_cfg(classifier: bool = True, size: int = 256) -> str:
    """darknet53.cfg: the body, with the ImageNet classifier tail when ``classifier``."""
    text = _net(size) + darknet53_body()
    if classifier:
        text += "[avgpool]\n\n" + conv(1000, 1, bn=False, activation="linear")
        text += "[softmax]\ngroups=1\n\n"
    return text


# Parsing -------------------------------------------------------------------------------

def parse(text: str) -> list[tuple[str, dict[str, str]]]:
    """``[(type, options)]``, ``[net]`` first (no validation: tests write valid cfgs)."""
    sections = []
    for raw in text.splitlines():
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sections.append((line[1:-1], {}))
        else:
            key, value = line.split("=", 1)
            sections[-1][1][key] = value
    return sections


def conv_shapes(text: str) -> list[tuple[int, int, int, bool]]:
    """``(filters, in_channels, size, batch_normalize)`` of every conv in cfg order."""
    sections = parse(text)
    channels, shapes = [], []
    for kind, opts in sections[1:]:
        previous = channels[-1] if channels else int(sections[0][1].get("channels", 3))
        if kind == "convolutional":
            shapes.append((int(opts["filters"]), previous, int(opts["size"]),
                           opts.get("batch_normalize") == "1"))
            channels.append(int(opts["filters"]))
        elif kind == "route":
            index = len(channels)
            refs = [int(v) for v in opts["layers"].split(",")]
            channels.append(sum(channels[r + index if r < 0 else r] for r in refs))
        else:
            channels.append(previous)
    return shapes


# Weights -------------------------------------------------------------------------------

def random_convs(text: str, seed: int = 0,
                 tiny_variances: float = 0.1) -> list[dict[str, np.ndarray]]:
    """Random float32 arrays for every conv of ``text``, at scales that keep activations
    near 1 through the network. A fraction ``tiny_variances`` of the running variances
    is 1e-4, where Darknet's ``sqrt(var) + 1e-6`` and a Keras-style ``sqrt(var + 1e-3)``
    differ by 3x."""
    rng = np.random.default_rng(seed)
    convs = []
    for filters, channels, size, bn in conv_shapes(text):
        fan_in = channels * size * size
        kernel = rng.normal(0, 1.0 / np.sqrt(fan_in), (filters, channels, size, size))
        arrays = {"kernel": kernel.astype(np.float32),
                  "bias": rng.normal(0, 0.1, filters).astype(np.float32)}
        if bn:
            variance = rng.uniform(0.3, 1.5, filters)
            tiny = rng.random(filters) < tiny_variances
            variance[tiny] = 1e-4
            arrays["variance"] = variance.astype(np.float32)
            arrays["gamma"] = (rng.uniform(0.5, 1.2, filters)
                               * np.sqrt(variance)).astype(np.float32)
            arrays["mean"] = rng.normal(0, 0.2, filters).astype(np.float32)
        convs.append(arrays)
    return convs


def weights_bytes(convs: list[dict[str, np.ndarray]], major: int = 0, minor: int = 2,
                  revision: int = 0, seen: int = 32013312) -> bytes:
    """A Darknet weights file: header (``seen`` int64 from version 0.2), then per conv
    ``bias, [gamma, mean, variance,] kernel`` as little-endian float32."""
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    parts = [struct.pack("<3i", major, minor, revision),
             struct.pack("<q" if wide else "<i", seen)]
    for arrays in convs:
        order = ["bias", "gamma", "mean", "variance"] if "gamma" in arrays else ["bias"]
        for key in order + ["kernel"]:
            parts.append(np.asarray(arrays[key], "<f4").tobytes())
    return b"".join(parts)


# Reference forward pass ------------------------------------------------------------------

def _conv2d(x: np.ndarray, kernel: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """``x (C, H, W)``, ``kernel (O, C, k, k)`` -> ``(O, H', W')``, zero padding ``pad``
    on every side, Darknet's ``(H + 2 pad - k) / stride + 1`` outputs."""
    size = kernel.shape[-1]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out_h = (x.shape[1] + 2 * pad - size) // stride + 1
    out_w = (x.shape[2] + 2 * pad - size) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(xp, (size, size), axis=(1, 2))
    windows = windows[:, :out_h * stride:stride, :out_w * stride:stride]
    return np.einsum("chwij,ocij->ohw", windows, kernel, optimize=True)


def _maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """Darknet's max pool: outputs ``(H + padding - size) / stride + 1``, windows start
    at ``i * stride - padding // 2``, positions outside the map never win."""
    channels, height, width = x.shape
    out_h = (height + padding - size) // stride + 1
    out_w = (width + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.full((channels, out_h, out_w), -np.inf)
    for i in range(out_h):
        for j in range(out_w):
            for di in range(size):
                for dj in range(size):
                    r, c = i * stride + offset + di, j * stride + offset + dj
                    if 0 <= r < height and 0 <= c < width:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, r, c])
    return out


def forward(text: str, convs: list[dict[str, np.ndarray]],
            image: np.ndarray) -> list[np.ndarray]:
    """Darknet's forward pass of one image.

    Args:
        text: the cfg.
        convs: arrays per conv (as :func:`random_convs`).
        image: ``(H, W, 3)`` RGB in ``[0, 1]``.

    Returns:
        The input of every ``[yolo]`` layer in cfg order as ``(H, W, A, 5 + C)``
        (channel ``a * (5 + C) + v`` -> ``[a, v]``), float64; for a cfg without
        ``[yolo]``, the outputs of layers 36, 61 and 74 as ``(H, W, C)``.
    """
    x = np.transpose(np.asarray(image, np.float64), (2, 0, 1))
    outputs, heads = [], []
    conv_index = 0
    for index, (kind, opts) in enumerate(parse(text)[1:]):
        if kind == "convolutional":
            arrays = {k: v.astype(np.float64) for k, v in convs[conv_index].items()}
            conv_index += 1
            size, stride = int(opts["size"]), int(opts.get("stride", 1))
            pad = size // 2 if opts.get("pad") == "1" else int(opts.get("padding", 0))
            x = _conv2d(x, arrays["kernel"], stride, pad)
            if opts.get("batch_normalize") == "1":
                x = (x - arrays["mean"][:, None, None]) / (
                    np.sqrt(arrays["variance"])[:, None, None] + 1e-6)
                x = x * arrays["gamma"][:, None, None]
            x = x + arrays["bias"][:, None, None]
            if opts["activation"] == "leaky":
                x = np.where(x > 0, x, 0.1 * x)
            else:
                assert opts["activation"] == "linear"
        elif kind == "maxpool":
            stride = int(opts.get("stride", 1))
            size = int(opts.get("size", stride))
            x = _maxpool(x, size, stride, int(opts.get("padding", size - 1)))
        elif kind == "upsample":
            step = int(opts.get("stride", 2))
            x = x.repeat(step, axis=1).repeat(step, axis=2)
        elif kind == "shortcut":
            ref = int(opts["from"])
            x = x + outputs[index + ref if ref < 0 else ref]
        elif kind == "route":
            refs = [int(v) for v in opts["layers"].split(",")]
            x = np.concatenate([outputs[index + r if r < 0 else r] for r in refs], axis=0)
        elif kind == "yolo":
            channels, height, width = x.shape
            heads.append(np.transpose(x, (1, 2, 0)).reshape(height, width, 3, -1))
        elif kind == "avgpool":
            x = x.mean(axis=(1, 2), keepdims=True)
        elif kind == "softmax":
            pass
        else:
            raise ValueError(f"reference forward: unknown layer [{kind}]")
        outputs.append(x)
    if heads:
        return heads
    return [np.transpose(outputs[i], (1, 2, 0)) for i in (74, 61, 36)]
