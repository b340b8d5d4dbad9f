"""Lava Processes of attention's operations (kept apart: Lava re-executes every file beside a Process)."""
