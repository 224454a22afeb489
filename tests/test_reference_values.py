"""Tables checked against values published outside ddlnl, written here as published (by class
name), not copied from ddlnl's own tables.

- CIFAR-100 superclasses: the table of https://www.cs.toronto.edu/~kriz/cifar.html (Krizhevsky
  2009), names as printed there (plurals, "computer keyboard", "maple", ...), and the integer
  fine -> coarse list circulated with the noisy-label literature (e.g. ``sparse2coarse``).
- CIFAR-10 asymmetric noise: Patrini et al. 2017 (truck -> automobile, bird -> airplane,
  deer -> horse, cat <-> dog); the study's code (Kciiiman/DD_LNL ``dataSolu/utils_noise.py``)
  writes it as sources [9, 2, 3, 5, 4] -> targets [1, 0, 5, 3, 7].
- Fashion-MNIST asymmetric noise: Zhang & Sabuncu 2018 (GCE), Sec. 4: boot -> sneaker,
  sneaker -> sandals, pullover -> shirt, coat <-> dress.
- MNIST asymmetric noise: Patrini et al. 2017: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1.
- Symmetric noise: the study's ``noisify_multiclass_symmetric`` (diagonal 1 - r, else r / (K - 1)).
"""

import numpy as np
import pytest

from ddlnl.data import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR100_FINE_TO_COARSE
from ddlnl.noise import asymmetric_map, asymmetric_matrix, symmetric_matrix

# Krizhevsky's table, verbatim apart from punctuation: superclass -> its five classes.
PUBLISHED_SUPERCLASSES = [
    ("aquatic mammals", "beaver, dolphin, otter, seal, whale"),
    ("fish", "aquarium fish, flatfish, ray, shark, trout"),
    ("flowers", "orchids, poppies, roses, sunflowers, tulips"),
    ("food containers", "bottles, bowls, cans, cups, plates"),
    ("fruit and vegetables", "apples, mushrooms, oranges, pears, sweet peppers"),
    ("household electrical devices", "clock, computer keyboard, lamp, telephone, television"),
    ("household furniture", "bed, chair, couch, table, wardrobe"),
    ("insects", "bee, beetle, butterfly, caterpillar, cockroach"),
    ("large carnivores", "bear, leopard, lion, tiger, wolf"),
    ("large man-made outdoor things", "bridge, castle, house, road, skyscraper"),
    ("large natural outdoor scenes", "cloud, forest, mountain, plain, sea"),
    ("large omnivores and herbivores", "camel, cattle, chimpanzee, elephant, kangaroo"),
    ("medium-sized mammals", "fox, porcupine, possum, raccoon, skunk"),
    ("non-insect invertebrates", "crab, lobster, snail, spider, worm"),
    ("people", "baby, boy, girl, man, woman"),
    ("reptiles", "crocodile, dinosaur, lizard, snake, turtle"),
    ("small mammals", "hamster, mouse, rabbit, shrew, squirrel"),
    ("trees", "maple, oak, palm, pine, willow"),
    ("vehicles 1", "bicycle, bus, motorcycle, pickup truck, train"),
    ("vehicles 2", "lawn-mower, rocket, streetcar, tank, tractor"),
]
# The printed names that differ from the label names stored in the dataset's meta file.
PRINTED_TO_LABEL = {
    "orchids": "orchid", "poppies": "poppy", "roses": "rose", "sunflowers": "sunflower", "tulips": "tulip",
    "bottles": "bottle", "bowls": "bowl", "cans": "can", "cups": "cup", "plates": "plate",
    "apples": "apple", "mushrooms": "mushroom", "oranges": "orange", "pears": "pear",
    "sweet peppers": "sweet_pepper", "computer keyboard": "keyboard", "aquarium fish": "aquarium_fish",
    "maple": "maple_tree", "oak": "oak_tree", "palm": "palm_tree", "pine": "pine_tree", "willow": "willow_tree",
    "pickup truck": "pickup_truck", "lawn-mower": "lawn_mower", "medium-sized mammals": "medium_mammals",
}
# coarse_label_names of the official meta file (alphabetical).
COARSE_LABEL_NAMES = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals "
    "trees vehicles_1 vehicles_2").split()
