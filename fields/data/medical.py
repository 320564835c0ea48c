"""medical.py
==========
Transitional: the medical readers moved to ``medical_readers`` and the label map -> planes logic to
``medical_planes``. This shim re-exports the names older imports use; import from the new modules instead.
"""

from fieldstudio.data.medical_planes import parse_families, volume_sections
from fieldstudio.data.medical_readers import (
    RTSTRUCT_SUFFIXES,
    VOLUME_SUFFIXES,
    LabelVolume,
    dicom_modality,
    is_label_map,
    is_medical,
    read_dicom_seg,
    read_dicom_series,
    read_label_volume,
    read_rtstruct,
    suffix_of,
)

__all__ = ["RTSTRUCT_SUFFIXES", "VOLUME_SUFFIXES", "LabelVolume", "dicom_modality", "is_label_map", "is_medical",
           "parse_families", "read_dicom_seg", "read_dicom_series", "read_label_volume", "read_rtstruct",
           "suffix_of", "volume_sections"]
