"""Compiled kernels that load without importing numba.

Importing numba costs 0.2-0.3 s, and loading even a cached kernel 0.1 s more (its registries,
its runtime's own compile): on MovieLens-100K, a third of a ``movierec evaluate``. A
:class:`LeanKernel` is a numba ``cfunc`` (a C-callable function). The first process that needs
it has numba compile it and keeps the machine code (an ELF object of a few KB) on disk; later
processes map that object with llvmlite's MCJIT (llvmlite, numba's own code generator, imports
in 0.03 s) and call it through ctypes, which lets go of the GIL while the kernel runs.

The object refers to a few symbols outside it, on the error path of numba's cfunc wrapper
(which the kernels here never take: no bounds checks, nothing raised): Python's C API and
numba's helper and runtime functions. They are bound to the addresses numba binds them to
(numba's two C extension modules are loaded by path, without the numba package; Python's
exception types are the objects themselves, as numba does). If any symbol cannot be bound, or
anything else is off (not Linux, a torn or foreign file, another numba, llvmlite, CPU or
``NUMBA_*`` setting: all in the file's key), the caller's numba kernel runs instead, as before.

Where the objects are kept: ``$NUMBA_CACHE_DIR/movierec`` when that is set (as numba, nowhere
else then), else the package's ``__pycache__`` (beside numba's own cache of the other kernels),
else ``~/.cache/movierec/kernels``; the first writable one gets a new object (atomically).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import struct
import sys
import threading
from pathlib import Path

#: environment settings that change no machine code (left out of the key)
_NOT_CODEGEN = {"NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR", "NUMBA_THREADING_LAYER", "NUMBA_DEBUG_CACHE"}
_LOCK = threading.Lock()
_ENGINES: list = []  # the MCJIT engines and target machines the loaded code lives in
_KERNELS: list[LeanKernel] = []  # every kernel declared (those of one builder module are kept together)


class LeanKernel:
    """A numba ``cfunc`` called through ctypes, loaded from its kept machine code when it can be.

    ``builder``: ``"module:attribute"`` of the cfunc (that module imports numba; it is imported
    only when no kept object loads). ``sources``: the modules whose code the kernel compiles
    (their text is part of the key). ``restype``/``argtypes``: the ctypes signature, matching
    the cfunc's. :meth:`function` gives the ctypes function, or None where lean kernels are off
    (the caller then runs its numba kernel).
    """

    def __init__(self, builder: str, sources: tuple[str, ...], restype, argtypes: tuple) -> None:
        self.builder = builder
        self.module, self.attribute = builder.split(":")
        self.sources = sources
        self.prototype = ctypes.CFUNCTYPE(restype, *argtypes)
        self.name = f"{self.module.rsplit('.', 1)[-1]}.{self.attribute}"
        self._fn = None
        self._cfunc = None  # numba's cfunc, when compiled in this process (keeps its code alive)
        self._tried = False
        self.loaded_from: str | None = None  # "disk" (the kept object) or "numba" (compiled here)
        _KERNELS.append(self)

    def function(self):
        """The ctypes function, or None where lean kernels are off (not Linux, no llvmlite,
        ``NUMBA_DISABLE_JIT``): the kept object when one loads, else numba compiles the cfunc
        (once: its object is kept for the next process)."""
        if not self._tried:
            with _LOCK:
                if not self._tried:
                    self._fn = self._resolve()
                    self._tried = True
        return self._fn

    def _resolve(self):
        if not sys.platform.startswith("linux") or os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
            return None
        try:
            import llvmlite.binding as llvm
        except ImportError:  # pragma: no cover - numba needs llvmlite
            return None
        key = self.key(llvm)
        if key is None:
            return None
        for folder in cache_dirs():
            fn = self._load(folder / self.file_name(key), key, llvm)
            if fn is not None:
                self.loaded_from = "disk"
                return fn
        return self._build(key)

    def file_name(self, key: str) -> str:
        return f"{self.name}-{key[:20]}.lean.o"

    def key(self, llvm) -> str | None:
        """What the machine code depends on: the kernel's source, numba's and llvmlite's
        versions, the CPU and numba's code-generation settings."""
        env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("NUMBA_") and k not in _NOT_CODEGEN))
        shared = _shared_digest((*self.sources, self.module), env, llvm)
        if shared is None:
            return None
        own = repr((self.builder, self.prototype._restype_, self.prototype._argtypes_)).encode()
        return hashlib.sha256(shared.encode() + own).hexdigest()

    def _load(self, path: Path, key: str, llvm):
        """The ctypes function of the object kept at ``path``, or None (absent, another key,
        torn, or a symbol it needs that cannot be bound)."""
        try:
            data = path.read_bytes()
            head, obj = data.split(b"\n", 1)
            meta = json.loads(head)
            if meta.get("key") != key or meta.get("sha256") != hashlib.sha256(obj).hexdigest():
                return None
            symbols = {name: bind_symbol(name, llvm) for name in undefined_symbols(obj)}
            if not all(symbols.values()):
                return None
            for name, address in symbols.items():
                if not llvm.address_of_symbol(name):
                    llvm.add_symbol(name, address)
            return self.prototype(_map_object(obj, meta["symbol"], llvm))
        except Exception:  # noqa: BLE001 - whatever is wrong with a kept object, numba decides
            return None

    def _build(self, key: str):
        """Have numba compile the cfunc; keep its object for the next process. None if numba
        cannot (the caller's numba kernel then runs, and reports what is wrong)."""
        import logging

        logging.getLogger(__name__).debug("compiling %s's kernels (once: their machine code is kept in %s)",
                                          self.module, cache_dirs()[0])
        try:
            cf = getattr(importlib.import_module(self.module), self.attribute)
        except Exception:  # noqa: BLE001 - numba's own kernel reports it
            return None
        self._cfunc = cf
        self._keep(cf, key)
        # importing the module compiled its other cfuncs too: keep theirs now, not one compile each
        import llvmlite.binding as llvm

        for other in _KERNELS:
            if other is not self and other.module == self.module:
                other_key = other.key(llvm)
                if other_key is not None and not any((d / other.file_name(other_key)).exists() for d in cache_dirs()):
                    other._keep(getattr(sys.modules[self.module], other.attribute), other_key)
        self.loaded_from = "numba"
        return self.prototype(cf.address)

    def _keep(self, cf, key: str) -> None:
        try:
            _name, kind, (obj, _bitcode) = cf._library.serialize_using_object_code()
            if kind == "object":
                save(self.file_name(key), key, cf.native_name, obj)
        except Exception:  # noqa: BLE001 - nothing kept: the next process compiles again
            pass


