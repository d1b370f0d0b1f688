"""Bounds every service agrees on, so that what one service accepts the next one stores.

A uid or device id the room lets AUTH must also fit saver's columns, register's kick marks
and center's API; one constant here, imported by each of them (docs/api.md §3.2).
"""

from __future__ import annotations

MAX_ID_LEN = 128        # characters of a uid or a device id (1-128; a device may be empty)
