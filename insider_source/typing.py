"""Shapes of Raw Export v2 payloads (as the API document states them)."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

TExportStatus = Literal["processing", "completed", "failed", "rejected"]
TFileKind = Literal["attributes", "events"]


class TManifestFile(TypedDict):
    name: str
    url: str
    rows: int


class TManifestFiles(TypedDict):
    attributes: list[TManifestFile]
    events: list[TManifestFile]


class TExportStatusBody(TypedDict):
    export_id: str
    status: TExportStatus
    format: NotRequired[str]
    files: NotRequired[TManifestFiles]
    totals: NotRequired[dict[str, int]]
    error: NotRequired[str]
