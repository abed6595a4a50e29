"""Stand-in for NVlabs torch_utils/persistence.py (test helper, written for these tests).

A class decorated with ``persistent_class`` pickles, with each instance, the source
code of the module that defines it; unpickling executes that source in a fresh
module (registered in ``sys.modules`` under a unique name) and rebuilds the
instance from it. So a network pickle carries its own network code, while the
modules that code imports (``torch_utils``, ``dnnlib``) come from whatever the
unpickling process has in ``sys.modules``.
"""

import inspect
import sys
import types
import uuid

_module_to_src = {}  # name of a module built from pickled source -> that source
_src_to_module = {}  # source -> the module built from it


def persistent_class(orig_class):
    module_name = orig_class.__module__
    module_src = _module_to_src.get(module_name) or inspect.getsource(sys.modules[module_name])

    class Decorator(orig_class):
        _orig_module_src = module_src
        _orig_class_name = orig_class.__name__

        def __reduce__(self):
            meta = dict(module_src=self._orig_module_src, class_name=self._orig_class_name, state=dict(self.__dict__))
            return _reconstruct_persistent_obj, (meta,)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    return Decorator


def _src_to_module_of(src):
    if src not in _src_to_module:
        name = "_imported_module_" + uuid.uuid4().hex
        module = types.ModuleType(name)
        sys.modules[name] = module
        _module_to_src[name] = src
        exec(src, module.__dict__)
        _src_to_module[src] = module
    return _src_to_module[src]


def _reconstruct_persistent_obj(meta):
    cls = getattr(_src_to_module_of(meta["module_src"]), meta["class_name"])
    obj = cls.__new__(cls)
    obj.__setstate__(meta["state"])
    return obj
