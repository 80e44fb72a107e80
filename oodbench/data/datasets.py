"""The registered data sets and where they live under the data root (SPEC section 2).

Data root layout (ROOT = the `root` argument, else `$OODBENCH_DATA`, else `./data`):

    ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch}   CIFAR-10 python pickles        (in-dist; OOD for SVHN)
    ROOT/cifar-100-python/{train, test}                       CIFAR-100 python pickles       (in-dist)
    ROOT/svhn/{train,test}_32x32.mat                          SVHN                           (in-dist; OOD for CIFAR)
    ROOT/dtd/images/<47 classes>/*.jpg                        Textures (DTD)                 (OOD)
    ROOT/places365/**  [+ places365_test_list.txt]            Places365 test subset          (OOD)
    ROOT/LSUN/**, ROOT/LSUN_resize/**, ROOT/iSUN/**           ODIN's LSUN-C, LSUN-R, iSUN    (OOD)
    ROOT/tinyimages/{tiny_images.bin, 80mn_cifar_idxs.txt}    TinyImages 80M                 (auxiliary)
    ROOT/300K_random_images.npy                               TinyImages 300K                (auxiliary)
    ROOT/imagenet64/train_data_batch_{1..10}                  ImageNet64x64 (ImageNet-RC)    (auxiliary)

Registry naming: one `DatasetSpec` per data-set name; a set that plays several roles (`cifar10` and `svhn` are
in-dist sets and OOD test sets) carries one loader per role in `spec.loaders`, so `load_in_distribution("svhn")`
and `load_ood("svhn")` use the same name. Besides the registered names, `folder:PATH` (an image folder: in-dist
when PATH has `train/<class>/` and `test/<class>/`, else an OOD set or an auxiliary pool) and `npy:PATH` (a
(N, S, S, 3) uint8 .npy as an auxiliary pool, or with S = 32 as an OOD set) are accepted; PATH is taken relative
to the working directory, not the data root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from oodbench.data import builtin, shapes
from oodbench.data.base import (
    CIFAR_MEAN,
    CIFAR_STD,
    ArrayPool,
    AuxPool,
    DatasetSpec,
    ImageSet,
    InDistribution,
    channel_stats,
    require,
)
from oodbench.data.catalog import CIFAR_OOD, PLACES365_LIST, SVHN_OOD, default_root  # noqa: F401
from oodbench.data.formats import (
    CIFAR10_FOLDER,
    CIFAR10_LAYOUT,
    CIFAR100_FOLDER,
    CIFAR100_LAYOUT,
    IMAGENET64_LAYOUT,
    NPY_LAYOUT,
    SVHN_LAYOUT,
    TINYIMAGES_LAYOUT,
    TinyImagesPool,
    cifar_files,
    first_per_class,
    imagenet64_pool,
    npy_pool,
    read_cifar,
    read_class_folder,
    read_image_folder,
    read_npy_images,
    read_svhn,
)
from oodbench.errors import DataError
from oodbench.registry import register_dataset

SVHN_TEST_PER_CLASS = 1000

_FOLDER_RULE = "Resize(32) on the shorter side + CenterCrop(32), RGB"
_DOWNLOAD = "`oodbench data --download NAME` or `oodbench run --download` fetch and verify it (download=True in Python)"


def _register(spec: DatasetSpec, summary: str) -> DatasetSpec:
    register_dataset(spec.name, summary=summary)(spec)
    return spec


# downloads when a loader is asked to fetch a missing set (`download=True`; oodbench.data.download)
def download_cifar(root: Path, classes: int) -> None:
    """Download, verify (md5 of the archive and of every batch file) and install the CIFAR folder into `root`
    (oodbench.data.download)."""
    from oodbench.data.download import download

    download([f"cifar{classes}"], root, show=False, log=lambda message: None)


def download_svhn(folder: Path, split: str) -> None:
    """Download and verify (md5) the missing SVHN files into `folder` (= ROOT/svhn; oodbench.data.download)."""
    from oodbench.data.download import download

    download(["svhn"], folder.parent, show=False, log=lambda message: None)


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def _cifar_folder(root: Path, classes: int, splits: tuple[str, ...], download: bool) -> Path:
    folder = root / (CIFAR10_FOLDER if classes == 10 else CIFAR100_FOLDER)
    files = [f for s in splits for f in cifar_files(folder, classes, s)]
    if download and not all(f.exists() for f in files):
        download_cifar(root, classes)
    layout = CIFAR10_LAYOUT if classes == 10 else CIFAR100_LAYOUT
    for f in files:  # every file before the first decode
        require(f, f"CIFAR-{classes}", layout + f"\nObtain: {_DOWNLOAD}")
    return folder


def _load_cifar_in(root: Path, num_classes: int, download: bool) -> InDistribution:
    folder = _cifar_folder(root, num_classes, ("train", "test"), download)
    return InDistribution(
        name=f"cifar{num_classes}",
        train=read_cifar(folder, num_classes, "train"),
        test=read_cifar(folder, num_classes, "test"),
        num_classes=num_classes,
        normalization=(CIFAR_MEAN, CIFAR_STD),
        augment=True,
        default_ood=CIFAR_OOD,
        default_aux="tinyimages",
        schedule="cifar",
    )


def load_cifar10(root: Path, download: bool = False) -> InDistribution:
    """CIFAR-10 in-dist: 50,000 / 10,000, CIFAR normalisation, RandomCrop + flip, OOD sets SVHN, Textures,
    Places365, LSUN-C, LSUN-R, iSUN, TinyImages, q 0.125, ROWL 5,000 outliers, SOFL R = 5 (SPEC sections 2-5)."""
    return _load_cifar_in(root, 10, download)


def load_cifar10_ood(root: Path, download: bool = False) -> ImageSet:
    """CIFAR-10's 10,000 test images as an OOD set (for SVHN in-dist, SPEC section 2)."""
    folder = _cifar_folder(root, 10, ("test",), download)
    return ImageSet(read_cifar(folder, 10, "test").images, None, "cifar10", str(folder))


