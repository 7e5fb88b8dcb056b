"""A thin DICOMweb client over ``dicomweb-client``: find studies, fetch them to a folder, store objects back.

Searches filter on what an archive job selects by (StudyInstanceUID, a StudyDate range, a modality
in the study) and hand back identifiers, dates and modalities only: the patient fields a server
puts in every QIDO answer are dropped here, so they never reach a log or a ``studies.jsonl`` row.

Every failure is one :class:`DicomWebError` line: the operation, the URL without its query, and the
HTTP status (or that the server could not be reached), never a response body, which may quote
patient fields.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

__all__ = ["DicomWebClient", "DicomWebError", "StudyRef"]

# DICOM JSON tags of the study fields kept from a QIDO answer
_STUDY_UID, _STUDY_DATE, _MODALITIES = "0020000D", "00080020", "00080061"
_FAILED_SOPS = 0x00081198


class DicomWebError(RuntimeError):
    """A DICOMweb request failed; the message is one line with no patient field."""


@dataclass(frozen=True)
class StudyRef:
    """A study as a search found it: identifiers and the fields searched on, nothing about the patient."""

    study_uid: str
    study_date: str | None
    modalities: tuple[str, ...]


def _plain_url(url: str) -> str:
    """``url`` without credentials, query or fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname
                       else parts.netloc, parts.path, "", ""))


def _dicom_date(value: dt.date | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    text = str(value).replace("-", "")
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"date {value!r} is not YYYYMMDD or YYYY-MM-DD")
    return text


def _first(item: dict, tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


class DicomWebClient:
    """One DICOMweb service at ``url`` (e.g. ``http://127.0.0.1:8042/dicom-web``)."""

    def __init__(self, url: str, *, timeout: float = 30.0, retries: bool = True) -> None:
        self.url = url.rstrip("/")
        self._client = DICOMwebClient(self.url, timeout=timeout)
        # a few bounded retries on 429/503/504 (dicomweb-client's exponential back-off), or none
        self._client.set_http_retry_params(retry=retries, max_attempts=3, wait_exponential_multiplier=200)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except requests.HTTPError as err:
            response = err.response
            url = _plain_url(response.url if response is not None and response.url else self.url)
            status = response.status_code if response is not None else "?"
            raise DicomWebError(f"DICOMweb {action} failed: {url} answered HTTP {status}") from None
        except (requests.ConnectionError, requests.Timeout):
            raise DicomWebError(f"DICOMweb {action} failed: {_plain_url(self.url)} could not be reached") from None

    def search_studies(self, *, study_uid: str | None = None, date_from: dt.date | str | None = None,
                       date_to: dt.date | str | None = None, modality: str | None = None,
                       limit: int | None = None) -> list[StudyRef]:
        """QIDO-RS: the studies matching every filter given (dates inclusive, either end may be open)."""
        filters: dict[str, str] = {}
        if study_uid:
            filters["StudyInstanceUID"] = study_uid
        if date_from is not None or date_to is not None:
            low, high = _dicom_date(date_from), _dicom_date(date_to)
            filters["StudyDate"] = low if low and low == high else f"{low}-{high}"
        if modality:
            filters["ModalitiesInStudy"] = modality
        with self._errors("search for studies"):
            found = self._client.search_for_studies(search_filters=filters, limit=limit,
                                                    fields=["StudyDate", "ModalitiesInStudy"])
        refs = []
        for item in found:
            uid = _first(item, _STUDY_UID)
            if uid is None:
                continue
            modalities = tuple(str(m) for m in item.get(_MODALITIES, {}).get("Value") or [])
            refs.append(StudyRef(uid, _first(item, _STUDY_DATE), modalities))
        return sorted(refs, key=lambda r: (r.study_date or "", r.study_uid))

    def search_series(self, study_uid: str, *, modality: str | None = None) -> list[str]:
        """QIDO-RS: the SeriesInstanceUIDs of one study (of one modality when given)."""
        filters = {"Modality": modality} if modality else {}
        with self._errors("search for series"):
            found = self._client.search_for_series(study_instance_uid=study_uid, search_filters=filters)
        return sorted(uid for uid in (_first(item, "0020000E") for item in found) if uid)

    def retrieve_study(self, study_uid: str, dest: Path) -> Path:
        """WADO-RS: every instance of a study into ``dest/<StudyInstanceUID>/``, whole or not at all.

        Instances land in a hidden folder beside it that is renamed into place once all have
        arrived, so an existing ``dest/<StudyInstanceUID>`` is a complete copy and is kept as is.
        Files are ``<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
        """
        dest = Path(dest)
        final = dest / study_uid
        if final.is_dir():
            return final
        dest.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=dest, prefix=f".{study_uid}.", suffix=".partial"))
        try:
            count = 0
            with self._errors("retrieve study"):
                for ds in self._client.iter_study(study_uid):
                    folder = partial / str(ds.SeriesInstanceUID)
                    folder.mkdir(exist_ok=True)
                    ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
                    count += 1
            if count == 0:
                raise DicomWebError(f"DICOMweb retrieve study failed: {_plain_url(self.url)} returned no "
                                    f"instance of study {study_uid}")
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return final

    def store(self, objects: Sequence[Path | pydicom.Dataset]) -> int:
        """STOW-RS: store files or datasets (one request per study); returns how many were stored."""
        datasets = [pydicom.dcmread(o) if isinstance(o, (str, Path)) else o for o in objects]
        by_study: dict[str, list[pydicom.Dataset]] = {}
        for ds in datasets:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
        for study_uid, group in by_study.items():
            with self._errors("store instances"):
                answer = self._client.store_instances(group, study_instance_uid=study_uid)
            failed = answer.get(_FAILED_SOPS) if answer is not None else None
            if failed is not None and len(failed.value):
                raise DicomWebError(f"DICOMweb store instances failed: {_plain_url(self.url)} refused "
                                    f"{len(failed.value)} of {len(group)} objects of study {study_uid}")
        return len(datasets)
