"""fieldstudio's library: neural fields, tasks, meshing and metrics (no screen, no CLI)."""

from fieldstudio.errors import FieldStudioError

__all__ = ["FieldStudioError"]
__version__ = "0.1.0"
