"""`oodbench data --download` against a local HTTP server (127.0.0.1 only, started here, bounded, stops by itself).

The server serves small files made by the test in each real format (tar.gz, uncompressed tar, zip, .mat, .npy,
a text list); the registry of sources is the real one with URLs and checksums substituted. Covered: success and
the loaders reading the result, a second call that downloads nothing, resume after a cut connection (within a call
and across calls), a wrong checksum, an HTML page instead of the file, a truncated archive, the data states, and
`oodbench run --download` failing before any compute for a set without a download.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import tarfile
import threading
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from oodbench import data
from oodbench.cli import main
from oodbench.data import download as dl
from oodbench.data.sources import (
    DEFAULT_AUX,
    DEFAULT_OOD,
    SOURCES,
    Artifact,
    Checksum,
    FileDigest,
    ImageCount,
    Source,
)
from oodbench.errors import DataError, UnknownNameError
from oodbench.registry import DATASETS

MAX_REQUESTS = 60  # the server answers at most this many requests ...
LIFETIME_S = 300.0  # ... and shuts itself down after this long, whatever the test does (a slow, loaded CI too)


# --------------------------------------------------------------------------------------------------------------
# the local server


class LocalServer:
    """A loopback HTTP server with Range support; `cut` paths send half their body once and hang up, `html` paths
    answer with a web page, `plain_html` paths with a web page typed application/octet-stream."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut: set[str] = set()
        self.html: set[str] = set()
        self.plain_html: set[str] = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest's output clean
                pass

            def do_GET(self) -> None:
                path = urllib.parse.urlparse(self.path).path
                server.requests.append((path, self.headers.get("Range")))
                if len(server.requests) > MAX_REQUESTS:
                    self.send_error(503, "request budget of the test server spent")
                    return
                if path in server.html or path in server.plain_html:
                    page = b"<!DOCTYPE html><html><body>Sign in to download this file</body></html>"
                    self.send_response(200)
                    kind = "text/html; charset=utf-8" if path in server.html else "application/octet-stream"
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                ranged = self.headers.get("Range")
                if ranged and ranged.startswith("bytes=") and ranged.endswith("-"):
                    start = int(ranged[len("bytes=") : -1])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if path in server.cut:  # half the body, then the connection drops
                    server.cut.discard(path)
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(LIFETIME_S, self.httpd.shutdown)
        self.timer.daemon = True

    def serve(self, name: str, body: bytes) -> str:
        self.files["/" + name] = body
        return self.base + "/" + name

    def start(self) -> None:
        self.thread.start()
        self.timer.start()

    def stop(self) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    real_urlopen = urllib.request.urlopen

    def loopback_only(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        if urllib.parse.urlparse(url).hostname != "127.0.0.1":
            pytest.fail(f"a test tried to reach {url}: tests talk to 127.0.0.1 only")
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(dl.urllib.request, "urlopen", loopback_only)
    local = LocalServer()
    local.start()
    yield local
    local.stop()


# --------------------------------------------------------------------------------------------------------------
# small files in the real formats


def _jpeg(seed: int, size: int = 36) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def _tar(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return out.getvalue()


def _mat(labels: list[int], seed: int) -> bytes:
    out = io.BytesIO()
    x = np.random.default_rng(seed).integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
    scipy.io.savemat(out, {"X": x, "y": np.array(labels, dtype=np.uint8).reshape(-1, 1)})
    return out.getvalue()


def _npy(count: int) -> bytes:
    out = io.BytesIO()
    np.save(out, np.random.default_rng(3).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8))
    return out.getvalue()


def _md5(body: bytes) -> Checksum:
    return Checksum("md5", hashlib.md5(body).hexdigest(), "the test")


def _archive(server: LocalServer, name: str, body: bytes, kind: str, produces: str, **kw) -> Artifact:
    return Artifact(
        name, (server.serve(name, body),), kw.pop("checksum", _md5(body)), kind, kw.pop("dest", ""), (produces,), **kw
    )


LSUN_IMAGES = 4
PLACES_LISTED = 3


def _sources(server: LocalServer) -> dict[str, Source]:
    """Test stand-ins for the real sources: the same names, targets and kinds, small files on the server."""
    lsun = _tar({f"LSUN/test/{i:04d}.jpg": _jpeg(i) for i in range(LSUN_IMAGES)})
    dtd = _zip({f"dtd/images/{c}/{c}_{i}.jpg": _jpeg(10 + i) for c in ("banded", "dotted") for i in range(2)})
    svhn = {split: _mat(labels, seed) for split, labels, seed in (("train", [1, 10, 3], 1), ("test", [10, 2, 2], 2))}
    npy = _npy(6)
    names = [f"Places365_test_{i:08d}.jpg" for i in range(1, 6)]
    listed = "".join(n + "\n" for n in names[:PLACES_LISTED]).encode()
    places = _tar({f"test_256/{n}": _jpeg(20 + i) for i, n in enumerate(names)}, mode="w")  # a plain .tar
    list_rel = "places365/places365_test_list.txt"
    return {
        "lsun_c": Source(
            "lsun_c",
            "test",
            ("LSUN",),
            (_archive(server, "LSUN.tar.gz", lsun, "tar", "LSUN"),),
            (ImageCount("LSUN", LSUN_IMAGES),),
            "archive md5; image count",
        ),
        "textures": Source(
            "textures",
            "test",
            ("dtd",),
            (_archive(server, "dtd.zip", dtd, "zip", "dtd"),),
            (ImageCount("dtd/images", 4),),
            "archive md5; image count",
        ),
        "svhn": Source(
            "svhn",
            "test",
            ("svhn/train_32x32.mat", "svhn/test_32x32.mat"),
            tuple(
                _archive(
                    server,
                    f"{s}_32x32.mat",
                    b,
                    "file",
                    f"svhn/{s}_32x32.mat",
                    dest=f"svhn/{s}_32x32.mat",
                    content="mat",
                )
                for s, b in svhn.items()
            ),
            tuple(FileDigest(f"svhn/{s}_32x32.mat", _md5(b)) for s, b in svhn.items()),
            "md5 of each file",
        ),
        "tinyimages300k": Source(
            "tinyimages300k",
            "test",
            ("300K_random_images.npy",),
            (
                _archive(
                    server,
                    "300K_random_images.npy",
                    npy,
                    "file",
                    "300K_random_images.npy",
                    dest="300K_random_images.npy",
                    content="npy",
                ),
            ),
            (FileDigest("300K_random_images.npy", _md5(npy)),),
            "md5",
        ),
        "places365": Source(
            "places365",
            "test",
            ("places365",),
            (
                _archive(server, "places365_test_list.txt", listed, "file", "places365", dest=list_rel, content="text"),
                _archive(server, "test_256.tar", places, "tar", "places365", dest="places365", keep_listed=list_rel),
            ),
            (
                FileDigest(list_rel, _md5(listed)),
                ImageCount("places365", PLACES_LISTED, listed="places365_test_list.txt"),
            ),
            "archive md5; listed images",
        ),
        "tinyimages": SOURCES["tinyimages"],
    }


def _fetch(names, root, sources, **kw):
    return dl.download(names, root, sources, timeout=5.0, show=False, log=lambda m: None, **kw)


# --------------------------------------------------------------------------------------------------------------
# success, the loaders read the result, and a second call downloads nothing


def test_every_format_installs_where_the_loaders_read_it_and_a_second_call_downloads_nothing(
    server, tmp_path, monkeypatch
):
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "cache"))
    sources = _sources(server)
    names = ["lsun_c", "textures", "svhn", "tinyimages300k", "places365"]
    assert _fetch(names, tmp_path, sources) == names
    assert len(data.load_ood("lsun_c", tmp_path)) == LSUN_IMAGES
    assert len(data.load_ood("textures", tmp_path)) == 4
    assert data.load_in_distribution("svhn", tmp_path).train.labels.tolist() == [1, 0, 3]
    assert len(data.load_aux("tinyimages300k", tmp_path)) == 6
    # only the listed images are kept from the Places365 archive, beside their list
    kept = sorted(p.name for p in (tmp_path / "places365").rglob("*.jpg"))
    assert kept == [f"Places365_test_{i:08d}.jpg" for i in range(1, PLACES_LISTED + 1)]
    assert len(data.load_ood("places365", tmp_path)) == PLACES_LISTED
    assert not (tmp_path / dl.DOWNLOADS).exists()  # archives deleted, staging removed
    for folder in ("LSUN", "dtd/images", "places365"):  # where --verify looks for them
        assert (tmp_path / folder / dl.MANIFEST).is_file(), folder

    before = len(server.requests)
    assert _fetch(names, tmp_path, sources) == []
    assert len(server.requests) == before
    states = {(r["name"], r["role"]): r["state"] for r in dl.data_status(tmp_path, sources=sources)}
    assert all(states[(n, role)] == "present" for n in names for role in DATASETS.get(n).roles), states


