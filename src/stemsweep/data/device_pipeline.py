"""The GPU input pipeline (`data.pipeline=gpu`): DataLoader workers only read each image's JPEG bytes
and draw its augmentation; decoding, the Inception crop, flip, AutoAugment and normalisation run on
the training device, on whole batches.

At the paper's scale the CPU transform sets the pace: ~430 images/s per core (docs/benchmarks.md)
against the several thousand images/s a GPU trains ViT_C-4GF at. Here the per-image work left on the
CPU is a file read, a JPEG header parse and a few random numbers.

The same transform objects as the CPU pipeline (data/transforms.py) define what is drawn and done:
`AugmentationDraw` calls their parameter draws in the order their v2.Compose would, so from the same
seed (data/seeding.py) both pipelines draw the same crop, flip and AutoAugment ops for an image, and
`DeviceBatches` applies them with the same torchvision functions. What differs is only where it runs
and that the decode is libjpeg-turbo or nvjpeg (torchvision.io, or TorchCodec where installed).
The code is the same on a CPU device (how it is tested here) and on CUDA.

Written by hand because no library does this part: torchvision's AutoAugment draws one sub-policy per
call, so on a batch it applies one policy to every image, and applied per image on a GPU it costs a
Python call and a few kernels each; here images are grouped by the op and magnitude they drew and each
group is one batched call of torchvision's own op. NVIDIA DALI does per-image GPU augmentation but
does not install from PyPI and cannot run on a CPU device (docs/benchmarks.md, "GPU input pipeline").
"""

from __future__ import annotations

import io
import warnings
from collections import defaultdict
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2.functional import pil_to_tensor

from stemsweep.data.bad_files import DECODE_ERRORS, BadFiles, UnreadableImage
from stemsweep.data.image_index import ImageIndex
from stemsweep.data.transforms import Normalise

DECODED_ON_DEVICE = ("RGB", "L")  # JPEG colour modes the device decodes; others (CMYK, PNGs) are decoded in the worker


class AugmentationDraw:
    """One image's random augmentation, drawn as the CPU pipeline's v2.Compose would draw it: the
    crop's box (RandomResizedCrop.make_params), the flip (RandomHorizontalFlip: torch.rand(1) < p) and
    AutoAugment's sub-policy ops (its forward: a policy index, then per op a probability test and, for
    signed ops, a sign)."""

    def __init__(self, compose: v2.Compose):
        self.transforms = list(compose.transforms)
        self.size = _output_size(self.transforms)

    def __call__(self, height: int, width: int) -> dict[str, Any]:
        params: dict[str, Any] = {"crop": None, "flip": False, "ops": []}
        for t in self.transforms:
            if isinstance(t, v2.RandomResizedCrop):
                # a stand-in of the image's shape, no memory: make_params only asks for the size
                params["crop"] = t.make_params([torch.zeros((), dtype=torch.uint8).expand(3, height, width)])
            elif isinstance(t, v2.RandomHorizontalFlip):
                params["flip"] = bool(torch.rand(1) < t.p)
            elif isinstance(t, v2.AutoAugment):
                params["ops"] = _autoaugment_ops(t, self.size, self.size)
        return params


def _autoaugment_ops(t: v2.AutoAugment, height: int, width: int) -> list[tuple[str, float]]:
    """The (op, magnitude) pairs AutoAugment.forward would apply, drawn as it draws them."""
    ops = []
    policy = t._policies[int(torch.randint(len(t._policies), ()))]
    for name, probability, magnitude_index in policy:
        if not torch.rand(()) <= probability:
            continue
        magnitudes_fn, signed = t._AUGMENTATION_SPACE[name]
        magnitudes = magnitudes_fn(10, height, width)
        magnitude = 0.0
        if magnitudes is not None:
            magnitude = float(magnitudes[magnitude_index])
            if signed and torch.rand(()) <= 0.5:
                magnitude *= -1
        ops.append((name, magnitude))
    return ops


