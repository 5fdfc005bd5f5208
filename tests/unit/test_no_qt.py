import subprocess
import sys


def test_core_imports_no_qt():
    code = (
        "import sys, xrayscreen, xrayscreen.cli, xrayscreen.model.bundle, xrayscreen.inference.windows;"
        "import pkgutil, importlib, xrayscreen as x;"
        "mods=[m.name for m in pkgutil.walk_packages(x.__path__, 'xrayscreen.') if not m.name.startswith('xrayscreen.gui') and not m.name.endswith('__main__')];"
        "[importlib.import_module(m) for m in mods];"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('PySide6','shiboken6','PyQt5','PyQt6','qtpy','superqt')];"
        "print(len(mods)); assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 5
