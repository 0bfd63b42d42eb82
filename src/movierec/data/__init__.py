"""Data: schemas of the canonical CSVs, validated readers, dataset download/import."""

from movierec.data.readers import ReadResult, read_table
from movierec.data.schemas import SCHEMAS, FileSchema

__all__ = ["SCHEMAS", "FileSchema", "ReadResult", "read_table"]
