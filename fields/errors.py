"""errors.py
=========
The one exception type for problems a user can cause and fix (bad file, empty mesh, unwritable folder).

Faces (CLI, GUI) show ``str(err)`` without a traceback. Programming errors stay ordinary exceptions.
"""


class FieldStudioError(Exception):
    """A user-fixable problem. The message says what is wrong and what to do about it."""