def _output_size(transforms: list) -> int:
    for t in reversed(transforms):
        if isinstance(t, (v2.RandomResizedCrop, v2.CenterCrop)):
            return t.size[0]
    raise ValueError("the transform has no crop: the device pipeline needs a fixed output size")


class EncodedImages(Dataset):
    """An image folder's files as the device pipeline's items: (the JPEG's bytes, or the image decoded
    here when the device cannot decode it; label; the augmentation drawn for it, or None; the file's
    path, named if the device cannot decode it). A file that cannot be read, or whose header cannot be
    parsed, raises UnreadableImage before any augmentation is drawn (data/bad_files.py)."""

    def __init__(self, index: ImageIndex, compose: v2.Compose, train: bool):
        self.samples, self.classes, self.targets = index, index.classes, index.labels
        self.compose = compose  # the CPU pipeline's transform: what the device applies
        self.draw = AugmentationDraw(compose) if train else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, dict[str, Any] | None]:
        path, label = self.samples[index]
        try:
            with open(path, "rb") as f:
                data = f.read()
            header = Image.open(io.BytesIO(data))  # reads the header only
            if header.format == "JPEG" and header.mode in DECODED_ON_DEVICE and _has_end_marker(data):
                item = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            else:
                item = pil_to_tensor(header.convert("RGB"))
        except DECODE_ERRORS as exc:
            raise UnreadableImage.from_error(path, exc) from None
        width, height = header.size
        return item, label, self.draw(height, width) if self.draw else None, path


def _has_end_marker(jpeg: bytes) -> bool:
    """Whether the JPEG ends with its EOI marker (zero padding after it is common). A file cut short, a
    truncated download, lacks it: it is decoded in the worker, where a failure replaces it as in the
    CPU pipeline, rather than failing on the device."""
    return jpeg.rstrip(b"\0").endswith(b"\xff\xd9")


def collate_encoded(batch: list) -> tuple[list[torch.Tensor], torch.Tensor, list, list[str]]:
    items, labels, params, paths = zip(*batch)
    return list(items), torch.tensor(labels, dtype=torch.int64), list(params), list(paths)


