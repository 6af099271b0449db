"""The seeded, class-stratified subset every data set uses for data.train_subset / data.test_subset."""

from collections import Counter

from stemsweep.data.build import stratified_subset


def test_keeps_class_shares_and_size():
    labels = [0] * 700 + [1] * 200 + [2] * 100
    chosen = stratified_subset(labels, 101, seed=0)
    assert len(chosen) == len(set(chosen)) == 101 and chosen == sorted(chosen)
    counts = Counter(labels[i] for i in chosen)
    assert counts == {0: 71, 1: 20, 2: 10}  # 70.7, 20.2, 10.1 → the largest remainder gets the extra one


def test_is_seeded():
    labels = [i % 4 for i in range(400)]
    assert stratified_subset(labels, 40, seed=1) == stratified_subset(labels, 40, seed=1)
    assert stratified_subset(labels, 40, seed=1) != stratified_subset(labels, 40, seed=2)
    assert stratified_subset(labels, 400, seed=1) == list(range(400))
