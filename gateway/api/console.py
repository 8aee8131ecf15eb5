"""The operator console page (placeholder until the console lands)."""

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
