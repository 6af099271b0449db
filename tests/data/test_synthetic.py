"""Synthetic images: seeded per index, learnable labels."""

import torch

from stemsweep.config import AugConfig, DataConfig
from stemsweep.data import build_data

NO_AUG = AugConfig(name="none")
PAPER_AUG = AugConfig(name="paper", random_resized_crop=True, flip=True, autoaugment=True)


def test_shapes_and_defaults():
    data = build_data(DataConfig(name="synthetic", in_chans=1, num_train=40, num_test=20), NO_AUG, 224, 224)
    assert (len(data.train), len(data.test)) == (40, 20)
    assert (data.num_classes, data.in_chans, data.image_size, data.test_image_size) == (10, 1, 32, 32)
    image, label = data.train[7]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10

    sized = build_data(DataConfig(name="synthetic", num_classes=3, image_size=16, test_image_size=24),
                       PAPER_AUG, None, None)
    assert sized.num_classes == 3
    assert sized.train[0][0].shape == (3, 16, 16) and sized.test[0][0].shape == (3, 24, 24)


def test_items_are_deterministic_per_index():
    config = DataConfig(name="synthetic", num_train=30, num_test=30)
    a, b = build_data(config, NO_AUG, None, None), build_data(config, NO_AUG, None, None)
    for i in (0, 5, 29):
        assert torch.equal(a.train[i][0], b.train[i][0]) and a.train[i][1] == b.train[i][1]
        assert torch.equal(a.train[i][0], a.train[i][0])
    assert not torch.equal(a.train[0][0], a.test[0][0])  # the splits draw different noise
    assert not torch.equal(a.train[0][0], a.train[10][0])  # same class, different image


def test_labels_are_learnable():
    data = build_data(DataConfig(name="synthetic", num_train=200, num_test=100), NO_AUG, None, None)
    train = torch.stack([data.train[i][0] for i in range(200)]).flatten(1)
    train_labels = torch.tensor([data.train[i][1] for i in range(200)])
    class_means = torch.stack([train[train_labels == c].mean(0) for c in range(10)])
    test = torch.stack([data.test[i][0] for i in range(100)]).flatten(1)
    test_labels = torch.tensor([data.test[i][1] for i in range(100)])
    accuracy = (torch.cdist(test, class_means).argmin(1) == test_labels).float().mean()
    assert accuracy > 0.9  # nearest class mean: the labels carry signal a model can learn
