"""HTTP routes of governance/audit; thin callers of its service."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
