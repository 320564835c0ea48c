"""fieldstudio's faces: the CLI (and later the GUI) over the ``fields`` library."""
