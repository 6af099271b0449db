"""The GPU input pipeline, run on the CPU device: against the CPU pipeline image by image, its draws
against their distributions, its determinism, odd files, and a real run."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision.transforms import v2

from stemsweep.config import AugConfig, ConfigError, DataConfig
from stemsweep.data import build_data
from stemsweep.data.device_pipeline import AugmentationDraw, decode
from stemsweep.data.imagenet import write_fashion_mnist_folder
from stemsweep.data.seeding import SeededImages, image_seed
from stemsweep.data.transforms import INCEPTION_CROP_SCALE, imagenet_train_transform

PAPER_AUG = AugConfig(name="paper", random_resized_crop=True, flip=True, autoaugment=True)
SIZE = 48
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Real JPEGs, plus the files ImageNet has a few of: a greyscale JPEG, a CMYK JPEG, a PNG."""
    root = write_fashion_mnist_folder(tmp_path_factory.mktemp("jpegs"), num_classes=3, train_per_class=16,
                                      val_per_class=4, size=80)
    rng = np.random.default_rng(0)
    odd = root / "train" / "class0"
    pixels = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(pixels[..., 0]).save(odd / "grey.jpg", quality=90)
    Image.fromarray(pixels).convert("CMYK").save(odd / "cmyk.jpg", quality=90)
    Image.fromarray(pixels).save(odd / "really_a_png.jpg", format="PNG")
    return root


def both_pipelines(root, aug=PAPER_AUG, **data):
    config = {"name": "imagenet", "root": str(root), "image_size": SIZE, **data}
    cpu = build_data(DataConfig(pipeline="cpu", **config), aug, None, None)
    gpu = build_data(DataConfig(pipeline="gpu", **config), aug, None, None)
    return cpu, gpu


def device_batch(bundle, indices, seed, epoch=0, train=True):
    """The device pipeline's batch for these images, drawn as training draws them (seed, epoch)."""
    split = SeededImages(bundle.train) if train else bundle.test
    keys = [(i, image_seed(seed, epoch, i)) for i in indices] if train else indices
    return bundle.to_device(bundle.collate([split[k] for k in keys]), CPU, channels_last=False, train=train)


def cpu_batch(bundle, indices, seed, epoch=0, train=True):
    split = SeededImages(bundle.train) if train else bundle.test
    keys = [(i, image_seed(seed, epoch, i)) for i in indices] if train else indices
    items = [split[k] for k in keys]
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


def test_the_device_pipeline_gives_the_cpu_pipelines_images_and_labels(root):
    cpu, gpu = both_pipelines(root)
    assert (gpu.pipeline, cpu.pipeline) == ("gpu", "cpu") and len(gpu.train) == len(cpu.train) == 51
    everything = list(range(len(cpu.train)))  # the JPEGs and the greyscale, CMYK and PNG files
    for seed in (0, 1):
        images, labels = device_batch(gpu, everything, seed)
        expected, expected_labels = cpu_batch(cpu, everything, seed)
        assert images.shape == (51, 3, SIZE, SIZE) and images.dtype == torch.float32
        assert torch.equal(labels, expected_labels) and torch.equal(images, expected)
    test_images, test_labels = device_batch(gpu, range(len(gpu.test)), 0, train=False)
    expected, expected_labels = cpu_batch(cpu, range(len(cpu.test)), 0, train=False)
    assert torch.equal(test_labels, expected_labels) and torch.equal(test_images, expected)


def test_it_is_deterministic_given_the_seed_and_the_epoch(root):
    _, gpu = both_pipelines(root)
    batch = list(range(0, 48, 3))
    first, _ = device_batch(gpu, batch, seed=3)
    assert torch.equal(first, device_batch(gpu, batch, seed=3)[0])
    assert not torch.equal(first, device_batch(gpu, batch, seed=4)[0])
    assert not torch.equal(first, device_batch(gpu, batch, seed=3, epoch=1)[0])
    # An image's augmentation does not depend on the batch it is in.
    alone, _ = device_batch(gpu, batch[2:3], seed=3)
    assert torch.equal(alone[0], first[2])


