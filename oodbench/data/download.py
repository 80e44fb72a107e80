"""Fetch, verify and install the paper's public data sets into the layout the loaders read (`oodbench data
--download`, `oodbench run --download`), and report the state of what is there (`oodbench data [--verify]`).

A download goes to `ROOT/.oodbench-downloads/FILE.part` and resumes from where it stopped (HTTP Range) when a
connection is cut, within a call (a few retries) and across calls. A finished file is checked against its published
checksum and its format (an HTML page saved in place of an archive, a truncated archive, a .npy or .mat that is
not one: a `DataError` that says what to do), extracted into a staging folder beside the data root, checked again
there (expected image counts, per-file checksums where published), and only then moved into place, one target path
at a time with `os.replace`, so the loaders never see a half-extracted set. A partial download that can still be
resumed is kept; a finished file that fails a check is removed. Sets already present are never downloaded again.
The free disk space is checked before the first byte, and a file lock lets one process at a time install into a
data root (parallel jobs sharing a root download a set once).

State per set: `missing`, `incomplete` (some files, or fewer images than the set has), `checksum mismatch`, or
`present` (verified or not yet). Recomputing checksums reads every file, so only `--verify` does it; its verdicts
are kept in `ROOT/.oodbench-verified.json` keyed by file size and modification time, so a later plain
`oodbench data` still shows a mismatch without re-reading. The folders of sets whose files have no published
checksums (Textures, LSUN, iSUN, Places365) get a `.oodbench-sha256` manifest written at installation, which
`--verify` checks.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from oodbench.data.sources import DEFAULT_AUX, DEFAULT_OOD, SOURCES, Artifact, Checksum, FileDigest, ImageCount, Source
from oodbench.errors import DataError, UnknownNameError
from oodbench.progress import byte_progress, progress

DOWNLOADS = ".oodbench-downloads"  # partial downloads, verified archives not yet installed, staging folders
RECORD = ".oodbench-verified.json"  # verdicts of `--verify`, keyed by path, size and mtime
MANIFEST = ".oodbench-sha256"  # sha256 of every file of an installed folder (sha256sum format)
LOCK = ".oodbench-download.lock"  # one installation at a time per data root
CHUNK = 1 << 20
USER_AGENT = "oodbench-data/1 (+https://github.com/; python-urllib)"

Log = Callable[[str], None]


def _nolog(message: str) -> None:
    pass


# --------------------------------------------------------------------------------------------------------------
# names


def resolve_sources(names: Iterable[str], sources: Mapping[str, Source] | None = None) -> list[Source]:
    """The sources of `names` (registered data-set names), checked before anything is fetched: an unknown name is
    an UnknownNameError with a did-you-mean hint, a set with no public download a DataError saying how to obtain
    it or what to use instead."""
    sources = SOURCES if sources is None else sources
    chosen, unavailable = [], []
    for name in dict.fromkeys(n.strip() for n in names if n.strip()):
        if name not in sources:
            close = difflib.get_close_matches(name, list(sources), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UnknownNameError(
                f"no download for data set '{name}'{hint} Downloadable: "
                + ", ".join(n for n, s in sources.items() if s.downloadable)
            )
        source = sources[name]
        (chosen if source.downloadable else unavailable).append(source)
    if unavailable:
        raise DataError("\n".join(f"{s.name}: {s.unavailable}." for s in unavailable))
    return chosen


# --------------------------------------------------------------------------------------------------------------
# checksums


def file_digest(path: Path, algorithm: str, bar: bool = False) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f, byte_progress(path.stat().st_size, f"hash {path.name}", bar) as progress_bar:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            progress_bar.update(len(chunk))
    return h.hexdigest()


def _checksum_error(path: Path, checksum: Checksum, found: str) -> str:
    return f"'{path}' has {checksum.algorithm} {found}, but {checksum.published_by} publishes {checksum.digest}"


# --------------------------------------------------------------------------------------------------------------
# HTTP


class _HtmlPage(Exception):
    """The server answered with a web page (a login, quota or 'file moved' page) instead of the file."""


class _Interrupted(Exception):
    """The connection ended before the whole file arrived; the partial file is kept for resuming."""


def _looks_like_html(first_bytes: bytes, content_type: str) -> bool:
    """A web page: served as HTML, or starting like one whatever its declared type (no data file of ours does)."""
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    head = first_bytes[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or (
        head.startswith((b"<head", b"<?xml")) and b"<html" in head
    )


def _fetch_url(url: str, part: Path, timeout: float, retries: int, show: bool, label: str, log: Log) -> None:
    """Download `url` into `part`, appending from its current size (HTTP Range) and retrying a cut connection up to
    `retries` times. Raises _HtmlPage, _Interrupted (part kept) or urllib errors."""
    detail = ""
    for attempt in range(retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        if attempt:
            log(f"  {label}: {detail}; resuming at byte {offset:,} (attempt {attempt + 1} of {retries + 1})")
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:  # nothing left to send: the partial file is already whole
                return
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            detail = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            if offset:  # a resumable partial file exists: retry the connection
                continue
            raise
        with response:
            if response.status == 206:
                content_range = response.headers.get("Content-Range", "")
                start = content_range.split()[-1].split("-")[0] if content_range else ""
                if start != str(offset):  # not the range we asked for: start over
                    part.unlink()
                    detail = f"the server answered Range bytes={offset}- with '{content_range}'"
                    continue
            else:
                offset = 0  # the server ignored the Range header and sends the whole file
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            content_type = response.headers.get("Content-Type", "")
            with open(part, "ab" if offset else "wb") as out, byte_progress(total, label, show, offset) as bar:
                first = True
                try:
                    while chunk := response.read(CHUNK):
                        if first and not offset and _looks_like_html(chunk, content_type):
                            raise _HtmlPage(chunk[:300].decode("utf-8", "replace"))
                        first = False
                        out.write(chunk)
                        bar.update(len(chunk))
                except (http.client.HTTPException, OSError) as error:  # cut connection, reset, timeout
                    detail = f"{type(error).__name__}: {error}"
            got = part.stat().st_size
            if total is None or got == total:
                return
            if got > total:  # more than announced: the file changed on the server; start over next time
                part.unlink()
            detail = detail or f"received {got:,} of {total:,} bytes"
    raise _Interrupted(detail)


def fetch(
    artifact: Artifact,
    folder: Path,
    home: str = "",
    timeout: float = 60.0,
    retries: int = 3,
    show: bool = True,
    log: Log = _nolog,
) -> Path:
    """`folder/artifact.filename`, downloaded (resuming `FILE.part` if one is there) from the first of its URLs
    that serves it, and checked against its published checksum. A checksum mismatch or an HTML page removes the
    file; an interruption keeps the partial file and says to rerun."""
    folder.mkdir(parents=True, exist_ok=True)
    final, part = folder / artifact.filename, folder / (artifact.filename + ".part")
    if final.exists():  # verified by an earlier call whose installation did not finish
        if artifact.checksum is None or file_digest(final, artifact.checksum.algorithm) == artifact.checksum.digest:
            log(f"  {artifact.filename}: reusing the verified download in {folder}")
            return final
        final.unlink()
    failures = []
    for url in artifact.urls:
        log(f"  {artifact.filename}: downloading {url}" + (" (resuming)" if part.exists() else ""))
        try:
            _fetch_url(url, part, timeout, retries, show, artifact.filename, log)
            break
        except _HtmlPage as page:
            part.unlink(missing_ok=True)  # a web page is no prefix of the file: nothing to resume
            failures.append(f"{url}: the server sent an HTML page instead of the file (starts: {str(page)[:80]!r})")
        except _Interrupted as cut:
            size = part.stat().st_size if part.exists() else 0
            raise DataError(
                f"{artifact.filename}: the download from {url} was interrupted ({cut}) after {size:,} bytes; the "
                f"partial file is kept at '{part}': rerun the same command to resume it"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
            failures.append(f"{url}: {type(error).__name__}: {getattr(error, 'reason', error)}")
    else:
        raise DataError(
            f"{artifact.filename}: no URL served the file:\n  "
            + "\n  ".join(failures)
            + f"\nCheck the network, or download it by hand{f' (see {home})' if home else ''} and put it at "
            f"'{final}'; it is verified and installed on the next call"
        )
    if artifact.checksum is not None:
        found = file_digest(part, artifact.checksum.algorithm, bar=show)
        if found != artifact.checksum.digest:
            part.unlink()
            raise DataError(
                f"{artifact.filename}: checksum mismatch: {_checksum_error(part, artifact.checksum, found)}. The "
                "file was removed; rerun to download it again. If the mismatch repeats, the server now serves "
                "another file: report it, or download the file by hand and check it yourself"
            )
    os.replace(part, final)
    return final


# --------------------------------------------------------------------------------------------------------------
# format checks and extraction (into a staging folder)


def _bad_file(artifact: Artifact, path: Path, what: str) -> DataError:
    path.unlink(missing_ok=True)
    return DataError(
        f"{artifact.filename}: {what}. The file was removed; rerun to download it again (the first URL was "
        f"{artifact.urls[0]})"
    )


def check_content(artifact: Artifact, path: Path) -> None:
    """The format check of a single-file download: a MATLAB 5 file with X and y (SVHN), a whole uint8 (N, S, S, 3)
    .npy (TinyImages 300K), or a UTF-8 text with one name a line (the Places365 list)."""
    if artifact.content == "mat":
        with open(path, "rb") as f:
            if not f.read(19).startswith(b"MATLAB 5.0 MAT-file"):
                raise _bad_file(artifact, path, "not a MATLAB 5 .mat file")
        import scipy.io

        try:
            names = {entry[0] for entry in scipy.io.whosmat(str(path))}
        except Exception as error:  # scipy raises many types on a damaged file
            raise _bad_file(artifact, path, f"a truncated or damaged .mat file ({error})") from None
        if not {"X", "y"} <= names:
            raise _bad_file(artifact, path, f"a .mat file without X and y (it holds {sorted(names)})")
    elif artifact.content == "npy":
        import numpy as np

        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)  # mmap refuses a file shorter than its header says
        except Exception as error:
            raise _bad_file(artifact, path, f"a truncated file or not a .npy array ({error})") from None
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            raise _bad_file(artifact, path, f"a .npy of {array.dtype} {array.shape}, not uint8 (N, S, S, 3) images")
    elif artifact.content == "text":
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise _bad_file(artifact, path, "not a text file") from None
        if not lines:
            raise _bad_file(artifact, path, "an empty list")


def _safe_name(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _listed_names(staging: Path, root: Path, rel: str) -> set[str]:
    for base in (staging, root):
        if (base / rel).is_file():
            lines = (base / rel).read_text(encoding="utf-8").splitlines()
            return {line.split()[0].split("/")[-1] for line in lines if line.strip()}
    raise DataError(
        f"the file list '{rel}' is needed to select the archive members but is neither staged nor at {root}"
    )


def extract(artifact: Artifact, archive: Path, staging: Path, root: Path) -> int:
    """Extract `archive` into `staging/artifact.dest` (only regular files and folders, no path outside it); returns
    the number of files. A truncated or damaged archive removes the file and raises DataError; the staging folder
    is the caller's to delete."""
    dest = staging / artifact.dest
    dest.mkdir(parents=True, exist_ok=True)
    keep = _listed_names(staging, root, artifact.keep_listed) if artifact.keep_listed else None
    if artifact.kind not in ("tar", "zip"):
        raise ValueError(f"unknown archive kind '{artifact.kind}'")
    files = 0
    try:
        if artifact.kind == "tar":
            with tarfile.open(archive) as tar:
                for member in tar:  # streaming: a truncated archive fails here or while copying a member
                    if not _safe_name(member.name) or not (member.isfile() or member.isdir()):
                        continue  # links and devices are never needed by an image set
                    if keep is not None and (member.isdir() or Path(member.name).name not in keep):
                        continue
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, dest, filter="data")
                    else:  # Python < 3.11.4: the name checks above are the filter
                        tar.extract(member, dest)
                    files += member.isfile()
        elif artifact.kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"CRC error in member {bad}")
                for info in zf.infolist():
                    if not _safe_name(info.filename):
                        continue
                    if keep is not None and (info.is_dir() or Path(info.filename).name not in keep):
                        continue
                    zf.extract(info, dest)
                    files += not info.is_dir()
    except Exception as error:  # tarfile / zipfile errors, EOFError, zlib.error on a cut compressed stream
        raise _bad_file(
            artifact, archive, f"a truncated or damaged archive ({type(error).__name__}: {error})"
        ) from None
    return files


