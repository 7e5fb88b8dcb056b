"""Talking to a PACS: a DICOMweb client (QIDO-RS search, WADO-RS retrieve, STOW-RS store)."""

from medic_ad.pacs.dicomweb import DicomWebClient, DicomWebError, StudyRef

__all__ = ["DicomWebClient", "DicomWebError", "StudyRef"]