def test_only_the_missing_files_of_a_set_are_fetched(server, tmp_path):
    sources = _sources(server)
    _fetch(["svhn"], tmp_path, sources)
    (tmp_path / "svhn" / "train_32x32.mat").unlink()
    server.requests.clear()
    assert _fetch(["svhn"], tmp_path, sources) == ["svhn"]
    assert [path for path, _ in server.requests] == ["/train_32x32.mat"]


# --------------------------------------------------------------------------------------------------------------
# interrupted downloads


def test_a_cut_connection_is_resumed_with_a_range_request_in_the_same_call(server, tmp_path):
    sources = _sources(server)
    server.cut.add("/300K_random_images.npy")
    _fetch(["tinyimages300k"], tmp_path, sources)
    body = server.files["/300K_random_images.npy"]
    assert server.requests == [
        ("/300K_random_images.npy", None),
        ("/300K_random_images.npy", f"bytes={len(body) // 2}-"),
    ]
    assert (tmp_path / "300K_random_images.npy").read_bytes() == body


def test_an_interrupted_download_keeps_its_part_and_the_next_call_resumes_it(server, tmp_path):
    sources = _sources(server)
    server.cut.add("/LSUN.tar.gz")
    with pytest.raises(DataError, match="interrupted.*rerun the same command to resume") as err:
        _fetch(["lsun_c"], tmp_path, sources, retries=0)
    part = tmp_path / dl.DOWNLOADS / "LSUN.tar.gz.part"
    body = server.files["/LSUN.tar.gz"]
    assert str(part) in str(err.value) and part.stat().st_size == len(body) // 2
    assert not (tmp_path / "LSUN").exists()

    assert _fetch(["lsun_c"], tmp_path, sources) == ["lsun_c"]
    assert server.requests[-1] == ("/LSUN.tar.gz", f"bytes={len(body) // 2}-")
    assert len(list((tmp_path / "LSUN").rglob("*.jpg"))) == LSUN_IMAGES
    assert not (tmp_path / dl.DOWNLOADS).exists()