class DeviceBatches:
    """Turns a collated batch of encoded images into the model's input on `device`: decode, each image's
    crop / resize (per image: their sizes differ), then flip, AutoAugment and normalisation on the batch.

    An image that neither the device nor Pillow can decode (its header parsed in the worker, its data
    is corrupt) is counted in `bad_files`; in training (`replace`) it is replaced by the next image of
    the batch that decoded, with that image's label and augmentation, so the batch keeps its size; in
    testing it is left out."""

    def __init__(self, compose: v2.Compose, bad_files: BadFiles, replace: bool):
        self.bad_files, self.replace = bad_files, replace
        self.size = _output_size(list(compose.transforms))
        self.per_image = [t for t in compose.transforms if isinstance(t, (v2.RandomResizedCrop, v2.Resize,
                                                                            v2.CenterCrop))]
        self.autoaugment = next((t for t in compose.transforms if isinstance(t, v2.AutoAugment)), None)
        self.normalise = next(t for t in compose.transforms if isinstance(t, Normalise))
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, batch, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        items, labels, params, paths = batch
        params = params if params[0] is not None else [None] * len(items)
        decoded = decode(items, device)
        if any(image is None for image in decoded):
            decoded, labels, params = self._without_undecodable(decoded, labels, params, paths)
            if not decoded:  # a test batch of only undecodable images
                return torch.empty((0, 3, self.size, self.size), device=device), labels.to(device)
        images = torch.stack([self._geometry(image, p) for image, p in zip(decoded, params)])
        if any(p and p["flip"] for p in params):
            flip = torch.tensor([bool(p and p["flip"]) for p in params], device=device).view(-1, 1, 1, 1)
            images = torch.where(flip, images.flip(-1), images)
        if self.autoaugment is not None:
            images = self._autoaugment(images, [p["ops"] if p else [] for p in params])
        shift, scale = self._normalise_on(device)
        images = (images.float() - shift) * scale
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(device, non_blocking=True)

    def _without_undecodable(self, decoded: list, labels: torch.Tensor, params: list, paths: list[str]):
        failed = [i for i, image in enumerate(decoded) if image is None]
        outcome = "replaced by another image of its batch in training" if self.replace else \
            "left out of the test error"
        for i in failed:
            self.bad_files.record(UnreadableImage(paths[i], "neither the device nor Pillow can decode it"), outcome)
        if not self.replace:
            kept = [i for i, image in enumerate(decoded) if image is not None]
            return [decoded[i] for i in kept], labels[kept], [params[i] for i in kept]
        if len(failed) == len(decoded):
            raise self.bad_files.too_many()  # only when the limit is above the batch size
        labels, n = labels.clone(), len(decoded)
        for i in failed:
            j = next(k % n for k in range(i + 1, i + n) if decoded[k % n] is not None)
            decoded[i], labels[i], params[i] = decoded[j], labels[j], params[j]
        return decoded, labels, params

    def _geometry(self, image: torch.Tensor, params: dict[str, Any] | None) -> torch.Tensor:
        for t in self.per_image:
            if isinstance(t, v2.RandomResizedCrop):
                image = F.resized_crop(image, **params["crop"], size=t.size, interpolation=t.interpolation,
                                       antialias=t.antialias)
            else:
                image = t(image)  # Resize, CenterCrop: deterministic
        return image

    def _autoaugment(self, images: torch.Tensor, ops: list[list[tuple[str, float]]]) -> torch.Tensor:
        """Each sub-policy slot in turn; within a slot, the images that drew the same op and magnitude
        go through torchvision's op as one batch (the same call AutoAugment makes for one image)."""
        t = self.autoaugment
        for slot in range(2):
            groups: dict[tuple[str, float], list[int]] = defaultdict(list)
            for i, drawn in enumerate(ops):
                if len(drawn) > slot:
                    groups[drawn[slot]].append(i)
            for (name, magnitude), indices in groups.items():
                index = torch.tensor(indices, device=images.device)
                images[index] = t._apply_image_or_video_transform(
                    images[index], name, magnitude, interpolation=t.interpolation, fill=t._fill)
        return images

    def _normalise_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            self._constants[device] = (self.normalise.shift.to(device), self.normalise.scale.to(device))
        return self._constants[device]


def decode(items: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """JPEG bytes (1-D uint8) decoded on `device` in one batched call (nvjpeg on CUDA), images the
    workers decoded (3-D) moved there. A batch the device cannot decode is decoded image by image,
    by Pillow where the device fails; None for an image Pillow cannot decode either."""
    encoded = [i for i, item in enumerate(items) if item.ndim == 1]
    out = [item if item.ndim == 1 else item.to(device, non_blocking=True) for item in items]
    if encoded:
        jpegs = [items[i] for i in encoded]
        try:
            decoded = _decode_jpegs(jpegs, device)
        except RuntimeError:
            decoded = [_decode_one(jpeg, device) for jpeg in jpegs]
        for i, image in zip(encoded, decoded):
            out[i] = image
    return out


def _decode_one(jpeg: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        return _decode_jpegs([jpeg], device)[0]
    except RuntimeError:
        pass
    try:
        return pil_to_tensor(Image.open(io.BytesIO(jpeg.numpy().tobytes())).convert("RGB")).to(device)
    except DECODE_ERRORS:
        return None


def _decode_jpegs(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """TorchCodec's decoder where it is installed (it succeeds torchvision.io's, deprecated from
    torchvision 0.29 on), else torchvision.io's: the same call, the same libjpeg-turbo / nvjpeg."""
    try:
        from torchcodec.decoders import decode_jpeg
    except ImportError:
        from torchvision.io import decode_jpeg

        with warnings.catch_warnings():  # its deprecation notice, once per batch otherwise
            warnings.simplefilter("ignore")
            return decode_jpeg(jpegs, mode="RGB", device=device)
    return decode_jpeg(jpegs, mode="RGB", device=device)