# --------------------------------------------------------------------------------------------------------------
# checks of an installed (or staged) set


def _applies(check_path: str, paths: Iterable[str]) -> bool:
    """Whether a check on `check_path` concerns any of `paths` (one lies inside the other)."""
    c = Path(check_path)
    return any(c == Path(p) or Path(p) in c.parents or c in Path(p).parents for p in paths)


def count_check(base: Path, check: ImageCount) -> str:
    """'' when the folder holds the expected images, else what is wrong."""
    from oodbench.data.formats import image_files, read_file_list

    folder = base / check.path
    if not folder.is_dir():
        return f"'{folder}' is not a folder"
    files = image_files(folder)
    if check.listed:
        listed = folder / check.listed
        if not listed.is_file():
            return f"'{listed}' is missing"
        names = [line for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) != check.count:
            return f"'{listed}' names {len(names):,} images, expected {check.count:,}"
        try:
            read_file_list(listed, folder, files)
        except DataError as error:
            return str(error)
        return ""
    if len(files) != check.count:
        return f"{len(files):,} images under '{folder}', expected {check.count:,}"
    return ""


def write_manifest(folder: Path) -> None:
    """sha256 of every file under `folder` (relative paths, sorted) into `folder/.oodbench-sha256`."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name != MANIFEST:
                lines.append(f"{file_digest(path, 'sha256')}  {path.relative_to(folder).as_posix()}")
    (folder / MANIFEST).write_text("\n".join(lines) + "\n")


def manifest_mismatches(folder: Path, show: bool = False) -> list[str]:
    """The files of `folder`'s manifest that are missing or whose sha256 differs."""
    bad = []
    entries = [line.split("  ", 1) for line in (folder / MANIFEST).read_text().splitlines() if "  " in line]
    for digest, rel in progress(entries, f"verify {folder.name}", show):
        path = folder / rel
        if not path.is_file() or file_digest(path, "sha256") != digest:
            bad.append(rel)
    return bad