def load_cifar100(root: Path, download: bool = False) -> InDistribution:
    """CIFAR-100 in-dist (fine labels): as CIFAR-10 but K = 100, q 0.5, ROWL 500 outliers, SOFL R = 10."""
    return _load_cifar_in(root, 100, download)


_register(
    DatasetSpec(
        "cifar10",
        "in",
        load_cifar10,
        CIFAR10_LAYOUT,
        obtain="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        loaders={"in": load_cifar10, "ood": load_cifar10_ood},
        paths={"in": (CIFAR10_FOLDER,), "ood": (f"{CIFAR10_FOLDER}/test_batch",)},
        sizes={"in": 60000, "ood": 10000},
    ),
    "CIFAR-10 (in-dist 50k/10k; its test set is an OOD set for SVHN)",
)
_register(
    DatasetSpec(
        "cifar100",
        "in",
        load_cifar100,
        CIFAR100_LAYOUT,
        obtain="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        paths={"in": (CIFAR100_FOLDER,)},
        sizes={"in": 60000},
    ),
    "CIFAR-100 (in-dist 50k/10k, fine labels)",
)


# --------------------------------------------------------------------------------------------------------------
# SVHN


def _svhn_file(root: Path, split: str, download: bool) -> Path:
    path = root / "svhn" / f"{split}_32x32.mat"
    if download and not path.exists():
        download_svhn(path.parent, split)
    return require(path, "SVHN", SVHN_LAYOUT + f"\nObtain: {_DOWNLOAD}")


def _svhn_test(path: Path, name: str) -> ImageSet:
    """The first 1,000 test images of every class in file order (SPEC section 2, the released code)."""
    test = read_svhn(path)
    return test.subset(first_per_class(test.labels.numpy(), SVHN_TEST_PER_CLASS), name=name)


def load_svhn(root: Path, download: bool = False) -> InDistribution:
    """SVHN in-dist: train_32x32.mat (73,257) / the 10,000-image class-balanced test subset; no normalisation, no
    augmentation, OOD sets CIFAR-10, Textures, Places365, LSUN-C, LSUN-R, iSUN, q 0, 20-epoch schedule,
    ROWL 7,325 outliers (SPEC sections 2-5)."""
    train_path, test_path = _svhn_file(root, "train", download), _svhn_file(root, "test", download)
    train = read_svhn(train_path, name="svhn-train")
    return InDistribution(
        name="svhn",
        train=train,
        test=_svhn_test(test_path, "svhn-test"),
        num_classes=10,
        normalization=None,
        augment=False,
        default_ood=SVHN_OOD,
        default_aux="tinyimages",
        schedule="svhn",
    )