# --------------------------------------------------------------------------------------------------------------
# bad downloads: nothing is installed


def _nothing_installed(root: Path, target: str) -> None:
    assert not (root / target).exists()
    staging = list((root / dl.DOWNLOADS).glob("staging-*")) if (root / dl.DOWNLOADS).exists() else []
    assert staging == []


def test_a_wrong_checksum_removes_the_file_and_installs_nothing(server, tmp_path):
    sources = _sources(server)
    server.files["/LSUN.tar.gz"] = _tar({"LSUN/test/other.jpg": _jpeg(99)})  # the server now has another file
    with pytest.raises(DataError, match="checksum mismatch.*publishes") as err:
        _fetch(["lsun_c"], tmp_path, sources)
    assert "removed" in str(err.value)
    assert not (tmp_path / dl.DOWNLOADS / "LSUN.tar.gz.part").exists()
    assert not (tmp_path / dl.DOWNLOADS / "LSUN.tar.gz").exists()
    _nothing_installed(tmp_path, "LSUN")


@pytest.mark.parametrize("how", ["html", "plain_html"])
def test_an_html_page_instead_of_the_archive_is_a_clear_error(server, tmp_path, how):
    sources = _sources(server)
    getattr(server, how).add("/LSUN.tar.gz")
    with pytest.raises(DataError, match="HTML page instead of the file") as err:
        _fetch(["lsun_c"], tmp_path, sources)
    assert "download it by hand" in str(err.value)
    assert not (tmp_path / dl.DOWNLOADS / "LSUN.tar.gz.part").exists()
    _nothing_installed(tmp_path, "LSUN")


