"""The shareable dataset: defaced images, scrubbed sidecars, reduced tables; checks and QC beside it."""

from defacebench.export.check import face_problems, prepare_destination, structure_problems, write_qc_report
from defacebench.export.dataset import ExportItem, copy_documents, export_image, write_description, write_export_table, write_tables

__all__ = ["ExportItem", "copy_documents", "export_image", "face_problems", "prepare_destination", "structure_problems",
           "write_description", "write_export_table", "write_qc_report", "write_tables"]
