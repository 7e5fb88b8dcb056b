"""A study's uploaded files in a private temp folder: plain files and the members of a zip, within the limits.

Files are named by their order of arrival (``00000``, ``00001.nii.gz``, ...) inside a folder of a
random name, never by the uploader's names or a zip's member names: those may carry a patient's
name, and a member name such as ``../../etc/x`` must never reach the file system. A zip is checked
before anything is extracted: an absolute member path, one that climbs out of the archive (``..``)
or an encrypted member refuses the whole archive (``bad_archive``); member count, each member's
size and the total size are checked against :class:`~medic_ad.serve.sanity.Limits` from the
central directory, then again on the bytes really inflated, so a zip bomb whose directory lies is
cut off at the limit (``too_large``), and a member that inflates to another size than its directory
states is refused. An upload refused half-way leaves nothing of itself in the folder. Hidden files
and macOS resource forks (``__MACOSX/``) are left out. The folder and all in it are deleted when the
``with`` block ends, whatever happened.

Messages name a file by its number (``file 3``, ``member 3``), never by its name.
"""

from __future__ import annotations

import copy
import io
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from medic_ad.serve.sanity import Limits, SanityError

__all__ = ["ZIP_MAGIC", "StudyFolder", "is_zip"]

ZIP_MAGIC = b"PK\x03\x04"
_GZIP_MAGIC = b"\x1f\x8b"
#: a member inflating more than this many times its compressed size is treated as a bomb
#: (DICOM slices compress about 2-10 times; a bomb thousands of times)
_BOMB_RATIO = 200
_BOMB_FLOOR = 1 << 20  # small members may compress well for honest reasons
_CHUNK = 1 << 20


def is_zip(data: bytes) -> bool:
    return bytes(data[:4]) == ZIP_MAGIC


def _named_for_its_format(path: Path) -> Path:
    """``path`` with the suffix nibabel needs to open a NIfTI file by path (other readers sniff the bytes)."""
    from medic_ad.data.io import sniff_format

    if sniff_format(path) != "nifti":
        return path
    with open(path, "rb") as fh:
        gz = fh.read(2) == _GZIP_MAGIC
    return path.rename(path.with_name(path.name + (".nii.gz" if gz else ".nii")))


def _unsafe(name: str) -> bool:
    path = name.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return True
    return ".." in PurePosixPath(path).parts


