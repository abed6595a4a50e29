"""NVlabs network pickles (StyleGAN2-ADA, StyleGAN3, and the TensorFlow-era
StyleGAN2 release through the clone's own ``legacy.py``), each run with the code
of the clone it was loaded with.

NVlabs pickles store references to the Python modules of the repository they
were written by (``torch_utils.persistence`` rebuilds their classes from source
kept in the pickle; that source imports ``dnnlib``, ``torch_utils`` and friends).
Those names are global to a Python process: once one clone's ``torch_utils`` sits
in ``sys.modules``, a second clone's pickle would silently run with it. So every
clone gets its own set of modules (:class:`NVlabsCode`), swapped into
``sys.modules`` only while that clone's code runs (loading, mapping, rendering)
and swapped out afterwards; whatever was there before (another clone's modules,
or the user's own ``training`` package) is put back.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch

from .stylegan2 import StyleGAN2Adapter

# the top-level modules NVlabs pickles and legacy.py import; a clone's other top-level
# packages and modules (directories with an __init__.py) are kept apart the same way
NVLABS_MODULES = ("dnnlib", "torch_utils", "training", "legacy")
REQUIRED_DIRS = ("dnnlib", "torch_utils")

_LOCK = threading.RLock()  # sys.modules is process-global: one clone's code runs at a time
_CLONES: dict[Path, "NVlabsCode"] = {}


def _location(module: ModuleType) -> str | None:
    """The file a module was imported from (a package's directory for namespace packages)."""
    file = getattr(module, "__file__", None)
    if file:
        return file
    paths = list(getattr(module, "__path__", None) or [])
    return paths[0] if paths else None


class NVlabsCode:
    """The modules of one NVlabs clone, kept out of ``sys.modules`` except inside
    ``with code:``.

    Entering (re-entrant; one process-wide lock serialises threads): every module
    whose top-level name the clone provides (``names``: dnnlib, torch_utils,
    training, legacy and the clone's other top-level packages) is taken out of
    ``sys.modules`` and this clone's modules go in; ``root`` is put first on
    ``sys.path``, so modules not imported yet come from the clone. Leaving keeps the
    clone's modules (``modules``) for next time and restores ``sys.modules`` and
    ``sys.path`` as they were. Contexts of different clones nest like a stack. Use
    :func:`clone_code` to get the one instance per clone directory.
    """

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        names = set(NVLABS_MODULES)
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name.isidentifier() and (entry / "__init__.py").is_file():
                names.add(entry.name)
        self.names = frozenset(names)
        self.modules: dict[str, ModuleType] = {}
        self._depth = 0
        self._saved: dict[str, ModuleType] = {}

    def owns(self, module_name: str) -> bool:
        return module_name.partition(".")[0] in self.names

    def _take_owned(self) -> dict[str, ModuleType]:
        return {name: sys.modules.pop(name) for name in list(sys.modules) if self.owns(name)}

    def __enter__(self) -> "NVlabsCode":
        _LOCK.acquire()
        self._depth += 1
        if self._depth == 1:
            self._saved = self._take_owned()
            sys.modules.update(self.modules)
            sys.path.insert(0, str(self.root))
            importlib.invalidate_caches()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._depth -= 1
            if self._depth == 0:
                if str(self.root) in sys.path:
                    sys.path.remove(str(self.root))
                self.modules = self._take_owned()
                sys.modules.update(self._saved)
                self._saved = {}
        finally:
            _LOCK.release()

    def foreign_modules(self) -> dict[str, str | None]:
        """The clone-named modules that were *not* imported from under ``root``
        (name -> where they came from): e.g. a ``training`` package elsewhere on
        ``sys.path`` that shadowed a clone directory lacking ``__init__.py``."""
        foreign = {}
        for name, module in sorted(self.modules.items()):
            where = _location(module)
            if where is None or not Path(where).resolve().is_relative_to(self.root):
                foreign[name] = where
        return foreign

    def __deepcopy__(self, memo) -> "NVlabsCode":
        return self  # one set of modules per clone and process (a deep-copied generator shares it)

    def __repr__(self) -> str:
        return f"NVlabsCode({str(self.root)!r}, {len(self.modules)} modules)"


def clone_code(root: str | os.PathLike) -> NVlabsCode:
    """The :class:`NVlabsCode` of the clone at ``root`` (one per resolved directory).

    Raises ``FileNotFoundError`` when ``root`` lacks ``dnnlib/`` or ``torch_utils/``."""
    root = Path(root).expanduser()
    lacking = [d for d in REQUIRED_DIRS if not (root / d).is_dir()]
    if lacking:
        raise FileNotFoundError(f"load_nvlabs: {root} is not a clone of NVlabs stylegan2-ada-pytorch or stylegan3 "
                                f"(it lacks {', '.join(d + '/' for d in lacking)})")
    with _LOCK:
        resolved = root.resolve()
        if resolved not in _CLONES:
            _CLONES[resolved] = NVlabsCode(resolved)
        return _CLONES[resolved]


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _unpickle(path: Path, code: NVlabsCode) -> object:
    """The pickle's contents, read inside ``code``: with the clone's
    ``legacy.load_network_pkl`` when the clone has ``legacy.py`` (it also converts
    TensorFlow-era pickles), else -- or if that fails -- with plain unpickling."""
    tried = []
    if (code.root / "legacy.py").is_file():
        try:
            legacy = importlib.import_module("legacy")
        except Exception as err:
            tried.append(f"the clone's legacy.py cannot be imported ({_describe(err)})")
        else:
            try:
                with open(path, "rb") as f:
                    return legacy.load_network_pkl(f)
            except Exception as err:
                tried.append(f"legacy.load_network_pkl: {_describe(err)}")
    else:
        tried.append("the clone has no legacy.py (needed for TensorFlow-era pickles)")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as err:
        tried.append(f"plain unpickling: {_describe(err)}")
    raise ValueError(f"load_nvlabs: cannot load {path} with the code in {code.root}: " + "; ".join(tried))


def load_nvlabs(path: str | os.PathLike, nvlabs_code: str | os.PathLike, *, device=None) -> StyleGAN2Adapter:
    """An NVlabs network pickle's ``G_ema``, as a :class:`StyleGAN2Adapter`.

    Supported: StyleGAN2-ADA (``stylegan2-ada-pytorch``) and StyleGAN3 pickles,
    conditional ones included (pass ``class_idx`` when sampling), and whatever else
    the clone's own ``legacy.load_network_pkl`` reads -- notably the TensorFlow-era
    StyleGAN2 release (``stylegan2-ffhq-config-f.pkl``), which it converts without
    TensorFlow. These pickles refer to their repository's Python code, so
    ``nvlabs_code`` names the user's clone (holding ``dnnlib/`` and
    ``torch_utils/``); that code is under NVIDIA's licence and never copied into
    this package. Unpickling runs code from the file: load only pickles you trust.

    Several clones in one process: each pickle is loaded, mapped and rendered with
    the modules of its own clone (see :class:`NVlabsCode`); the clone's modules are
    not left in ``sys.modules``. After loading, every module of a clone-provided
    name must have been imported from under ``nvlabs_code``.

    Raises ``FileNotFoundError`` (missing file, not a clone) and ``ValueError``
    naming the file (cannot be loaded with that clone -- the message gives what
    each loader said --, no ``G_ema`` module, or modules resolved outside the clone).
    """
    code = clone_code(nvlabs_code)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"load_nvlabs: {path} does not exist")
    with code:
        data = _unpickle(path, code)
    foreign = code.foreign_modules()
    if foreign:
        listed = ", ".join(f"{name} from {where}" for name, where in list(foreign.items())[:4])
        raise ValueError(f"load_nvlabs: loading {path} resolved modules outside nvlabs_code {code.root}: {listed}. "
                         "Does the clone have an __init__.py in each of its packages?")
    G = data.get("G_ema") if isinstance(data, dict) else None
    if not isinstance(G, torch.nn.Module):
        what = f"a dict without a 'G_ema' module (keys: {sorted(map(str, data))[:6]})" if isinstance(data, dict) \
            else f"a {type(data).__name__}"
        raise ValueError(f"load_nvlabs: {path} is not an NVlabs network pickle: it holds {what}")
    with code:
        return StyleGAN2Adapter(G, device=device, code=code)
