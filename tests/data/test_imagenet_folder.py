"""ImageNet-style folders: real JPEGs (Fashion-MNIST garments, upscaled) in train/<class>/, val/<class>/."""

import shutil

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import functional as F

from stemsweep.config import AugConfig, DataConfig
from stemsweep.data import build_data
from stemsweep.data.imagenet import read_rgb, write_fashion_mnist_folder
from stemsweep.data.transforms import imagenet_test_transform
from stemsweep.errors import ConfigError

PAPER_AUG = AugConfig(name="paper", random_resized_crop=True, flip=True, autoaugment=True)
TRAIN_RES, TEST_RES = 48, 56  # a model's test_res is the resize before the centre crop (pycls)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_fashion_mnist_folder(tmp_path_factory.mktemp("imagenet"), num_classes=3, train_per_class=8,
                                      val_per_class=4, size=64)


def test_shapes_and_classes_follow_the_model_resolutions(root):
    data = build_data(DataConfig(name="imagenet", root=str(root)), PAPER_AUG, TRAIN_RES, TEST_RES)
    assert (len(data.train), len(data.test), data.num_classes, data.in_chans) == (24, 12, 3, 3)
    assert (data.image_size, data.test_image_size, data.name) == (TRAIN_RES, TRAIN_RES, "imagenet")
    image, label = data.train[0]
    assert image.shape == (3, TRAIN_RES, TRAIN_RES) and image.dtype == torch.float32 and label == 0
    assert data.test[11][0].shape == (3, TRAIN_RES, TRAIN_RES) and data.test[11][1] == 2
    resize = [t for t in data.test.transform.transforms if type(t).__name__ == "Resize"][0]
    assert resize.size == [TEST_RES]  # resize 56, crop 48, as RegNetY's 232/262


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_both_pipelines_read_imagefolders_samples_from_the_kept_index(root, pipeline):
    data = build_data(DataConfig(name="imagenet", root=str(root), pipeline=pipeline), PAPER_AUG, TRAIN_RES,
                      TEST_RES)
    for split, dataset in (("train", data.train), ("val", data.test)):
        assert list(dataset.samples) == ImageFolder(str(root / split)).samples
        assert (root / ".stemsweep-index" / f"{split}.index").is_file()


def test_a_vit_style_resolution_tests_with_the_usual_256_to_224_resize(root):
    data = build_data(DataConfig(name="imagenet", root=str(root)), PAPER_AUG, 224, 224)
    resize = [t for t in data.test.transform.transforms if type(t).__name__ == "Resize"][0]
    assert resize.size == [256] and data.test[0][0].shape == (3, 224, 224)


def test_data_image_size_overrides_the_model_and_carries_to_test(root):
    data = build_data(DataConfig(name="imagenet", root=str(root), image_size=32), AugConfig(name="none"),
                      TRAIN_RES, TEST_RES)
    assert (data.image_size, data.test_image_size) == (32, 32)
    assert data.train[0][0].shape == data.test[0][0].shape == (3, 32, 32)


def test_a_dataloader_with_two_workers_iterates_it(root):
    data = build_data(DataConfig(name="imagenet", root=str(root), train_subset=12), PAPER_AUG, TRAIN_RES,
                      TEST_RES)
    batches = list(DataLoader(data.train, batch_size=4, num_workers=2))
    assert len(batches) == 3
    assert batches[0][0].shape == (4, 3, TRAIN_RES, TRAIN_RES) and batches[0][1].dtype == torch.int64
    assert sorted(torch.cat([labels for _, labels in batches]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_test_transform_resizes_by_256_over_224_then_centre_crops():
    image = torch.randint(0, 256, (3, 200, 300), dtype=torch.uint8)
    out = imagenet_test_transform(224)(image)
    expected = F.center_crop(F.resize(image, 256, antialias=True), 224)
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out, imagenet_test_transform(224).transforms[-1](expected))


def test_read_rgb_gives_three_channels_for_a_grey_image(root, tmp_path):
    from PIL import Image

    jpeg = next((root / "train" / "class0").iterdir())
    Image.open(jpeg).convert("L").save(tmp_path / "grey.png")
    image = read_rgb(str(tmp_path / "grey.png"))
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8


def test_missing_train_folder_is_named(root, tmp_path):
    shutil.copytree(root / "val", tmp_path / "val")
    expected = f"{tmp_path / 'train'} does not exist.*train/<class>/<image>"
    with pytest.raises(ConfigError, match=expected):
        build_data(DataConfig(name="imagenet", root=str(tmp_path)), PAPER_AUG, TRAIN_RES, TEST_RES)


def test_val_classes_must_match_train(root, tmp_path):
    shutil.copytree(root / "train", tmp_path / "train")
    shutil.copytree(root / "val", tmp_path / "val")
    shutil.rmtree(tmp_path / "val" / "class2")
    with pytest.raises(ConfigError, match="only in train: class2; only in val: none"):
        build_data(DataConfig(name="imagenet", root=str(tmp_path)), PAPER_AUG, TRAIN_RES, TEST_RES)