@functools.lru_cache(maxsize=8)
def _shared_digest(modules: tuple[str, ...], env: tuple, llvm) -> str | None:
    """The part of the kernels' keys they share, read once per process: their modules' source,
    numba's and llvmlite's versions, the CPU and the ``NUMBA_*`` settings (``env``)."""
    import llvmlite

    h = hashlib.sha256()
    try:
        for mod in modules:
            h.update(Path(importlib.util.find_spec(mod).origin).read_bytes())
        h.update((Path(importlib.util.find_spec("numba").origin).parent / "_version.py").read_bytes())
    except (AttributeError, OSError, ImportError, ValueError):
        return None
    h.update(repr((llvmlite.__version__, llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), env,
                   sys.version_info[:2])).encode())
    return h.hexdigest()


def cache_dirs() -> list[Path]:
    """Where kept objects are looked for, in order (the first writable one gets new ones): as
    numba does, only ``$NUMBA_CACHE_DIR`` where that is set."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return [Path(os.environ["NUMBA_CACHE_DIR"]) / "movierec"]
    return [Path(__file__).parent / "__pycache__",
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "movierec" / "kernels"]


def save(file_name: str, key: str, symbol: str, obj: bytes) -> Path | None:
    """Keep ``obj`` in the first writable cache folder (written whole, then renamed)."""
    import tempfile

    head = json.dumps({"key": key, "symbol": symbol, "sha256": hashlib.sha256(obj).hexdigest()}).encode()
    for folder in cache_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lean-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(head + b"\n" + obj)
                os.chmod(tmp, 0o644)  # mkstemp's file is its owner's only; the object is not secret
                os.replace(tmp, folder / file_name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return folder / file_name
        except OSError:
            continue
    return None


def undefined_symbols(obj: bytes) -> list[str]:
    """The symbols a relocatable ELF64 (little-endian) object refers to but does not define."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise ValueError("not a little-endian ELF64 object")
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    names = []
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 2:  # SHT_SYMTAB
            continue
        strings = sections[link][4]
        for j in range(size // entsize):
            name, _info, _other, shndx, _value, _size = struct.unpack_from("<IBBHQQ", obj, offset + j * entsize)
            if shndx == 0 and name:  # SHN_UNDEF
                names.append(obj[strings + name:obj.index(b"\0", strings + name)].decode())
    return names


def bind_symbol(name: str, llvm) -> int | None:
    """The address numba gives ``name`` (or one LLVM already knows), None if unknown."""
    known = llvm.address_of_symbol(name)
    if known:
        return known
    if name.startswith("PyExc_"):  # numba binds an exception's symbol to the type object itself
        import builtins

        obj = getattr(builtins, name[len("PyExc_"):], None)
        return id(obj) if isinstance(obj, type) and issubclass(obj, BaseException) else None
    if name.startswith("numba_"):
        return _numba_helpers("_helperlib").get(name[len("numba_"):])
    if name.startswith("NRT_"):
        return _numba_helpers("core/runtime/_nrt_python").get(name[len("NRT_"):])
    try:
        return ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value
    except AttributeError:
        return None


_HELPERS: dict[str, dict] = {}


def _numba_helpers(relative: str) -> dict:
    """``c_helpers`` (name -> address) of one of numba's C extension modules, loaded from its
    file without the numba package (and left out of ``sys.modules``: numba, when imported
    later, gets the same module, as Python keeps one copy of an extension's state)."""
    if relative not in _HELPERS:
        import importlib.machinery

        folder = Path(importlib.util.find_spec("numba").origin).parent / relative
        name = "numba." + relative.replace("/", ".")
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder.with_name(folder.name + suffix)
            if path.exists():
                before = sys.modules.get(name)
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                if before is None:
                    sys.modules.pop(name, None)
                _HELPERS[relative] = dict(module.c_helpers)
                break
        else:
            _HELPERS[relative] = {}
    return _HELPERS[relative]


def _map_object(obj: bytes, symbol: str, llvm) -> int:
    """Map ``obj`` into a new MCJIT engine for this host; the address of ``symbol``."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                           features=llvm.get_host_cpu_features().flatten(),
                                           codemodel="jitdefault", jit=True)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    address = engine.get_function_address(symbol)
    if not address:
        raise LookupError(symbol)
    _ENGINES.append((machine, engine))
    return address