def load_svhn_ood(root: Path, download: bool = False) -> ImageSet:
    """SVHN as an OOD set: the same 10,000-image class-balanced test subset (SPEC section 2)."""
    test = _svhn_test(_svhn_file(root, "test", download), "svhn")
    return ImageSet(test.images, None, "svhn", test.source)


_register(
    DatasetSpec(
        "svhn",
        "in",
        load_svhn,
        SVHN_LAYOUT,
        obtain="http://ufldl.stanford.edu/housenumbers/ (train_32x32.mat, test_32x32.mat)",
        loaders={"in": load_svhn, "ood": load_svhn_ood},
        paths={"in": ("svhn/train_32x32.mat", "svhn/test_32x32.mat"), "ood": ("svhn/test_32x32.mat",)},
        sizes={"in": 83257, "ood": 10000},
    ),
    "SVHN (in-dist 73,257 / first 1,000 per class of the test file; that test subset is an OOD set for CIFAR)",
)


# --------------------------------------------------------------------------------------------------------------
# OOD image folders


def _folder_ood(name: str, rel: str, layout: str, obtain: str, size: int, summary: str, file_list: str = "") -> None:
    def load(root: Path, download: bool = False) -> ImageSet:
        if download and not (root / rel).exists():
            from oodbench.data.download import download as fetch_sets

            fetch_sets([name], root, show=False, log=lambda message: None)
        folder = require(root / rel, name, layout + f"\nObtain: {obtain}")
        listed = folder / file_list if file_list and (folder / file_list).is_file() else None
        return read_image_folder(folder, layout, what=name, file_list=listed)

    load.__doc__ = f"{summary} from ROOT/{rel} ({_FOLDER_RULE})."
    load.__name__ = f"load_{name}"
    _register(
        DatasetSpec(name, "ood", load, layout, obtain=obtain, paths={"ood": (rel,)}, sizes={"ood": size}), summary
    )


_ODIN = "ODIN's released tarballs (github facebookresearch/odin: LSUN.tar.gz, LSUN_resize.tar.gz, iSUN.tar.gz)"
_folder_ood(
    "textures",
    "dtd/images",
    f"ROOT/dtd/images/<47 classes>/*.jpg (5,640 images; {_FOLDER_RULE})",
    "https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz, extracted into ROOT)",
    5640,
    "Textures (DTD), OOD",
)
_folder_ood(
    "places365",
    "places365",
    f"ROOT/places365/ = the released test_subset folder (images at any depth) with {PLACES365_LIST} at its root "
    f"naming the 10,000 images used (`name` or `name label` a line); without the list, every image ({_FOLDER_RULE})",
    "the Places365 test subset of the ATOM / Outlier Exposure releases (places365_test_list.txt: "
    "github jfc43/informative-outlier-mining datasets/ood_datasets/places365/test_subset), images from "
    "http://places2.csail.mit.edu/ (test_256)",
    10000,
    "Places365 (10,000 listed test images), OOD",
    file_list=PLACES365_LIST,
)
_folder_ood("lsun_c", "LSUN", f"ROOT/LSUN/** (10,000 36x36 crops; {_FOLDER_RULE})", _ODIN, 10000, "LSUN-C, OOD")
_folder_ood(
    "lsun_r", "LSUN_resize", f"ROOT/LSUN_resize/** (10,000 images; {_FOLDER_RULE})", _ODIN, 10000, "LSUN-R, OOD"
)
_folder_ood("isun", "iSUN", f"ROOT/iSUN/** (8,925 images; {_FOLDER_RULE})", _ODIN, 8925, "iSUN, OOD")


# --------------------------------------------------------------------------------------------------------------
# auxiliary pools


def load_tinyimages(root: Path) -> TinyImagesPool:
    """TinyImages 80M (79,302,017 images; indices >= 10,000 minus CIFAR duplicates; SPEC section 2)."""
    return TinyImagesPool(root / "tinyimages" / "tiny_images.bin", root / "tinyimages" / "80mn_cifar_idxs.txt")


