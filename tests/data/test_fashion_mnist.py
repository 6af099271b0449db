"""Fashion-MNIST, the embedded default: read from Debian's IDX files into memory."""

from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from stemsweep.config import AugConfig, ConfigError, DataConfig
from stemsweep.data import build_data
from stemsweep.data.fashion_mnist import DEBIAN_FOLDER

NO_AUG = AugConfig(name="none")
PAPER_AUG = AugConfig(name="paper", random_resized_crop=True, flip=True, autoaugment=True)


@pytest.fixture(scope="module")
def full():
    return build_data(DataConfig(name="fashion_mnist", root=None), NO_AUG, 224, 224)


def test_published_split_shapes_and_labels(full):
    assert (len(full.train), len(full.test)) == (60000, 10000)
    assert (full.num_classes, full.in_chans, full.image_size, full.test_image_size) == (10, 1, 28, 28)
    assert full.name == "fashion_mnist"
    image, label = full.train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert isinstance(label, int)
    assert set(full.train.targets) == set(full.test.targets) == set(range(10))
    assert full.test[0][0].shape == (1, 28, 28)


def test_images_are_normalised(full):
    images = torch.stack([full.test[i][0] for i in range(len(full.test))])
    assert abs(images.mean().item()) < 0.05 and abs(images.std().item() - 1) < 0.05


def test_subset_is_seeded_stratified_and_of_the_asked_size():
    def subset(seed, size=1000):
        config = DataConfig(name="fashion_mnist", train_subset=size, test_subset=200, subset_seed=seed)
        data = build_data(config, NO_AUG, None, None)
        return data, data.train.indices

    first, indices = subset(seed=3)
    _, again = subset(seed=3)
    _, other = subset(seed=4)
    assert (len(first.train), len(first.test)) == (1000, 200)
    assert indices == again and indices != other
    assert len(set(indices)) == 1000
    labels = [first.train[i][1] for i in range(len(first.train))]
    assert [labels.count(c) for c in range(10)] == [100] * 10  # the published split is balanced


def test_subset_larger_than_the_split_is_refused():
    with pytest.raises(ConfigError, match="data.test_subset=20000 is not allowed"):
        build_data(DataConfig(name="fashion_mnist", test_subset=20000), NO_AUG, None, None)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(ConfigError) as error:
        build_data(DataConfig(name="fashion_mnist", root=str(tmp_path)), NO_AUG, None, None)
    message = str(error.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte.gz" in message
    for way in ("apt-get install dataset-fashion-mnist", "make setup", "data.root", "data.download=true"):
        assert way in message


def _link_debian_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    for file in Path(DEBIAN_FOLDER).glob("*.gz"):
        (folder / file.name).symlink_to(file)


def test_root_may_be_a_torchvision_root(tmp_path):
    _link_debian_files(tmp_path / "FashionMNIST" / "raw")
    config = DataConfig(name="fashion_mnist", root=str(tmp_path), test_subset=10)
    data = build_data(config, NO_AUG, None, None)
    assert (len(data.train), len(data.test)) == (60000, 10)


def test_download_reads_what_torchvision_fetched(tmp_path, monkeypatch):
    calls = []

    class OfflineFashionMNIST:  # stands in for torchvision's, which would fetch over the network
        def __init__(self, root, download):
            calls.append(download)
            _link_debian_files(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", OfflineFashionMNIST)
    data = build_data(DataConfig(name="fashion_mnist", root=str(tmp_path), download=True), NO_AUG, None, None)
    assert calls == [True] and (len(data.train), len(data.test)) == (60000, 10000)


def test_image_size_resizes_both_splits():
    data = build_data(DataConfig(name="fashion_mnist", image_size=32, train_subset=20, test_subset=20),
                      PAPER_AUG, 224, 224)
    assert (data.image_size, data.test_image_size) == (32, 32)
    assert data.train[0][0].shape == data.test[0][0].shape == (1, 32, 32)


def test_paper_augmentation_is_random_but_seeded():
    data = build_data(DataConfig(name="fashion_mnist", train_subset=50), PAPER_AUG, 224, 224)
    plain = build_data(DataConfig(name="fashion_mnist", train_subset=50), NO_AUG, 224, 224)

    def draw():
        torch.manual_seed(0)
        return torch.stack([data.train[i][0] for i in range(50)])

    first = draw()
    assert first.shape == (50, 1, 28, 28) and torch.isfinite(first).all()
    assert torch.equal(first, draw())
    assert not torch.equal(first, torch.stack([plain.train[i][0] for i in range(50)]))


def test_autoaugment_imagenet_policy_works_on_one_channel_images(full):
    autoaugment = v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, fill=0)
    torch.manual_seed(0)
    for i in range(400):  # ~16 draws of each of the policy's 25 sub-policies
        image = full.train.images[i]
        out = autoaugment(image)
        assert out.shape == (1, 28, 28) and out.dtype == torch.uint8
