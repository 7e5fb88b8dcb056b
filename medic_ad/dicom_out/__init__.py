"""DICOM objects for a study's result: a TID 1500 SR, a heatmap Parametric Map, an overlay capture, and
the SR of a comparison with a prior study.

``medic-ad predict`` calls :func:`write_study_objects` and :func:`write_comparison_objects`; the
builders return the pydicom datasets. The patient and study modules of each object are copied from the source series (DICOM requires
them); that is the only place a patient field goes. See ``docs/dicom.md``.
"""

from medic_ad.dicom_out.common import Algorithm
from medic_ad.dicom_out.comparison import build_comparison_sr
from medic_ad.dicom_out.heatmap import build_heatmap_object
from medic_ad.dicom_out.overlay import build_overlay_capture
from medic_ad.dicom_out.sr import build_sr
from medic_ad.dicom_out.write import object_path, save_atomic, write_comparison_objects, write_study_objects

__all__ = ["Algorithm", "build_comparison_sr", "build_heatmap_object", "build_overlay_capture", "build_sr",
           "object_path", "save_atomic", "write_comparison_objects", "write_study_objects"]