class _Record:
    """`ROOT/.oodbench-verified.json`: the verdict of each file checksum, valid while size and mtime are unchanged.
    A read-only data root simply keeps no record."""

    def __init__(self, root: Path):
        self.path = root / RECORD
        try:
            self.entries: dict = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False
        self.fresh: set[str] = set()

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]

    def get(self, rel: str, path: Path, fresh: bool = False) -> str | None:
        """The recorded digest of `rel` if `path` is unchanged since; with `fresh`, only one computed by this
        process (so `--verify` hashes a file shared by two roles once)."""
        if fresh and rel not in self.fresh:
            return None
        entry = self.entries.get(rel)
        return entry["digest"] if entry and entry.get("stamp") == self._stamp(path) else None

    def put(self, rel: str, path: Path, digest: str) -> None:
        self.entries[rel] = {"stamp": self._stamp(path), "digest": digest}
        self.changed = True
        self.fresh.add(rel)

    def save(self) -> None:
        if not self.changed:
            return
        with contextlib.suppress(OSError):
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=RECORD + ".", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(self.entries, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)


@dataclass
class SetState:
    """What `oodbench data` shows for one data set (or one role of it)."""

    state: str  # "present", "missing", "incomplete", "checksum mismatch"
    detail: str = ""
    verified: bool = False


