"""Where every public data set of the paper comes from, how it is checked, and where it goes under the data root.

One `Source` per registered data-set name that has files: the URLs of its downloads (`Artifact`s), the checksum
published for each (and who published it), the paths it produces under the data root (the layout the loaders of
`oodbench.data.datasets` read), and the checks that tell an installed set from a damaged one. `oodbench.data.download`
fetches, verifies and installs them; `oodbench data` reports their state.

Checksums are the ones published with the data-set classes of torchvision and pytorch-ood (which check them on
every download); no checksum exists for ODIN's iSUN archive in either, so its md5 is the one of the `detectors`
library (edadaltocg/detectors), and the Places365 file list, which nobody publishes a checksum for, is pinned to
the sha256 of the file in the authors' repository (computed by us). Sets without a public download (ImageNet64
needs a login, 80M TinyImages was withdrawn) carry an `unavailable` message saying how to obtain them or what to
use instead.

A test substitutes its own registry (URLs on 127.0.0.1, checksums of files it made): every function of
`oodbench.data.download` takes `sources=`.
"""

from __future__ import annotations

from dataclasses import dataclass

from oodbench.data.catalog import CIFAR_OOD, PLACES365_LIST, SVHN_OOD

#: the auxiliary pool the registered in-dist sets train with when `--aux` is not given (SPEC section 2; the
#: loaders in oodbench.data.datasets set the same default, a test checks they agree)
DEFAULT_AUX = {"cifar10": "tinyimages", "cifar100": "tinyimages", "svhn": "tinyimages"}
#: the OOD test sets of the registered in-dist sets (SPEC section 2), known before their files are
DEFAULT_OOD = {"cifar10": CIFAR_OOD, "cifar100": CIFAR_OOD, "svhn": SVHN_OOD}


@dataclass(frozen=True)
class Checksum:
    """A digest of a file as published by `published_by` (md5 where that is all the publisher gives)."""

    algorithm: str  # "md5" or "sha256" (hashlib names)
    digest: str
    published_by: str


@dataclass(frozen=True)
class Artifact:
    """One file to fetch and where its content goes.

    kind "tar" (any tar, compressed or not) and "zip" are extracted into `dest` (a folder relative to the data
    root, "" = the root itself); with `keep_listed`, only the archive members whose file names that file (a path
    under the data root written by an earlier artifact) lists, one a line. kind "file" (.mat, .npy, .txt) is
    moved to `dest`, a file path relative to the data root. `content` names the format check run on the
    downloaded bytes before anything is installed ("mat", "npy", "text", or "" for archives, which are checked
    by reading them whole).
    """

    filename: str
    urls: tuple[str, ...]
    checksum: Checksum | None  # None: nobody publishes one; the Source's checks verify the result instead
    kind: str  # "tar" | "zip" | "file"
    dest: str
    produces: tuple[str, ...]  # the Source targets this artifact contributes to (it is skipped when all exist)
    size: int = 0  # approximate bytes, for the messages
    content: str = ""
    keep_listed: str = ""


@dataclass(frozen=True)
class FileDigest:
    """An installed file whose published checksum `oodbench data --verify` recomputes."""

    path: str  # relative to the data root
    checksum: Checksum


@dataclass(frozen=True)
class ImageCount:
    """An installed image folder that must hold exactly `count` images (any depth), or, with `listed`, a file list
    at the folder's root whose `count` names must all be present."""

    path: str
    count: int
    listed: str = ""


@dataclass(frozen=True)
class Source:
    """How one registered data set is obtained and verified."""

    name: str
    home: str  # the data set's page
    targets: tuple[str, ...]  # paths under the data root the loaders read (created atomically, one by one)
    artifacts: tuple[Artifact, ...] = ()
    checks: tuple[FileDigest | ImageCount, ...] = ()
    verification: str = ""  # one line for `oodbench data`: what is checked and against what
    unavailable: str = ""  # non-empty: no public download; how to obtain the set or what to use instead

    @property
    def downloadable(self) -> bool:
        return not self.unavailable and bool(self.artifacts)


def _md5(digest: str, by: str) -> Checksum:
    return Checksum("md5", digest, by)


# --------------------------------------------------------------------------------------------------------------
# published checksums, with where they were found