def test_a_truncated_archive_installs_nothing_and_is_removed(server, tmp_path):
    sources = _sources(server)
    whole = _tar({f"LSUN/test/{i:04d}.jpg": _jpeg(i, 120) for i in range(LSUN_IMAGES)})
    truncated = whole[: len(whole) * 2 // 3]
    server.files["/LSUN.tar.gz"] = truncated
    # a source without a published checksum (the archive check is all there is), or one whose publisher
    # checksummed a truncated upload: the checksum passes and the archive itself must be found damaged
    artifact = sources["lsun_c"].artifacts[0]
    for checksum in (None, _md5(truncated)):
        source = Source(
            "lsun_c",
            "test",
            ("LSUN",),
            (Artifact(**{**artifact.__dict__, "checksum": checksum}),),
            (ImageCount("LSUN", LSUN_IMAGES),),
        )
        with pytest.raises(DataError, match="truncated or damaged archive"):
            _fetch(["lsun_c"], tmp_path, {"lsun_c": source})
        _nothing_installed(tmp_path, "LSUN")
        assert not (tmp_path / dl.DOWNLOADS / "LSUN.tar.gz").exists()


def test_a_truncated_npy_is_refused(server, tmp_path):
    sources = _sources(server)
    body = server.files["/300K_random_images.npy"][:-100]
    server.files["/300K_random_images.npy"] = body
    artifact = sources["tinyimages300k"].artifacts[0]
    source = Source(
        "tinyimages300k", "test", ("300K_random_images.npy",), (Artifact(**{**artifact.__dict__, "checksum": None}),)
    )
    with pytest.raises(DataError, match="truncated file or not a .npy"):
        _fetch(["tinyimages300k"], tmp_path, {"tinyimages300k": source})
    assert not (tmp_path / "300K_random_images.npy").exists()


def test_unknown_and_unavailable_names_fail_before_any_request(server, tmp_path):
    sources = _sources(server)
    with pytest.raises(UnknownNameError, match="did you mean 'lsun_c'"):
        _fetch(["lsun_c", "lsun_cc"], tmp_path, sources)
    with pytest.raises(DataError, match="withdrawn.*tinyimages300k"):
        _fetch(["lsun_c", "tinyimages"], tmp_path, sources)
    with pytest.raises(DataError, match="image-net.org account"):
        dl.download(["imagenet_rc"], tmp_path, show=False, log=lambda m: None)
    assert server.requests == []


# --------------------------------------------------------------------------------------------------------------
# states: present / missing / incomplete / checksum mismatch


def test_data_states_and_verify(server, tmp_path, capsys, monkeypatch):
    sources = _sources(server)
    for name, source in sources.items():
        monkeypatch.setitem(SOURCES, name, source)
    assert (
        main(["data", "--data-root", str(tmp_path), "--download", "lsun_c,svhn,tinyimages300k", "--no-progress"]) == 0
    )
    out = capsys.readouterr().out
    assert "checksums verified" in out

    def states():
        return {(r["name"], r["role"]): (r["state"], r["detail"]) for r in dl.data_status(tmp_path)}

    assert states()[("textures", "ood")][0] == "missing"
    assert states()[("svhn", "in")] == ("present", "checksums verified")
    # a damaged file: unverified until --verify, which finds the mismatch and records it
    npy = tmp_path / "300K_random_images.npy"
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF
    npy.write_bytes(bytes(raw))
    assert states()[("tinyimages300k", "aux")][0] == "present"
    assert "not verified" in states()[("tinyimages300k", "aux")][1]
    assert main(["data", "--data-root", str(tmp_path), "--verify", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "CHECKSUM MISMATCH" in out and "300K_random_images.npy" in out
    assert states()[("tinyimages300k", "aux")][0] == "checksum mismatch"  # remembered without re-reading
    # an image removed: incomplete; an image altered: its manifest catches it under --verify
    images = sorted((tmp_path / "LSUN").rglob("*.jpg"))
    images[0].write_bytes(_jpeg(1234))
    assert states()[("lsun_c", "ood")][0] == "present"
    assert (
        dl.data_status(tmp_path, verify=True)[[r["name"] for r in dl.data_status(tmp_path)].index("lsun_c")]["state"]
        == "checksum mismatch"
    )
    images[1].unlink()
    state, detail = states()[("lsun_c", "ood")]
    assert state == "incomplete" and f"{LSUN_IMAGES - 1} images" in detail
    # a set that is present but damaged is never overwritten by --download, and nothing else is fetched either
    server.requests.clear()
    with pytest.raises(DataError, match="(?s)lsun_c: incomplete.*Move them aside"):
        _fetch(["textures", "lsun_c"], tmp_path, sources)
    assert server.requests == [] and len(list((tmp_path / "LSUN").rglob("*.jpg"))) == LSUN_IMAGES - 1


def test_data_help_says_how_every_set_is_obtained_and_verified(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    for name in (
        "cifar10",
        "cifar100",
        "svhn",
        "textures",
        "places365",
        "lsun_c",
        "lsun_r",
        "isun",
        "tinyimages300k",
        "tinyimages",
        "imagenet_rc",
    ):
        assert f"  {name}: " in out, name
    assert "withdrawn" in out and "image-net.org account" in out and "--verify" in out


# --------------------------------------------------------------------------------------------------------------
# oodbench run --download


def test_run_download_fetches_what_the_run_reads_before_any_compute(server, tmp_path, capsys, monkeypatch):
    sources = _sources(server)
    for name, source in sources.items():
        monkeypatch.setitem(SOURCES, name, source)
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    # the default auxiliary pool of SVHN (80M TinyImages) has no download: refused before any request or compute
    code = main(
        [
            "run",
            "--download",
            "--methods",
            "oe",
            "--in",
            "svhn",
            "--data-root",
            str(root),
            "--no-progress",
            "--out",
            str(tmp_path / "run1"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "tinyimages300k" in err and server.requests == []
    assert not (tmp_path / "run1").exists()
    # the sets a run reads: in-dist, its OOD sets, the auxiliary pool only for methods that use one
    assert dl.sets_for_run("svhn", None, None, needs_aux=False) == ["svhn", *DEFAULT_OOD["svhn"]]
    assert dl.sets_for_run("svhn", ["lsun_c"], "tinyimages300k", needs_aux=True) == ["svhn", "lsun_c", "tinyimages300k"]
    code = main(
        [
            "run",
            "--download",
            "--methods",
            "msp",
            "--ood",
            "lsun_c",
            "--profile",
            "smoke",
            "--epochs",
            "1",
            "--max-ood",
            "4",
            "--max-train",
            "64",
            "--threats",
            "natural",
            "--no-progress",
            "--data-root",
            str(root),
            "--out",
            str(tmp_path / "run2"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [p for p, _ in server.requests] == ["/LSUN.tar.gz"] and (root / "LSUN").is_dir()
    assert "lsun_c natural" in captured.err  # the run evaluated the downloaded set


def _write_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 1]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_run_defaults_agree_with_the_loaders(tmp_path, monkeypatch):
    """sources.DEFAULT_OOD / DEFAULT_AUX name the sets before their files exist; the loaders decide at load time."""
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "cache"))
    _write_cifar10(tmp_path)
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(_mat([1, 2], 0))
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(_mat([1, 2], 1))
    for name in ("cifar10", "svhn"):
        ind = data.load_in_distribution(name, tmp_path)
        assert tuple(ind.default_ood) == tuple(DEFAULT_OOD[name]) and ind.default_aux == DEFAULT_AUX[name]


# --------------------------------------------------------------------------------------------------------------
# the real registry (no network)


def test_the_real_sources_cover_the_loaders_layout():
    for name, source in SOURCES.items():
        spec = DATASETS.get(name)  # every source is a registered data set
        for paths in spec.paths.values():
            for path in paths:  # status and installation agree on where the files live
                assert any(path == t or path.startswith(t + "/") for t in source.targets), (name, path)
        if not source.downloadable:
            assert source.unavailable and "use" in source.unavailable.lower(), name
            continue
        assert source.verification, name
        for artifact in source.artifacts:
            assert set(artifact.produces) <= set(source.targets), name
            assert all(u.startswith(("https://", "http://")) for u in artifact.urls), name
            assert artifact.checksum is not None and artifact.checksum.published_by, name
            digest_length = {"md5": 32, "sha256": 64}[artifact.checksum.algorithm]
            assert len(artifact.checksum.digest) == digest_length, name
            if artifact.keep_listed:  # the list is fetched by an earlier artifact of the same source
                earlier = source.artifacts[: source.artifacts.index(artifact)]
                assert artifact.keep_listed in [a.dest for a in earlier], name
    paper_sets = {"cifar10", "cifar100", "svhn", "textures", "places365", "lsun_c", "lsun_r", "isun", "tinyimages300k"}
    assert paper_sets <= {n for n, s in SOURCES.items() if s.downloadable}
    assert not SOURCES["tinyimages"].downloadable and not SOURCES["imagenet_rc"].downloadable


def test_the_places365_list_pin_matches_the_shared_copy(shared_dir):
    """The sha256 pinned for places365_test_list.txt is the one of the list the released code ships."""
    check = next(c for c in SOURCES["places365"].checks if isinstance(c, FileDigest))
    listed = shared_dir / "data" / "places365_test_list.txt"
    assert hashlib.sha256(listed.read_bytes()).hexdigest() == check.checksum.digest


def test_a_download_with_progress_bars_on(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OODBENCH_PROGRESS", "1")
    server.cut.add("/LSUN.tar.gz")  # the resumed bar starts at the bytes already there
    dl.download(["lsun_c"], tmp_path, _sources(server), timeout=5.0, show=True, log=print)
    captured = capsys.readouterr()
    assert "LSUN.tar.gz" in captured.err and "lsun_c: fetching" in captured.out
    assert len(list((tmp_path / "LSUN").rglob("*.jpg"))) == LSUN_IMAGES


def test_the_python_api_download_flag_uses_the_same_verified_path(server, tmp_path, monkeypatch):
    """load_in_distribution / load_ood(download=True) fetch a missing set through oodbench.data.download."""
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "cache"))
    pickles = {
        f"cifar-10-batches-py/{name}": pickle.dumps(
            {"data": np.full((2, 3072), i, dtype=np.uint8), "labels": [i % 10, 1]}, protocol=2
        )
        for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"])
    }
    archive = _tar(pickles)
    cifar = Source(
        "cifar10",
        "test",
        ("cifar-10-batches-py",),
        (_archive(server, "cifar-10-python.tar.gz", archive, "tar", "cifar-10-batches-py"),),
        tuple(FileDigest(rel, _md5(body)) for rel, body in pickles.items()),
    )
    for name, source in {**_sources(server), "cifar10": cifar}.items():
        monkeypatch.setitem(SOURCES, name, source)
    ind = data.load_in_distribution("cifar10", tmp_path, download=True)
    assert len(ind.train) == 10 and int(ind.test.images.max()) == 5
    assert len(data.load_ood("lsun_c", tmp_path, download=True)) == LSUN_IMAGES
    assert [p for p, _ in server.requests] == ["/cifar-10-python.tar.gz", "/LSUN.tar.gz"]
    states = {(r["name"], r["role"]): r["state"] for r in dl.data_status(tmp_path)}
    assert states[("cifar10", "in")] == states[("cifar10", "ood")] == "present"