def check_state(
    root: Path,
    paths: Iterable[str],
    source: Source | None,
    verify: bool = False,
    record: _Record | None = None,
    show: bool = False,
) -> SetState:
    """The state of the files `paths` (relative to `root`) of `source`: missing / incomplete (counts, missing files)
    / checksum mismatch (recomputed with `verify`, else as recorded by an earlier verification) / present."""
    paths = list(paths)
    present = [p for p in paths if (root / p).exists()]
    if not present:
        return SetState("missing")
    if len(present) < len(paths):
        return SetState("incomplete", "missing: " + ", ".join(str(root / p) for p in paths if p not in present))
    if source is None:
        return SetState("present")
    record = record if record is not None else _Record(root)
    problems, mismatches, notes = [], [], []
    digests = unverified = 0
    for check in source.checks:
        if not _applies(check.path, paths):
            continue
        if isinstance(check, ImageCount):
            problem = count_check(root, check)
            if problem:
                problems.append(problem)
                continue
            notes.append(f"{check.count:,} images")
            if (root / check.path / MANIFEST).is_file():
                if verify:
                    bad = manifest_mismatches(root / check.path, show)
                    if bad:
                        mismatches.append(
                            f"{len(bad)} file(s) of '{root / check.path}' differ from the download "
                            f"(first: {', '.join(bad[:3])})"
                        )
                    else:
                        notes.append("files match the download's sha256 manifest")
            else:
                notes.append("no published per-file checksum")
            continue
        path = root / check.path
        if not path.is_file():
            problems.append(f"'{path}' is missing")
            continue
        digests += 1
        digest = record.get(check.path, path, fresh=verify)
        if verify and digest is None:
            digest = file_digest(path, check.checksum.algorithm, bar=show)
            record.put(check.path, path, digest)
        if digest is None:
            unverified += 1
        elif digest != check.checksum.digest:
            mismatches.append(_checksum_error(path, check.checksum, digest))
    if problems:
        return SetState("incomplete", "; ".join(problems))
    if mismatches:
        return SetState("checksum mismatch", "; ".join(mismatches))
    if digests:
        notes.insert(0, "checksums not verified yet (oodbench data --verify)" if unverified else "checksums verified")
    return SetState("present", ", ".join(notes), verified=digests > 0 and not unverified)