# The integer list (fine label -> coarse label) as circulated (sparse2coarse).
SPARSE2COARSE = [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
                 6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
                 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
                 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
                 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13]


def _label(printed: str) -> str:
    return PRINTED_TO_LABEL.get(printed, printed.replace(" ", "_"))


def _published_members() -> dict[str, list[str]]:
    return {_label(sup): [_label(m.strip()) for m in members.split(",")] for sup, members in PUBLISHED_SUPERCLASSES}


def test_cifar100_superclasses_are_krizhevskys():
    members = _published_members()
    assert list(members) == COARSE_LABEL_NAMES == list(CIFAR100_COARSE_CLASSES)
    assert sorted(m for group in members.values() for m in group) == sorted(CIFAR100_FINE_CLASSES)
    for fine, name in enumerate(CIFAR100_FINE_CLASSES):
        coarse = CIFAR100_FINE_TO_COARSE[fine]
        assert name in members[COARSE_LABEL_NAMES[coarse]], (name, COARSE_LABEL_NAMES[coarse])
    assert list(CIFAR100_FINE_TO_COARSE) == SPARSE2COARSE


def test_cifar100_asymmetric_noise_flips_to_the_next_class_of_the_same_superclass():
    members = _published_members()
    expected = {}
    for group in members.values():
        ids = sorted(CIFAR100_FINE_CLASSES.index(m) for m in group)
        for pos, fine in enumerate(ids):
            expected[fine] = ids[(pos + 1) % len(ids)]
    assert asymmetric_map("cifar100", 100) == expected
    t = asymmetric_matrix("cifar100", 100, 0.3)
    assert t[CIFAR100_FINE_CLASSES.index("mouse"), CIFAR100_FINE_CLASSES.index("rabbit")] == pytest.approx(0.3)
    assert t[CIFAR100_FINE_CLASSES.index("squirrel"), CIFAR100_FINE_CLASSES.index("hamster")] == pytest.approx(0.3)


CIFAR10 = "airplane automobile bird cat deer dog frog horse ship truck".split()  # batches.meta order
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]  # Fashion-MNIST README order


def _matrix_from_names(classes, flips, rate):
    t = np.eye(len(classes))
    for src, dst in flips:
        i, j = classes.index(src), classes.index(dst)
        t[i, i], t[i, j] = 1 - rate, rate
    return t


@pytest.mark.parametrize("name,classes,flips", [
    ("cifar10", CIFAR10, [("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"),
                          ("dog", "cat")]),
    ("fashion-mnist", FASHION, [("Ankle boot", "Sneaker"), ("Sneaker", "Sandal"), ("Pullover", "Shirt"),
                                ("Coat", "Dress"), ("Dress", "Coat")]),
    ("mnist", [str(d) for d in range(10)], [("2", "7"), ("3", "8"), ("5", "6"), ("6", "5"), ("7", "1")]),
])
def test_published_asymmetric_maps(name, classes, flips):
    np.testing.assert_allclose(asymmetric_matrix(name, 10, 0.4), _matrix_from_names(classes, flips, 0.4))


def test_cifar10_map_is_the_studys_source_target_lists():
    study = dict(zip([9, 2, 3, 5, 4], [1, 0, 5, 3, 7]))
    assert asymmetric_map("cifar10", 10) == study


def test_symmetric_matrix_is_the_studys():
    rate, k = 0.4, 10
    study = np.full((k, k), rate / (k - 1))
    np.fill_diagonal(study, 1 - rate)
    np.testing.assert_allclose(symmetric_matrix(k, rate), study)
    assert symmetric_matrix(4, 0.3)[0].tolist() == pytest.approx([0.7, 0.1, 0.1, 0.1])
