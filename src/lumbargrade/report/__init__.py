"""Report out: report.json and label maps (and, where available, HTML, DICOM SEG and SR)."""

from .json_report import write_outputs

__all__ = ["write_outputs"]