# --------------------------------------------------------------------------------------------------------------
# installing


def _space_needed(artifacts: Iterable[Artifact]) -> int:
    """Bytes a download and its extraction take at most (an archive and its extracted copy side by side)."""
    return sum(a.size * (2 if a.kind != "file" and not a.keep_listed else 1) for a in artifacts)


def install(
    source: Source,
    root: Path,
    timeout: float = 60.0,
    retries: int = 3,
    show: bool = True,
    log: Log = _nolog,
) -> bool:
    """Download, verify and install the missing targets of `source` under `root`; False when every target was
    already there (nothing is downloaded). One installation at a time per data root (a file lock), so parallel
    jobs sharing a root download a set once."""
    from oodbench.locks import file_lock

    try:
        root.mkdir(parents=True, exist_ok=True)
        writable = os.access(root, os.W_OK)
    except OSError as error:
        raise DataError(f"cannot create the data root '{root}' ({error}); pass a writable --data-root") from None
    if not writable:
        raise DataError(f"the data root '{root}' is not writable; pass a writable --data-root to download into")
    with file_lock(root / LOCK):
        missing = [t for t in source.targets if not (root / t).exists()]
        if not missing:
            return False
        needed = [a for a in source.artifacts if any(t in missing for t in a.produces)]
        free, wanted = shutil.disk_usage(root).free, _space_needed(needed)
        if wanted > free:
            raise DataError(
                f"{source.name}: needs about {wanted / 1e9:.1f} GB free under '{root}' (download and extraction), "
                f"{free / 1e9:.1f} GB are free; make room or pass another --data-root"
            )
        downloads = root / DOWNLOADS
        downloads.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=downloads, prefix=f"staging-{source.name}-"))
        try:
            _install_into(source, root, missing, needed, staging, timeout, retries, show, log)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            downloads.rmdir()  # only when empty (no partial download left to resume)
    return True


def _install_into(
    source: Source,
    root: Path,
    missing: list[str],
    needed: list[Artifact],
    staging: Path,
    timeout: float,
    retries: int,
    show: bool,
    log: Log,
) -> None:
    downloads = root / DOWNLOADS
    archives: list[Path] = []
    for artifact in needed:
        path = fetch(artifact, downloads, source.home, timeout, retries, show, log)
        if artifact.kind == "file":
            check_content(artifact, path)
            target = staging / artifact.dest
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)  # same file system: a move, not a second copy
        else:
            log(f"  {artifact.filename}: extracting")
            extract(artifact, path, staging, root)
            archives.append(path)
    kept = f"; the verified download is kept in '{downloads}'" if archives else ""
    for target in missing:
        if not (staging / target).exists():
            raise DataError(
                f"{source.name}: the downloads hold no '{target}' (the archive's layout changed?), so nothing was "
                f"installed{kept}. Extract it by hand into the layout `oodbench data` shows, and report it"
            )
    state = check_state(staging, missing, source, verify=True, record=_Record(staging))
    if state.state != "present":
        raise DataError(
            f"{source.name}: the downloaded files fail their check ({state.detail}), so nothing was installed{kept}"
        )
    for check in source.checks:  # the folders `--verify` checks against what was downloaded
        if isinstance(check, ImageCount) and _applies(check.path, missing):
            write_manifest(staging / check.path)
    record = _Record(root)
    for target in missing:  # each target appears whole or not at all
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / target, root / target)
        log(f"  installed {root / target}")
    for check in source.checks:  # the verdicts just computed, for `oodbench data`
        if isinstance(check, FileDigest) and _applies(check.path, missing):
            record.put(check.path, root / check.path, check.checksum.digest)
    record.save()
    for path in archives:  # installed: the archives are no longer needed
        path.unlink(missing_ok=True)