_TV_CIFAR = "torchvision.datasets.CIFAR10 (tgz_md5, train_list, test_list)"
_TV_CIFAR100 = "torchvision.datasets.CIFAR100 (tgz_md5, train_list, test_list)"
_TV_SVHN = "torchvision.datasets.SVHN.split_list"
_TV_DTD = "torchvision.datasets.DTD._MD5 (also pytorch_ood.dataset.img.Textures.tgz_md5)"
_TV_PLACES = "torchvision.datasets.Places365._IMAGES_META[('test', True)]"
_POOD_ODIN = "pytorch_ood.dataset.img.odin (LSUNCrop / LSUNResize.tgz_md5; edadaltocg/detectors agrees)"
_DETECTORS_ISUN = "edadaltocg/detectors src/detectors/data/isun.py (file_md5); pytorch-ood has no iSUN class"
_POOD_300K = "pytorch_ood.dataset.img.TinyImages300k.md5"
_PLACES_LIST_PIN = (
    "sha256 computed by oodbench of datasets/ood_datasets/places365/test_subset/places365_test_list.txt at "
    "commit 258efed of github jfc43/informative-outlier-mining (the authors publish no checksum)"
)

_PLACES_LIST_SHA256 = Checksum(
    "sha256", "e992c94b23b7416e8f71c0cab87b777b0e7022ee1b4aeed19d5b16ddf1b90578", _PLACES_LIST_PIN
)

_CIFAR10_FILES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_CIFAR100_FILES = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}

# ODIN's archives (github facebookresearch/odin README; the ATOM README links the same): Dropbox serves the file
# itself under /s/raw/ (pytorch-ood's form) or with ?dl=1; the plain share link is an HTML page.
_ODIN_HOME = "https://github.com/facebookresearch/odin"


def _dropbox(key: str, filename: str) -> tuple[str, ...]:
    return (f"https://www.dropbox.com/s/raw/{key}/{filename}", f"https://www.dropbox.com/s/{key}/{filename}?dl=1")


def _odin(name: str, folder: str, key: str, md5: Checksum, count: int, publisher: str) -> Source:
    filename = f"{folder}.tar.gz"
    return Source(
        name,
        _ODIN_HOME,
        targets=(folder,),
        artifacts=(Artifact(filename, _dropbox(key, filename), md5, "tar", "", (folder,)),),
        checks=(ImageCount(folder, count),),
        verification=f"archive md5 (as {publisher} publishes it); {count:,} images after extraction",
    )


SOURCES: dict[str, Source] = {}


def _add(source: Source) -> None:
    SOURCES[source.name] = source


