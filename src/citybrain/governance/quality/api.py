"""HTTP routes of governance/quality; thin callers of its service."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