def download(
    names: Iterable[str],
    root: Path | str,
    sources: Mapping[str, Source] | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    show: bool = True,
    log: Log = print,
) -> list[str]:
    """Fetch the data sets `names` into `root` (the layout `oodbench data` shows); returns the names that were
    installed (sets already present are skipped and downloaded never again). Every name is checked before the
    first byte is fetched."""
    root = Path(root).expanduser()
    chosen = resolve_sources(names, sources)
    damaged = []
    for source in chosen:  # a present set that fails its checks is the user's to move aside, never overwritten
        if all((root / t).exists() for t in source.targets):
            state = check_state(root, source.targets, source)
            if state.state != "present":
                damaged.append(f"{source.name}: {state.state} ({state.detail})")
    if damaged:
        raise DataError(
            "these sets are present but fail their checks, so they are not downloaded over:\n  "
            + "\n  ".join(damaged)
            + "\nMove them aside (or delete them) and rerun to download them again"
        )
    installed = []
    for source in chosen:
        present = all((root / t).exists() for t in source.targets)
        if present:
            log(f"{source.name}: already present under {root}")
            continue
        log(f"{source.name}: fetching into {root} ({source.verification})")
        if install(source, root, timeout, retries, show, log):
            installed.append(source.name)
    return installed


def sets_for_run(in_dist: str, ood: Iterable[str] | None, aux: str | None, needs_aux: bool) -> list[str]:
    """The registered data sets a run reads: its in-dist set, its OOD sets (default: the in-dist set's six) and,
    when a method trains or tunes on outliers, its auxiliary pool (default: the in-dist set's)."""
    names = [in_dist, *(list(ood) if ood else DEFAULT_OOD.get(in_dist, ()))]
    aux_name = aux or DEFAULT_AUX.get(in_dist)
    if needs_aux and aux_name:
        names.append(aux_name)
    return list(dict.fromkeys(names))


def download_for_run(
    in_dist: str,
    ood: Iterable[str] | None,
    aux: str | None,
    methods: Iterable[str],
    root: Path | str | None,
    sources: Mapping[str, Source] | None = None,
    show: bool = True,
    log: Log = print,
) -> list[str]:
    """`oodbench run --download`: fetch every registered set the run reads that is not yet there, before any
    compute. Sets without a public download (TinyImages 80M, the default auxiliary pool of CIFAR and SVHN) fail
    here, with what to use instead, unless their files are already present."""
    from oodbench.data.catalog import default_root
    from oodbench.registry import DETECTORS, resolve_methods

    sources = SOURCES if sources is None else sources
    detectors = [DETECTORS.get(m) for m in resolve_methods(list(methods))]
    needs_aux = any(d.uses_aux or d.tunes_on_aux for d in detectors)
    base = default_root() if root is None else Path(root).expanduser()
    wanted = [n for n in sets_for_run(in_dist, ood, aux, needs_aux) if n in sources]
    missing = [n for n in wanted if not all((base / t).exists() for t in sources[n].targets)]
    return download(missing, base, sources, show=show, log=log) if missing else []


def data_status(
    root: Path | str | None = None,
    verify: bool = False,
    sources: Mapping[str, Source] | None = None,
    show: bool = False,
) -> list[dict]:
    """`oodbench.data.dataset_status` rows with `state` ("built-in", "present", "missing", "incomplete",
    "checksum mismatch"), `detail`, `download` (whether `oodbench data --download NAME` can fetch it),
    `verification` and `unavailable` added. `verify` recomputes every published checksum (reads every file)."""
    from oodbench.data.catalog import dataset_status, default_root
    from oodbench.registry import DATASETS

    sources = SOURCES if sources is None else sources
    base = default_root() if root is None else Path(root).expanduser()
    record = _Record(base)
    rows = dataset_status(base)
    for row in rows:
        source = sources.get(row["name"])
        if row["builtin"]:
            state = SetState("built-in")
        else:
            paths = DATASETS.get(row["name"]).paths.get(row["role"], ())
            state = check_state(base, paths, source, verify, record, show)
        row.update(
            state=state.state,
            detail=state.detail,
            download=bool(source and source.downloadable),
            verification=source.verification if source else "",
            unavailable=source.unavailable if source else "",
        )
    if verify:
        record.save()
    return rows