def _hidden(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


class StudyFolder:
    """``with StudyFolder(limits) as folder: folder.add(data) ...; folder.files``; deleted on exit."""

    def __init__(self, limits: Limits = Limits(), *, tmp_dir: str | Path | None = None, name: str = "study") -> None:
        self.limits = limits
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else None
        self.name = name
        self.files: list[Path] = []
        self.left_out = 0  # a zip's hidden files, resource forks and empty members
        self._bytes = 0
        self.path: Path | None = None

    def __enter__(self) -> "StudyFolder":
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="medic-ad-study-", dir=self.tmp_dir))  # mode 0700
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ adding
    def add(self, data: bytes) -> None:
        """One uploaded file: a zip is extracted (its members count as files), anything else kept as is.

        All or nothing: when it is refused, whatever it had written is removed before the error goes out.
        """
        data = bytes(data)
        files, n_bytes, left_out = len(self.files), self._bytes, self.left_out
        try:
            if is_zip(data):
                self._add_zip(data)
                return
            number = len(self.files) + 1
            if not data:
                raise SanityError("empty_file", f"file {number} is empty", name=self.name)
            self._reserve(len(data), f"file {number}")
            self._write([data])
        except BaseException:
            for path in self.files[files:]:
                path.unlink(missing_ok=True)
            del self.files[files:]
            self._bytes, self.left_out = n_bytes, left_out
            raise

    def _reserve(self, size: int, what: str) -> None:
        limits = self.limits
        if len(self.files) + 1 > limits.max_files:
            raise SanityError("too_large", f"more than {limits.max_files} files in one study upload", name=self.name)
        if size > limits.max_bytes:
            raise SanityError("too_large", f"{what} is over the {limits.max_bytes}-byte file limit", name=self.name)
        if self._bytes + size > limits.max_study_bytes:
            raise SanityError("too_large", f"the study is over the {limits.max_study_bytes}-byte limit once unzipped",
                              name=self.name)

    def _write(self, chunks) -> Path:
        assert self.path is not None, "use StudyFolder in a with block"
        path = self.path / f"{len(self.files):05d}"
        written = 0
        try:
            with open(path, "xb") as fh:
                for chunk in chunks:
                    written += len(chunk)
                    fh.write(chunk)
        except BaseException:  # a member cut off at the limits leaves no partial file
            path.unlink(missing_ok=True)
            raise
        self._bytes += written
        self.files.append(_named_for_its_format(path))
        return self.files[-1]

    def _add_zip(self, data: bytes) -> None:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            members = [m for m in archive.infolist() if not m.is_dir()]
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
            raise SanityError("bad_archive", "not a readable zip archive", name=self.name) from None
        for k, m in enumerate(members, 1):
            if _unsafe(m.filename):
                raise SanityError("bad_archive", f"member {k}'s path is absolute or leads out of the archive's "
                                                 "folder", name=self.name)
            if m.flag_bits & 0x1:
                raise SanityError("bad_archive", f"member {k} is encrypted", name=self.name)
            if m.file_size > _BOMB_FLOOR and m.file_size > _BOMB_RATIO * max(1, m.compress_size):
                raise SanityError("too_large", f"member {k} inflates {m.file_size // max(1, m.compress_size)} times "
                                               "its size (a decompression bomb)", name=self.name)
        wanted = [(k, m) for k, m in enumerate(members, 1) if not _hidden(m.filename)]
        self.left_out += len(members) - len(wanted)
        if len(self.files) + len(wanted) > self.limits.max_files:
            raise SanityError("too_large", f"more than {self.limits.max_files} files in one study upload",
                              name=self.name)
        declared = sum(m.file_size for _, m in wanted)
        if self._bytes + declared > self.limits.max_study_bytes:
            raise SanityError("too_large", f"the study is over the {self.limits.max_study_bytes}-byte limit once "
                                           "unzipped", name=self.name)
        for k, m in wanted:
            self._reserve(m.file_size, f"member {k}")
            self._extract(archive, k, m)

    def _extract(self, archive: zipfile.ZipFile, k: int, member: zipfile.ZipInfo) -> None:
        # the directory's sizes can lie: count what really comes out, and stop at the limits
        cap = min(self.limits.max_bytes, self.limits.max_study_bytes - self._bytes)
        # zipfile stops a member at its stated size and then fails its CRC, which reads as corruption;
        # with the stated size raised past the limit (by more than the one byte that proves a member
        # over it, so zipfile's end and CRC check do not come first), a lying member inflates until the
        # limit cuts it off (too_large), and one whose true size is under the limit but not the stated
        # one is caught by the comparison below. Each read asks for at most the bytes left under the cap.
        stated = member.file_size
        opened = copy.copy(member)
        opened.file_size = cap + 1 + _CHUNK

        def chunks():
            seen = 0
            with archive.open(opened) as src:
                while chunk := src.read(min(_CHUNK, cap + 1 - seen)):
                    seen += len(chunk)
                    if seen > cap:
                        raise SanityError("too_large", f"member {k} inflates past the upload limits ({cap} bytes "
                                                       f"here), more than the {stated} bytes the zip states",
                                          name=self.name)
                    yield chunk
            if seen != stated:
                raise SanityError("bad_archive", f"member {k} inflates to {seen} bytes, not the {stated} the zip "
                                                 "states (corrupt or a decompression bomb)", name=self.name)

        try:
            it = chunks()
            first = next(it, b"")
            if not first:
                self.left_out += 1  # an empty member is no slice
                return
            self._write(_chain(first, it))
        except SanityError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError):
            raise SanityError("bad_archive", f"member {k} cannot be extracted (corrupt or an unsupported "
                                             "compression)", name=self.name) from None


def _chain(first: bytes, rest):
    yield first
    yield from rest