def load_tinyimages300k(root: Path) -> ArrayPool:
    """The 300K random TinyImages of the Outlier Exposure release, memory-mapped."""
    layout = "ROOT/300K_random_images.npy: uint8 (300000, 32, 32, 3) HWC"
    return ArrayPool(
        read_npy_images(root / "300K_random_images.npy", "TinyImages 300K", layout, size=32),
        "tinyimages300k",
        str(root / "300K_random_images.npy"),
    )


def load_imagenet_rc(root: Path) -> AuxPool:
    """ImageNet64x64 train batches as a 64x64 pool (ImageNet-RC, Table 8)."""
    return imagenet64_pool(root / "imagenet64", "imagenet_rc")


_register(
    DatasetSpec(
        "tinyimages",
        "aux",
        load_tinyimages,
        TINYIMAGES_LAYOUT,
        obtain="withdrawn by its publisher in 2020 (no download exists); use tinyimages300k or imagenet_rc. "
        "80mn_cifar_idxs.txt comes with the Outlier Exposure code (github hendrycks/outlier-exposure)",
        paths={"aux": ("tinyimages/tiny_images.bin", "tinyimages/80mn_cifar_idxs.txt")},
        sizes={"aux": 79302017},
    ),
    "TinyImages 80M, auxiliary (indices >= 10,000, CIFAR duplicates excluded; 0..9,999 for validation)",
)
_register(
    DatasetSpec(
        "tinyimages300k",
        "aux",
        load_tinyimages300k,
        "ROOT/300K_random_images.npy: uint8 (300000, 32, 32, 3) HWC",
        obtain="300K_random_images.npy of the Outlier Exposure release "
        "(https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy)",
        paths={"aux": ("300K_random_images.npy",)},
        sizes={"aux": 300000},
    ),
    "TinyImages 300K random subset, auxiliary",
)
_register(
    DatasetSpec(
        "imagenet_rc",
        "aux",
        load_imagenet_rc,
        IMAGENET64_LAYOUT,
        obtain="Downsampled ImageNet 64x64 (Imagenet64_train part 1 and 2) from https://image-net.org/download-images "
        "(login required), extracted into ROOT/imagenet64",
        paths={"aux": ("imagenet64/train_data_batch_1", "imagenet64/train_data_batch_10")},
        sizes={"aux": 1281167},
    ),
    "ImageNet-RC: ImageNet64x64 train set, 64x64 images cropped to 32 during training, auxiliary",
)


# --------------------------------------------------------------------------------------------------------------
# built-in benchmark

_BUILTIN = "built into the dependencies (scikit-learn, scikit-image, imagecorruptions, matplotlib): nothing to obtain"
_register(
    DatasetSpec(
        "digits",
        "in",
        builtin.load_digits_in,
        "(built-in) scikit-learn's load_digits(): 1,797 8x8 digits upsampled to 32x32 RGB, 1,297 train / 500 test",
        obtain=_BUILTIN,
        builtin=True,
        sizes={"in": 1797},
    ),
    "built-in digits (in-dist, 10 classes, 1,297 / 500)",
)
for _name, _loader, _text in (
    ("tiles", builtin.load_tiles, "texture tiles (brick, grass, gravel, frost)"),
    ("scenes_crop", builtin.load_scenes_crop, "32x32 crops of downscaled photos (LSUN-C-like)"),
    ("scenes_resize", builtin.load_scenes_resize, "photo crops resized to 32x32 (LSUN-R-like)"),
):
    _register(
        DatasetSpec(
            _name, "ood", _loader, f"(built-in) {_text}", obtain=_BUILTIN, builtin=True, sizes={"ood": builtin.OOD_SIZE}
        ),
        f"built-in OOD set: {_text}",
    )
_register(
    DatasetSpec(
        "photos",
        "aux",
        builtin.load_photos,
        "(built-in) 5,000 random crops of photos disjoint from the built-in OOD photos",
        obtain=_BUILTIN,
        builtin=True,
        sizes={"aux": builtin.PHOTOS_SIZE},
    ),
    "built-in auxiliary pool: 5,000 photo crops",
)


