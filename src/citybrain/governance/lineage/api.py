"""HTTP routes of governance/lineage; thin callers of its service."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
