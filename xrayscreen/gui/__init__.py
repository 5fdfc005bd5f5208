"""PySide6 operator workstation: the only package that imports Qt."""