_register(
    DatasetSpec(
        "shapes",
        "in",
        shapes.load_shapes_in,
        "(built-in) 10 classes of coloured objects on photo crops, 32x32 RGB, 1,300 train / 500 test",
        obtain=_BUILTIN,
        builtin=True,
        sizes={"in": 1800},
    ),
    "built-in shapes (default in-dist, 10 classes, 1,300 / 500)",
)
_register(
    DatasetSpec(
        "photo_digits",
        "ood",
        shapes.load_photo_digits,
        "(built-in) handwritten digits on the shapes' photo backgrounds (SVHN-like near OOD)",
        obtain=_BUILTIN,
        builtin=True,
        sizes={"ood": shapes.PHOTO_DIGITS_SIZE},
    ),
    "built-in OOD set: handwritten digits on photo backgrounds",
)
_register(
    DatasetSpec(
        "shape_aux",
        "aux",
        shapes.load_shape_aux,
        "(built-in) 5,000 photo crops disjoint from the shapes' and every built-in OOD set's pixels",
        obtain=_BUILTIN,
        builtin=True,
        sizes={"aux": shapes.SHAPE_AUX_SIZE},
    ),
    "built-in auxiliary pool for shapes: 5,000 photo crops",
)


# --------------------------------------------------------------------------------------------------------------
# generic `folder:PATH` and `npy:PATH`

FOLDER_IN_LAYOUT = "PATH/train/<class>/*.{jpg,png,...} and PATH/test/<class>/*.{jpg,png,...} (same classes)"
FOLDER_LAYOUT = "PATH/**/*.{jpg,jpeg,png,bmp,gif,tif,webp} (any depth; " + _FOLDER_RULE + ")"


def split_generic(name: str) -> tuple[str, Path] | None:
    """('folder' | 'npy', PATH) for `folder:PATH`, `npy:PATH` or a bare path ending in .npy; else None."""
    for kind in ("folder", "npy"):
        if name.startswith(kind + ":"):
            return kind, Path(name[len(kind) + 1 :]).expanduser()
    if name.lower().endswith(".npy"):
        return "npy", Path(name).expanduser()
    return None


def load_folder_in(name: str, path: Path) -> InDistribution:
    """An ImageFolder in-dist set: PATH/train/<class>/, PATH/test/<class>/ (classes sorted; Resize(32) +
    CenterCrop(32)); normalisation = the train set's per-channel mean / std; protocol defaults as the built-in
    digits set (built-in OOD sets and aux pool, q 0.125, CIFAR schedule, ROWL outliers = train size / 10)."""
    for split in ("train", "test"):
        require(path / split, name, FOLDER_IN_LAYOUT)
    train, classes = read_class_folder(path / "train", FOLDER_IN_LAYOUT, f"{name} train")
    test, test_classes = read_class_folder(path / "test", FOLDER_IN_LAYOUT, f"{name} test")
    if test_classes != classes:
        raise DataError(
            f"{name}: train classes {classes} differ from test classes {test_classes}. "
            f"Expected layout:\n{FOLDER_IN_LAYOUT}"
        )
    mean, std = channel_stats(train.images)
    std = tuple(max(v, 1e-3) for v in std)  # a constant channel must not divide by zero
    return InDistribution(
        name=name,
        train=train,
        test=test,
        num_classes=len(classes),
        normalization=(mean, std),
        augment=True,
        default_ood=(),  # a user's set: the OOD sets are the user's choice (--ood), never the built-in toy sets
        default_aux=None,
        schedule="cifar",
    )


def load_generic_ood(name: str, kind: str, path: Path) -> ImageSet:
    """`folder:PATH` (every image under PATH, Resize(32) + CenterCrop(32)) or `npy:PATH` ((N, 32, 32, 3) uint8)."""
    if kind == "folder":
        return read_image_folder(path, FOLDER_LAYOUT, what=name)
    array = read_npy_images(path, name, NPY_LAYOUT.replace("(N, S, S, 3)", "(N, 32, 32, 3)"), size=32)
    images = torch.from_numpy(np.ascontiguousarray(np.asarray(array).transpose(0, 3, 1, 2)))
    return ImageSet(images, None, name, str(path))


def load_generic_aux(name: str, kind: str, path: Path) -> AuxPool:
    """`folder:PATH` (decoded to 32x32, in memory) or `npy:PATH` (memory-mapped (N, S, S, 3) uint8)."""
    if kind == "folder":
        images = read_image_folder(path, FOLDER_LAYOUT, what=name).images
        return ArrayPool(np.ascontiguousarray(images.numpy().transpose(0, 2, 3, 1)), name, str(path))
    return npy_pool(path, name)