def test_its_crops_are_the_inception_crops_of_the_cpu_transform():
    # The CPU transform (crop only) on an image whose pixels encode their own coordinates: its output
    # corners say where the crop was; the draw from the same seed must name the same box.
    height, width = 120, 200
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coordinates = torch.stack([ys, xs, torch.zeros_like(ys)]).to(torch.uint8)  # both below 256
    crop_only = AugConfig(name="crop", random_resized_crop=True)
    transform = imagenet_train_transform(crop_only, SIZE)
    geometric = v2.Compose([t for t in transform.transforms if isinstance(t, v2.RandomResizedCrop)])
    draw = AugmentationDraw(transform)
    scales, log_ratios = [], []
    for seed in range(300):
        torch.manual_seed(seed)
        box = draw(height, width)["crop"]
        torch.manual_seed(seed)
        crop = geometric.transforms[0]
        params = crop.make_params([coordinates])
        assert params == box  # the same call, the same generator state: the same box
        out = v2.functional.resized_crop(coordinates, **box, size=[SIZE, SIZE],
                                         interpolation=v2.InterpolationMode.NEAREST)
        assert abs(int(out[0, 0, 0]) - box["top"]) <= box["height"] / SIZE + 1
        assert abs(int(out[1, 0, 0]) - box["left"]) <= box["width"] / SIZE + 1
        scales.append(box["height"] * box["width"] / (height * width))
        log_ratios.append(math.log(box["width"] / box["height"]))
    # The Inception crop's distribution, simulated independently: scale uniform on [0.08, 1], log aspect
    # ratio uniform on [log 3/4, log 4/3], redrawn (up to 10 times) when the box does not fit.
    reference = inception_crops(np.random.default_rng(0), 3000, height, width)
    assert stats.ks_2samp(scales, reference[:, 0]).pvalue > 0.001
    assert stats.ks_2samp(log_ratios, reference[:, 1]).pvalue > 0.001
    assert min(scales) >= INCEPTION_CROP_SCALE[0] * 0.9 and max(scales) <= 1.0


def inception_crops(rng, n, height, width) -> np.ndarray:
    """(scale, log aspect ratio) of n boxes drawn as the Inception crop specifies (rounded as it rounds)."""
    boxes = []
    while len(boxes) < n:
        for _ in range(10):
            area = height * width * rng.uniform(*INCEPTION_CROP_SCALE)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < w <= width and 0 < h <= height:
                boxes.append((h * w / (height * width), math.log(w / h)))
                break
    return np.array(boxes)


def test_its_autoaugment_draws_follow_the_imagenet_policy():
    transform = imagenet_train_transform(PAPER_AUG, SIZE)
    [autoaugment] = [t for t in transform.transforms if isinstance(t, v2.AutoAugment)]
    draw = AugmentationDraw(transform)
    torch.manual_seed(0)
    draws = [draw(100, 100) for _ in range(5000)]
    # Each op's share of draws: Σ over the 25 sub-policies of P(policy) · P(op applied).
    expected: Counter = Counter()
    for policy in autoaugment._policies:
        for name, probability, _ in policy:
            expected[name] += probability / len(autoaugment._policies)
    seen = Counter(name for d in draws for name, _ in d["ops"])
    for name, share in expected.items():
        assert seen[name] / len(draws) == pytest.approx(share, abs=4 * math.sqrt(share / len(draws)) + 0.005), name
    # Signed ops (Rotate, ShearX) turn both ways, half the time each.
    rotations = [m for d in draws for name, m in d["ops"] if name == "Rotate"]
    assert abs(np.mean(np.sign(rotations))) < 0.1
    assert sum(d["flip"] for d in draws) / len(draws) == pytest.approx(0.5, abs=0.03)


def test_decoding_falls_back_from_torchcodec_to_torchvision_io(root, monkeypatch):
    jpegs = sorted((root / "val" / "class1").glob("*.jpg"))[:3]
    items = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in jpegs]
    first = decode(items, CPU)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # as if TorchCodec were not installed
    second = decode(items, CPU)
    assert all(a.shape == (3, 80, 80) and torch.equal(a, b) for a, b in zip(first, second))


def test_gpu_pipeline_where_it_cannot_work_is_a_clear_error():
    with pytest.raises(ConfigError, match="data.pipeline=gpu is not allowed with data=fashion_mnist: the GPU "
                                          "pipeline decodes the JPEG files of an image folder"):
        DataConfig(name="fashion_mnist", pipeline="gpu")
    with pytest.raises(ConfigError, match="data.pipeline='tpu' is not allowed: choose one of auto, cpu, gpu"):
        DataConfig(name="synthetic", pipeline="tpu")


def test_a_real_run_with_the_gpu_pipeline_trains_as_the_cpu_pipeline_does(root, tmp_path, run_in_process):
    common = ["model=vit_xs", "data=imagenet", f"data.root={root}", "data.check_shape=false", "data.image_size=32",
              "aug=paper", "batch_size=16", "epochs=2", "schedule.warmup_epochs=0.5", "logger=none", "threads=1",
              "data.num_workers=1"]
    records = {}
    for pipeline in ("gpu", "cpu"):
        runs = tmp_path / pipeline
        run_in_process(f"runs_root={runs}", *common, f"data.pipeline={pipeline}")
        [run] = [p for p in runs.iterdir() if not p.name.startswith(".")]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "done" and summary["data_pipeline"] == pipeline
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        records[pipeline] = (run.name, [{k: r[k] for k in ("train_loss", "train_error", "test_error")} for r in rows])
    assert records["gpu"] == records["cpu"]  # the same run (signature) and the same numbers