_add(
    Source(
        "cifar10",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        targets=("cifar-10-batches-py",),
        artifacts=(
            Artifact(
                "cifar-10-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                _md5("c58f30108f718f92721af3b95e74349a", _TV_CIFAR),
                "tar",
                "",
                ("cifar-10-batches-py",),
                size=170_498_071,
            ),
        ),
        checks=tuple(FileDigest(f"cifar-10-batches-py/{f}", _md5(d, _TV_CIFAR)) for f, d in _CIFAR10_FILES.items()),
        verification="archive md5 and the md5 of each of the 6 batch files (torchvision)",
    )
)
_add(
    Source(
        "cifar100",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        targets=("cifar-100-python",),
        artifacts=(
            Artifact(
                "cifar-100-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                _md5("eb9058c3a382ffc7106e4002c42a8d85", _TV_CIFAR100),
                "tar",
                "",
                ("cifar-100-python",),
                size=169_001_437,
            ),
        ),
        checks=tuple(FileDigest(f"cifar-100-python/{f}", _md5(d, _TV_CIFAR100)) for f, d in _CIFAR100_FILES.items()),
        verification="archive md5 and the md5 of the train and test files (torchvision)",
    )
)
_SVHN_FILES = {
    "train": ("e26dedcc434d2e4c54c9b2d4a06d8373", 182_040_794),
    "test": ("eb5a983be6a315427106f1b164d9cef3", 64_275_384),
}
_add(
    Source(
        "svhn",
        "http://ufldl.stanford.edu/housenumbers/",
        targets=tuple(f"svhn/{split}_32x32.mat" for split in _SVHN_FILES),
        artifacts=tuple(
            Artifact(
                f"{split}_32x32.mat",
                (f"http://ufldl.stanford.edu/housenumbers/{split}_32x32.mat",),
                _md5(digest, _TV_SVHN),
                "file",
                f"svhn/{split}_32x32.mat",
                (f"svhn/{split}_32x32.mat",),
                size=size,
                content="mat",
            )
            for split, (digest, size) in _SVHN_FILES.items()
        ),
        checks=tuple(
            FileDigest(f"svhn/{split}_32x32.mat", _md5(digest, _TV_SVHN)) for split, (digest, _) in _SVHN_FILES.items()
        ),
        verification="md5 of train_32x32.mat and test_32x32.mat (torchvision)",
    )
)
_add(
    Source(
        "textures",
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
        targets=("dtd",),
        artifacts=(
            Artifact(
                "dtd-r1.0.1.tar.gz",
                ("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",),
                _md5("fff73e5086ae6bdbea199a49dfb8a4c1", _TV_DTD),
                "tar",
                "",
                ("dtd",),
                size=625_239_812,
            ),
        ),
        checks=(ImageCount("dtd/images", 5640),),
        verification="archive md5 (torchvision, pytorch-ood); 5,640 images in dtd/images after extraction",
    )
)
_add(
    _odin(
        "lsun_c", "LSUN", "fhtsw1m3qxlwj6h", _md5("458a0a0ab8e5f1cb4516d7400568e460", _POOD_ODIN), 10000, "pytorch-ood"
    )
)
_add(
    _odin(
        "lsun_r",
        "LSUN_resize",
        "moqh2wh8696c3yl",
        _md5("278b7b31c8cb7e804a1465a8ce03a2dc", _POOD_ODIN),
        10000,
        "pytorch-ood",
    )
)
_add(
    _odin(
        "isun", "iSUN", "ssz7qxfqae0cca5", _md5("be77b0f2c26fda898afac5f99645ee70", _DETECTORS_ISUN), 8925, "detectors"
    )
)
_PLACES_LIST_URL = (
    "https://raw.githubusercontent.com/jfc43/informative-outlier-mining/"
    "258efede70c778bf6e9e528869b2cab58b071e3e/datasets/ood_datasets/places365/test_subset/" + PLACES365_LIST
)
_add(
    Source(
        "places365",
        "http://places2.csail.mit.edu/download.html",
        targets=("places365",),
        artifacts=(
            # the list first: it selects which of the 328,500 test images are kept (the 10,000 the paper uses)
            Artifact(
                PLACES365_LIST,
                (_PLACES_LIST_URL,),
                _PLACES_LIST_SHA256,
                "file",
                f"places365/{PLACES365_LIST}",
                ("places365",),
                size=280_000,
                content="text",
            ),
            Artifact(
                "test_256.tar",
                ("http://data.csail.mit.edu/places/places365/test_256.tar",),
                _md5("f532f6ad7b582262a2ec8009075e186b", _TV_PLACES),
                "tar",
                "places365",
                ("places365",),
                size=4_600_000_000,
                keep_listed=f"places365/{PLACES365_LIST}",
            ),
        ),
        checks=(
            FileDigest(
                f"places365/{PLACES365_LIST}",
                _PLACES_LIST_SHA256,
            ),
            ImageCount("places365", 10000, listed=PLACES365_LIST),
        ),
        verification="test_256.tar md5 (torchvision); the list's sha256 pinned by oodbench (none is published); "
        "all 10,000 listed images present (only those are kept from the 4.6 GB archive)",
    )
)
_add(
    Source(
        "tinyimages300k",
        "https://github.com/hendrycks/outlier-exposure",
        targets=("300K_random_images.npy",),
        artifacts=(
            Artifact(
                "300K_random_images.npy",
                ("https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",),
                _md5("64ca64357de98351f28454274a112dc3", _POOD_300K),
                "file",
                "300K_random_images.npy",
                ("300K_random_images.npy",),
                size=921_600_128,
                content="npy",
            ),
        ),
        checks=(FileDigest("300K_random_images.npy", _md5("64ca64357de98351f28454274a112dc3", _POOD_300K)),),
        verification="md5 of the .npy (pytorch-ood)",
    )
)
_add(
    Source(
        "tinyimages",
        "https://groups.csail.mit.edu/vision/TinyImages/",
        targets=("tinyimages/tiny_images.bin", "tinyimages/80mn_cifar_idxs.txt"),
        verification="no download, so nothing to verify against: the file size must be a multiple of 3,072 bytes",
        unavailable="80M TinyImages was withdrawn by its authors in 2020 and has no download any more. Use the "
        "300K random subset of the Outlier Exposure release instead (`oodbench data --download tinyimages300k`, "
        "then `--aux tinyimages300k`), or ImageNet-RC (`--aux imagenet_rc`, login needed). If you hold a copy, put "
        "it at ROOT/tinyimages/tiny_images.bin with 80mn_cifar_idxs.txt (github hendrycks/outlier-exposure) beside it",
    )
)
_add(
    Source(
        "imagenet_rc",
        "https://image-net.org/download-images",
        targets=("imagenet64/train_data_batch_1", "imagenet64/train_data_batch_10"),
        verification="no public checksum: every batch is read as a pickle when loaded",
        unavailable="Downsampled ImageNet 64x64 needs an image-net.org account (terms of access), so oodbench cannot "
        "fetch it: log in at https://image-net.org/download-images, download Imagenet64_train_part1.zip and "
        "Imagenet64_train_part2.zip and unzip both into ROOT/imagenet64 (train_data_batch_1 .. 10). Without an "
        "account, use `--aux tinyimages300k` (`oodbench data --download tinyimages300k`)",
    )
)


def downloadable_names(sources: dict[str, Source] | None = None) -> list[str]:
    """The names `oodbench data --download` accepts, in registry order."""
    return [name for name, source in (SOURCES if sources is None else sources).items() if source.downloadable]
