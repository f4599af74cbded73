"""The receiver's checks of a generator bundle archive (or an unpacked bundle folder).

``mammoshare verify FILE.zip|DIR [--schema FILE] [--expect-sha256 HASH] [--trusted-key PUB]``
reports every check as OK, FAIL or SKIPPED with its reason, and exits 0 only when none failed:

============================  ====================================================================
``archive sha256``            the archive's SHA-256 against the one the sender gave out of band
``paths``                     zip entries: no absolute paths, drive letters, backslashes, ``..`` or
                              empty parts, no symbolic links or other special files (zip external
                              attributes), no duplicate names (also ignoring case), no encryption,
                              no unknown compression, no oversized entries
``allow-list``                no file outside the archive allow-list of :mod:`.archive`
``required files``            metadata, inference config, ``model.pt``, model card, licence, manifest
``manifest``                  every file listed with a matching SHA-256 and size, no unlisted file
``signature``                 the Ed25519 signature of the manifest with ``--trusted-key``; a signed
                              archive checked without a key is reported as NOT checked (SKIPPED)
``metadata schema``           ``configs/metadata.json`` against MONAI's metadata schema (``--schema``;
                              default the copy shipped with mammoshare, so nothing is downloaded);
                              a missing schema file falls back to MONAI's required keys, and the
                              report says the full schema check was skipped
``metadata``                  version in the changelog, ``network_data_format`` of a generator,
                              ``output_decoding``, the ``snapshots`` list against the files
``config allow-list``         every expression and ``_target_`` of every JSON config (the rule below)
``weights``                   every ``.pt`` loads with ``torch.load(weights_only=True)`` and holds
                              plain generator tensors only (no discriminator/critic, no optimizer)
``network``                   the network rebuilt from the packed ``inference.json`` (only the
                              allow-listed torch layer classes of :func:`.selfcontained.build_network`,
                              only after the config check passed) loads ``model.pt`` and every
                              snapshot strictly, and its input/output shapes match
                              ``network_data_format`` (input ``image``: latent size x [1, 1];
                              output ``pred``: channels x spatial shape)
============================  ====================================================================

Nothing from the bundle runs during verification: files are read from the zip into memory (never
extracted), JSON is parsed with :mod:`json`, weights are read with ``weights_only=True``, configs
are parsed with :mod:`ast` and never evaluated, ``monai.bundle`` is never called on them, and no
module a config names is imported.

The config allow-list rule
--------------------------
MONAI evaluates every string that starts with ``$`` with Python's ``eval`` and imports and calls
every ``_target_``. A config passes only when, in every JSON config of the bundle (``metadata.json``
included: MONAI loads it as ``_meta_``):

- every ``_target_`` is a dotted name rooted in ``torch``, ``monai`` or ``numpy`` (or an ``@id``
  reference, or an expression that passes the rule below); ``_mode_`` is ``default`` or
  ``callable`` (not ``debug``), and no ``_debug_`` or unknown ``_special_`` key is present;
- every ``$`` expression, after each MONAI reference ``@id`` is replaced by a placeholder name,
  parses as a single Python expression (so no ``import`` statement: ``$import os`` fails) and uses
  only: constants; the names ``torch``, ``monai``, ``numpy``, ``np``, the placeholders and the
  harmless builtins ``int float str bool len min max abs round sum range list tuple dict zip map
  enumerate sorted reversed``; attribute access, calls, subscripts, arithmetic, comparisons,
  boolean and conditional expressions, containers, ``*`` unpacking and f-strings. Lambdas,
  comprehensions, assignment expressions, ``await``/``yield`` are refused;
- no name or attribute starts with an underscore (``__import__``, ``__class__``, ``torch._C``...);
- no name or attribute is one of the escape hatches :data:`DENIED_NAMES` (``os``, ``sys``,
  ``subprocess``, ``builtins``, ``importlib``, ``pickle``, ``eval``, ``exec``, ``open``,
  ``getattr``, ``system``, ``optional_import``, ``instantiate``, ``locate``, ``run_cmd``...), and
  no dotted name starts with one of :data:`DENIED_PREFIXES` (``monai.bundle``, ``monai.apps``,
  ``monai.utils.module``, ``torch.hub``, ``torch.jit``, ``torch.package``, ``torch.distributed``,
  ``torch.utils.cpp_extension``, ``torch.serialization``, ``numpy.ctypeslib``...), nor is one of
  the pickle-backed datasets of :data:`DENIED_TARGETS`;
- ``torch.load`` appears only as a direct call (or ``_target_``) with ``weights_only=True``; in any
  call or component, a ``weights_only`` argument must be ``True``, an ``allow_pickle`` argument
  ``False``, and ``pickle_module`` is refused (so ``numpy.load(..., allow_pickle=True)`` or a
  MONAI reader with ``allow_pickle`` fail);
- ``eval`` and ``type`` are refused as names (the builtins) but allowed as attributes
  (``@network.eval()``, ``tensor.type``);
- an ``@id`` reference stands as a name in the expression, never inside a string literal (MONAI
  substitutes references as code text, so a quoted ``'@id'`` would change the code it runs);
- a ``%`` macro may only refer to the same file (``%#id``), never load another file.

This is an allow-list against running code that the bundle brings (imports, ``eval``, shells,
pickles): it is not a sandbox. An allowed MONAI or torch call can still read or write files the
user can (the packed config writes PNG files and a datalist into ``output_dir``). The signature
checked against a key obtained from the sender by a trusted channel, or the archive SHA-256
compared out of band, is what establishes that the bundle comes from the sender unchanged.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import stat
import sys
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .archive import (
    INFERENCE,
    MANIFEST,
    MANIFEST_FORMAT,
    METADATA,
    MODEL,
    REQUIRED_FILES,
    SIGNATURE,
    SNAPSHOT_PATTERN,
    TORCHSCRIPT,
    ExchangeError,
    _add_verify_options,
    archive_sha256,
    is_allowed_name,
    key_fingerprint,
    load_generator_tensors,
    load_public_key,
    verify_signature,
)

__all__ = [
    "Check",
    "VerifyReport",
    "verify_bundle",
    "check_config",
    "check_expression",
    "check_metadata",
    "validate_metadata_schema",
    "metadata_problems",
    "add_verify_parser",
    "ALLOWED_ROOTS",
    "SAFE_BUILTINS",
    "DENIED_NAMES",
    "DENIED_PREFIXES",
    "DENIED_TARGETS",
    "MONAI_REQUIRED_METADATA_KEYS",
]

OK, FAIL, SKIPPED = "OK", "FAIL", "SKIPPED"
#: the check that ``unpack --trust`` may waive
CONFIG_CHECK = "config allow-list"

#: names an expression may start from (MONAI's default globals)
ALLOWED_ROOTS = frozenset({"torch", "monai", "numpy", "np"})
#: builtins an expression may call
SAFE_BUILTINS = frozenset(
    {"int", "float", "str", "bool", "len", "min", "max", "abs", "round", "sum", "range", "list", "tuple", "dict", "zip", "map", "enumerate", "sorted", "reversed"}
)
#: names and attributes that lead out of torch/monai/numpy into code execution, imports or pickles
DENIED_NAMES = frozenset(
    {
        # modules
        "os", "sys", "subprocess", "builtins", "importlib", "imp", "pickle", "cPickle", "dill", "marshal", "shelve",
        "ctypes", "cffi", "socket", "pty", "pdb", "code", "codeop", "runpy", "pydoc", "inspect", "operator", "types",
        "gc", "pkgutil", "zipimport", "shutil", "tempfile", "pathlib", "io", "glob", "signal", "threading",
        "multiprocessing", "concurrent", "asyncio", "webbrowser", "urllib", "http", "requests", "ftplib", "smtplib",
        "tarfile", "zipfile", "platform", "shlex", "ctypeslib", "distutils", "setuptools", "pip",
        # builtins and functions
        "eval", "exec", "compile", "open", "input", "breakpoint", "getattr", "setattr", "delattr", "hasattr",
        "globals", "locals", "vars", "dir", "help", "exit", "quit", "type", "object", "super", "memoryview",
        "system", "popen", "spawn", "spawnl", "spawnv", "execv", "execve", "execl", "fork", "kill", "remove",
        "unlink", "rmdir", "rmtree", "load_library", "load_inline", "optional_import", "instantiate", "locate",
        "require_pkg", "run_cmd", "import_module", "attrgetter", "methodcaller", "add_safe_globals",
        "safe_globals", "run_debug", "run_eval", "fromregex", "load_state_dict_from_url", "load_url",
        "download_url_to_file", "download_url", "download_and_extract", "extractall",
    }
)
#: dotted-name prefixes that load code, run other configs, download or unpickle
DENIED_PREFIXES = (
    "monai.bundle", "monai.apps", "monai.utils.module", "monai.utils.misc", "monai.auto3dseg", "monai.fl",
    "torch.hub", "torch.utils.model_zoo", "torch.jit", "torch.package", "torch.distributed", "torch.multiprocessing", "torch.serialization",
    "torch.utils.cpp_extension", "torch.utils.data.datapipes", "torch.library", "torch.ops", "torch.classes",
    "torch.compiler", "torch.fx", "torch.onnx", "torch.export", "torch.backends", "torch.utils.benchmark",
    "numpy.ctypeslib", "numpy.f2py", "numpy.distutils", "numpy.testing", "numpy.lib.format", "np.ctypeslib",
    "np.f2py", "np.distutils", "np.testing", "np.lib.format",
)
#: MONAI datasets that unpickle their cache files
DENIED_TARGETS = frozenset({"PersistentDataset", "LMDBDataset", "CacheNTransDataset", "GDSDataset"})
#: MONAI's special keys of config components
_COMPONENT_KEYS = frozenset({"_target_", "_disabled_", "_requires_", "_desc_", "_mode_"})
#: denied as names (the builtins) but common harmless methods: ``module.eval()``, ``tensor.type``, ``device.type``
_HARMLESS_ATTRIBUTES = frozenset({"eval", "type"})
_ALLOWED_DIRS = frozenset({"configs/", "models/", "models/snapshots/", "docs/"})
_ALLOWED_MODES = frozenset({"default", "callable"})
_REF = re.compile(r"@(?:\w|#|::)*")
_PLACEHOLDER = "mammoshare_ref_"
_ALLOWED_NODES = (
    ast.Expression, ast.Call, ast.keyword, ast.Attribute, ast.Name, ast.Load, ast.Constant, ast.BinOp, ast.UnaryOp,
    ast.BoolOp, ast.Compare, ast.IfExp, ast.Subscript, ast.Slice, ast.Tuple, ast.List, ast.Dict, ast.Set, ast.Starred,
    ast.JoinedStr, ast.FormattedValue, ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)
#: MONAI's required metadata keys (the ``required`` list of its schema), for when no schema file is at hand
MONAI_REQUIRED_METADATA_KEYS = (
    "schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
    "description", "authors", "copyright", "network_data_format",
)
#: the largest entry read into memory (a generator of the study is ~51 MB)
MAX_ENTRY_BYTES = 2 << 30
MAX_JSON_BYTES = 16 << 20
MAX_ENTRIES = 4096


# --- the config allow-list --------------------------------------------------------------------


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ``["a", "b", "c"]`` when rooted in a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _part_problems(parts: list[str]) -> list[str]:
    """Each name or attribute on its own: no underscore names, no escape hatches."""
    dotted = ".".join(parts)
    problems = []
    for part in parts:
        if part.startswith("_"):
            problems.append(f"{dotted!r}: names starting with an underscore are not allowed ({part!r})")
        elif part in DENIED_NAMES:
            problems.append(f"{dotted!r}: {part!r} is not allowed (import, code execution, file or process access)")
    return problems


def _prefix_problems(parts: list[str]) -> list[str]:
    """A whole dotted name: no denied module trees, no unpickling datasets."""
    dotted = ".".join(parts)
    problems = []
    for prefix in DENIED_PREFIXES:
        if dotted == prefix or dotted.startswith(prefix + "."):
            problems.append(f"{dotted!r}: {prefix} is not allowed (loads code, runs other configs, downloads or unpickles)")
    if parts[-1] in DENIED_TARGETS:
        problems.append(f"{dotted!r}: datasets that unpickle their cache are not allowed")
    return problems


def _loader_problems(parts: list[str] | None, keywords: dict[str, Any], where: str) -> list[str]:
    """Unpickling switches: ``torch.load`` needs ``weights_only=True``; anywhere, a ``weights_only``
    argument must be True, an ``allow_pickle`` argument False, and no ``pickle_module`` is given."""
    problems = []
    if "pickle_module" in keywords:
        problems.append(f"{where}: pickle_module is not allowed")
    if "weights_only" in keywords and keywords["weights_only"] is not True:
        problems.append(f"{where}: weights_only must be True")
    if "allow_pickle" in keywords and keywords["allow_pickle"] is not False:
        problems.append(f"{where}: allow_pickle must be False")
    if parts is not None and ".".join(parts) == "torch.load" and keywords.get("weights_only") is not True:
        problems.append(f"{where}: torch.load is allowed only with weights_only=True")
    return list(dict.fromkeys(problems))


def check_expression(expression: str) -> list[str]:
    """Problems of one MONAI ``$`` expression (without the ``$``) under the allow-list rule; empty if allowed."""
    names: dict[str, str] = {}

    def placeholder(match: re.Match) -> str:
        key = f"{_PLACEHOLDER}{len(names)}"
        names[key] = match.group(0)
        return key

    source = _REF.sub(placeholder, expression)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError:
        try:
            module = ast.parse(source.strip(), mode="exec")
        except SyntaxError as e:
            return [f"not a valid Python expression ({e.msg})"]
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(module)):
            return ["import statements are not allowed"]
        return ["statements are not allowed; a single expression is expected"]
    problems: list[str] = []
    as_names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    if set(names) - as_names:
        # MONAI substitutes a reference as code text even inside a string literal
        problems.append("an @reference inside a string literal is not allowed")
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    loaders = ("torch.load", "numpy.load", "np.load")
    called_loaders: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            problems.append(f"{type(node).__name__} is not allowed (no lambda, comprehension, assignment, await or yield)")
        elif isinstance(node, ast.Name):
            if node.id in names:
                continue
            if node.id.startswith("_"):
                problems.append(f"name {node.id!r} is not allowed (underscore names)")
            elif node.id in DENIED_NAMES:
                problems.append(f"name {node.id!r} is not allowed (import, code execution, file or process access)")
            elif node.id not in ALLOWED_ROOTS and node.id not in SAFE_BUILTINS:
                problems.append(
                    f"name {node.id!r} is not allowed: expressions may start only from torch, monai, numpy, "
                    "@references and a few harmless builtins"
                )
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                problems.append(f"attribute {node.attr!r} is not allowed (underscore attributes)")
            elif node.attr in DENIED_NAMES and node.attr not in _HARMLESS_ATTRIBUTES:
                problems.append(f"attribute {node.attr!r} is not allowed (import, code execution, file or process access)")
            parts = _chain(node)
            if parts is not None and id(node) not in inner and parts[0] in ALLOWED_ROOTS:
                problems += _prefix_problems(parts)
        elif isinstance(node, ast.Call):
            parts = _chain(node.func)
            where = ".".join(parts) if parts is not None else "a call"
            if parts is not None and where in loaders:
                called_loaders.add(id(node.func))
            keywords: dict[str, Any] = {}
            for kw in node.keywords:
                if kw.arg is None:
                    if parts is not None and where in loaders:
                        problems.append(f"{where}: **keyword unpacking is not allowed in a call to a loader")
                else:
                    keywords[kw.arg] = kw.value.value if isinstance(kw.value, ast.Constant) else object()
            problems += _loader_problems(parts, keywords, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in called_loaders:
            parts = _chain(node)
            if parts is not None and ".".join(parts) in loaders:
                problems.append(f"{'.'.join(parts)} is allowed only as a direct call with safe arguments")
    return list(dict.fromkeys(problems))


def _check_target(target: Any, component: dict, where: str) -> list[str]:
    if isinstance(target, str) and (target.startswith("@") or target.startswith("$")):
        return []  # a reference, or an expression checked as a string value
    if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", target):
        return [f"{where}: _target_ {target!r} must be a full dotted name (module.Class) rooted in torch, monai or numpy"]
    parts = target.split(".")
    if parts[0] not in ALLOWED_ROOTS:
        return [f"{where}: _target_ {target!r} is not allowed: only torch.*, monai.* and numpy.* components"]
    problems = [f"{where}: _target_ {p}" for p in _part_problems(parts) + _prefix_problems(parts)]
    if target == "torch.load" and component.get("weights_only") is not True:
        problems.append(f"{where}: _target_ torch.load is allowed only with weights_only=True")
    return problems


def check_config(config: Any, name: str = "config") -> list[str]:
    """Problems of a parsed JSON config under the allow-list rule (see the module docstring)."""
    problems: list[str] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            problems.extend(_loader_problems(None, value, where))
            if "_target_" in value:
                problems.extend(_check_target(value["_target_"], value, where))
                mode = value.get("_mode_", "default")
                if mode not in _ALLOWED_MODES:
                    problems.append(f"{where}: _mode_ {mode!r} is not allowed (only {sorted(_ALLOWED_MODES)})")
            for key, item in value.items():
                key = str(key)
                if key.startswith("_") and key.endswith("_") and len(key) > 2 and key not in _COMPONENT_KEYS and not (key == "_meta_" and where == name):
                    problems.append(f"{where}#{key}: the special key {key!r} is not allowed (e.g. _debug_ starts a debugger)")
                walk(item, f"{where}#{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}#{i}")
        elif isinstance(value, str):
            if value.startswith("$"):
                for problem in check_expression(value[1:]):
                    problems.append(f"{where}: {_short(value)}: {problem}")
            elif value.startswith("%"):
                if re.search(r"\.(json|ya?ml)", value, re.IGNORECASE):
                    problems.append(f"{where}: {_short(value)}: a % macro that loads another file is not allowed")

    walk(config, name)
    return problems


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# --- metadata ---------------------------------------------------------------------------------


def _default_schema() -> Path:
    from mammoshare.bundle import SCHEMA_FILE

    return Path(SCHEMA_FILE)


def validate_metadata_schema(metadata: Any, schema: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(status, detail)`` of the metadata against the MONAI schema file (default: the shipped
    copy); a missing schema file falls back to MONAI's required keys (status SKIPPED for the full
    check, the detail says what was checked and whether the required keys are there)."""
    path = Path(schema) if schema is not None else _default_schema()
    if not isinstance(metadata, dict):
        return FAIL, "the metadata is not a JSON object"
    if not path.is_file():
        missing = [k for k in MONAI_REQUIRED_METADATA_KEYS if k not in metadata]
        keys = f"required keys MISSING: {missing}" if missing else "MONAI's required keys are present"
        return (FAIL if missing else SKIPPED), (
            f"schema file {path} not found: the full schema check was SKIPPED; checked MONAI's required keys only: {keys}"
        )
    try:
        schema_obj = json.loads(path.read_text(encoding="utf-8"))
        import jsonschema

        validator_cls = jsonschema.validators.validator_for(schema_obj)
        validator_cls.check_schema(schema_obj)
        errors = sorted(validator_cls(schema_obj).iter_errors(metadata), key=lambda e: list(e.absolute_path))
    except Exception as e:  # unreadable schema, invalid schema
        return FAIL, f"schema file {path} could not be used ({type(e).__name__}: {e})"
    if errors:
        shown = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:5])
        return FAIL, f"{len(errors)} error(s) against schema {path.name}: {shown}"
    return OK, f"valid against the MONAI schema {path.name} ({path})"


def metadata_problems(metadata: Any) -> list[str]:
    """What a shared generator bundle's metadata must state beyond the schema."""
    from .selfcontained import DECODINGS, SAFE_NAME

    if not isinstance(metadata, dict):
        return ["the metadata is not a JSON object"]
    problems = []
    version, changelog = metadata.get("version"), metadata.get("changelog")
    if not isinstance(changelog, dict) or version not in changelog:
        problems.append(f"version {version!r} is not in the changelog")
    for key in ("name", "version"):
        if not isinstance(metadata.get(key), str) or not SAFE_NAME.fullmatch(metadata[key]):
            problems.append(f"{key} {metadata.get(key)!r}: letters, digits and . _ + - only")
    fmt = metadata.get("network_data_format")
    inputs = fmt.get("inputs") if isinstance(fmt, dict) else None
    outputs = fmt.get("outputs") if isinstance(fmt, dict) else None
    if not isinstance(inputs, dict) or not isinstance(inputs.get("image"), dict):
        problems.append("network_data_format.inputs.image (the latent) is missing")
    if not isinstance(outputs, dict) or not isinstance(outputs.get("pred"), dict):
        problems.append("network_data_format.outputs.pred (the image) is missing")
    decoding = metadata.get("output_decoding", "tanh")
    if decoding not in DECODINGS:
        problems.append(f"output_decoding {decoding!r} is not one of {list(DECODINGS)}")
    snapshots = metadata.get("snapshots", [])
    if not isinstance(snapshots, list) or not all(
        isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("sha256"), str) for s in snapshots
    ):
        problems.append("snapshots must be a list of {'file', 'sha256'}")
    return problems


def check_metadata(metadata: Any, schema: str | os.PathLike | None = None) -> tuple[str, list[str]]:
    """``(schema detail, problems)``: the schema check and :func:`metadata_problems` together."""
    status, detail = validate_metadata_schema(metadata, schema)
    problems = [detail] if status == FAIL else []
    return detail, problems + metadata_problems(metadata)


# --- reading archives and folders -------------------------------------------------------------


class _ZipSource:
    def __init__(self, path: Path):
        self.path = path
        self.zf = zipfile.ZipFile(path)
        self.infos = self.zf.infolist()
        self.problems: list[str] = []
        if len(self.infos) > MAX_ENTRIES:
            self.problems.append(f"{len(self.infos)} entries, more than the {MAX_ENTRIES} accepted")
            self.infos = self.infos[:MAX_ENTRIES]
        self.unsafe: set[str] = set()
        seen: dict[str, str] = {}
        folders: set[str] = set()
        for info in self.infos:
            name = info.filename
            reasons = _name_problems(name)
            mode = (info.external_attr >> 16) & 0xFFFF
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                reasons.append("a symbolic link")
            elif kind not in (0, stat.S_IFREG) and not (kind == stat.S_IFDIR and name.endswith("/")):
                reasons.append(f"a special file (mode {oct(mode)})")
            if name.endswith("/") or info.is_dir():
                if name in _ALLOWED_DIRS and not reasons:
                    folders.add(name)  # a harmless folder entry of the allow-list (zip tools add them)
                    continue
                reasons.append("a directory entry")
            if info.flag_bits & 0x1:
                reasons.append("encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                reasons.append(f"compression method {info.compress_type} is not accepted (stored or deflated only)")
            if info.file_size > MAX_ENTRY_BYTES:
                reasons.append(f"{info.file_size} bytes, more than the {MAX_ENTRY_BYTES} accepted")
            folded = unicodedata.normalize("NFC", name).casefold()
            if folded in seen:
                reasons.append(f"a duplicate of {seen[folded]!r}" if seen[folded] != name else "a duplicate name")
            seen.setdefault(folded, name)
            if reasons:
                self.unsafe.add(name)
                self.problems.append(f"{name!r}: " + ", ".join(reasons))
        self.names = sorted({i.filename for i in self.infos} - self.unsafe - folders)

    def read(self, name: str, limit: int = MAX_ENTRY_BYTES) -> bytes:
        info = self.zf.getinfo(name)
        if info.file_size > limit:
            raise ExchangeError(f"{name}: {info.file_size} bytes, more than {limit} accepted for this file")
        return self.zf.read(info)

    def digest(self, name: str) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        with self.zf.open(name) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        return digest.hexdigest(), size

    def close(self) -> None:
        self.zf.close()


class _DirSource:
    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []
        self.unsafe: set[str] = set()
        names = []
        for folder, dirs, files in os.walk(path, followlinks=False):
            for d in list(dirs):
                full = Path(folder, d)
                if full.is_symlink():
                    rel = full.relative_to(path).as_posix()
                    self.unsafe.add(rel)
                    self.problems.append(f"{rel!r}: a symbolic link (folder)")
                    dirs.remove(d)
            for f in files:
                full = Path(folder, f)
                rel = full.relative_to(path).as_posix()
                mode = os.lstat(full).st_mode
                if stat.S_ISLNK(mode):
                    self.problems.append(f"{rel!r}: a symbolic link")
                    self.unsafe.add(rel)
                elif not stat.S_ISREG(mode):
                    self.problems.append(f"{rel!r}: a special file")
                    self.unsafe.add(rel)
                else:
                    names.append(rel)
        self.names = sorted(names)

    def read(self, name: str, limit: int = MAX_ENTRY_BYTES) -> bytes:
        full = self.path / name
        if full.stat().st_size > limit:
            raise ExchangeError(f"{name}: more than {limit} bytes accepted for this file")
        return full.read_bytes()

    def digest(self, name: str) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        with open(self.path / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        return digest.hexdigest(), size

    def close(self) -> None:
        pass


def _name_problems(name: str) -> list[str]:
    reasons = []
    if "\\" in name:
        reasons.append("holds a backslash")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        reasons.append("an absolute path")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        reasons.append("escapes the target folder ('..')")
    if any(p in ("", ".") for p in parts) and not name.startswith("/"):
        reasons.append("has empty or '.' path parts")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        reasons.append("holds control characters")
    return reasons


# --- the report -------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    status: str
    detail: str


@dataclass
class VerifyReport:
    """Every check with its status and reason; ``verified_files`` maps each file whose SHA-256
    matched the manifest (plus the manifest and the signature) to its SHA-256."""

    source: str
    checks: list[Check] = field(default_factory=list)
    verified_files: dict[str, str] = field(default_factory=dict)
    schema_file: str | None = None

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def status(self, name: str) -> str | None:
        return next((c.status for c in self.checks if c.name == name), None)

    def failures(self, trust: bool = False) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL and not (trust and c.name == CONFIG_CHECK)]

    def passed(self, trust: bool = False) -> bool:
        return bool(self.checks) and not self.failures(trust)

    def text(self) -> str:
        width = max(len(c.name) for c in self.checks) if self.checks else 0
        lines = [f"verifying {self.source}"]
        for c in self.checks:
            lines.append(f"  {c.status:<7} {c.name:<{width}}  {c.detail}")
        verdict = "PASSED" if self.passed() else "FAILED"
        lines.append(f"{verdict}: {sum(c.status == OK for c in self.checks)} OK, {sum(c.status == FAIL for c in self.checks)} FAIL, {sum(c.status == SKIPPED for c in self.checks)} SKIPPED")
        return "\n".join(lines)


def _json_of(src, name: str) -> tuple[Any, str | None]:
    try:
        return json.loads(src.read(name, MAX_JSON_BYTES).decode("utf-8")), None
    except (ExchangeError, UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile, OSError) as e:
        return None, f"{name}: not readable JSON ({e})"


def verify_bundle(
    source: str | os.PathLike,
    schema: str | os.PathLike | None = None,
    expect_sha256: str | None = None,
    trusted_key: str | os.PathLike | None = None,
) -> VerifyReport:
    """Run every check on an archive (read in memory, never extracted) or an unpacked folder."""
    path = Path(source)
    report = VerifyReport(str(path))
    if path.is_dir():
        if expect_sha256:
            report.add("archive sha256", FAIL, "a folder has no archive SHA-256: verify the archive itself with --expect-sha256")
        else:
            report.add("archive sha256", SKIPPED, "a folder, not an archive")
        src: Any = _DirSource(path)
    elif path.is_file():
        actual = archive_sha256(path)
        if expect_sha256:
            wanted = expect_sha256.strip().lower()
            if actual == wanted:
                report.add("archive sha256", OK, f"{actual} as expected")
            else:
                report.add("archive sha256", FAIL, f"MISMATCH: the archive is {actual}, expected {wanted}")
        else:
            report.add("archive sha256", SKIPPED, f"no --expect-sha256 given; the archive is {actual}: compare it with the sender's")
        try:
            src = _ZipSource(path)
        except (zipfile.BadZipFile, OSError) as e:
            report.add("paths", FAIL, f"not a readable zip archive ({e})")
            return report
    else:
        report.add("archive sha256", FAIL, f"{path}: not found")
        return report
    try:
        _run_checks(report, src, schema, trusted_key)
    finally:
        src.close()
    return report


def _run_checks(report: VerifyReport, src, schema, trusted_key) -> None:
    names = set(src.names)
    # paths
    if src.problems:
        report.add("paths", FAIL, "unsafe entries: " + "; ".join(src.problems[:10]))
    else:
        report.add("paths", OK, f"{len(names)} files, relative paths, no links, no duplicates")
    # allow-list
    outside = sorted(n for n in names if not is_allowed_name(n))
    if outside:
        report.add("allow-list", FAIL, f"files outside the allow-list: {outside[:10]}")
    else:
        report.add("allow-list", OK, "only allow-listed files")
    # required files
    missing = [n for n in REQUIRED_FILES if n not in names]
    report.add("required files", FAIL if missing else OK, f"missing: {missing}" if missing else ", ".join(REQUIRED_FILES))

    # manifest
    manifest_raw = None
    manifest_ok = False
    if MANIFEST not in names:
        report.add("manifest", FAIL, f"no {MANIFEST}")
    else:
        try:
            manifest_raw = src.read(MANIFEST, MAX_JSON_BYTES)
            manifest = json.loads(manifest_raw.decode("utf-8"))
            listed = manifest["files"]
            if manifest.get("format") != MANIFEST_FORMAT or manifest.get("hash") != "sha256" or not isinstance(listed, dict):
                raise ValueError(f"not a {MANIFEST_FORMAT} manifest with sha256 hashes")
        except (ExchangeError, ValueError, KeyError, TypeError, UnicodeDecodeError, zipfile.BadZipFile) as e:
            report.add("manifest", FAIL, f"{MANIFEST}: unreadable ({e})")
            manifest = None
        if manifest is not None:
            problems = []
            verified = {}
            for name, entry in sorted(listed.items()):
                if not is_allowed_name(name) or name in (MANIFEST, SIGNATURE):
                    problems.append(f"{name}: listed but not an allowed file")
                    continue
                if name not in names:
                    problems.append(f"{name}: listed but absent")
                    continue
                try:
                    sha, size = src.digest(name)
                except (zipfile.BadZipFile, OSError) as e:
                    problems.append(f"{name}: unreadable ({e})")
                    continue
                if not isinstance(entry, dict) or sha != entry.get("sha256") or size != entry.get("size"):
                    problems.append(f"{name}: SHA-256 MISMATCH (file {sha}, manifest {entry.get('sha256') if isinstance(entry, dict) else entry})")
                else:
                    verified[name] = sha
            unlisted = sorted(names - set(listed) - {MANIFEST, SIGNATURE})
            if unlisted:
                problems.append(f"files not in the manifest: {unlisted[:10]}")
            if problems:
                report.add("manifest", FAIL, "; ".join(problems[:10]))
            else:
                manifest_ok = True
                report.verified_files = {**verified, MANIFEST: hashlib.sha256(manifest_raw).hexdigest()}
                report.add("manifest", OK, f"{len(verified)} files match their SHA-256, none unlisted")

    # signature
    signed = SIGNATURE in names
    claimed = None
    if manifest_raw is not None:
        try:
            claimed = json.loads(manifest_raw).get("signing_key_sha256")
        except (ValueError, AttributeError):
            claimed = None
    if trusted_key is None:
        if signed:
            report.add("signature", SKIPPED, f"the archive is signed (key {claimed or 'unknown'}) but the signature was NOT checked: no --trusted-key given")
        else:
            report.add("signature", SKIPPED, "unsigned archive; no --trusted-key given")
    elif not signed:
        report.add("signature", FAIL, f"--trusted-key given but the archive has no {SIGNATURE}")
    elif manifest_raw is None:
        report.add("signature", FAIL, f"no readable {MANIFEST} to check the signature against")
    else:
        try:
            key = load_public_key(trusted_key)
            signature = src.read(SIGNATURE, 4096)
            verify_signature(manifest_raw, signature, key)
            fingerprint = key_fingerprint(key)
            if claimed not in (None, fingerprint):
                raise ExchangeError(f"the manifest names key {claimed}, the trusted key is {fingerprint}")
            report.add("signature", OK, f"valid Ed25519 signature of {MANIFEST} by the trusted key {fingerprint}")
            if manifest_ok:
                report.verified_files[SIGNATURE] = hashlib.sha256(signature).hexdigest()
        except (ExchangeError, zipfile.BadZipFile, OSError) as e:
            report.add("signature", FAIL, str(e))
    if signed and trusted_key is None and manifest_ok:
        try:
            report.verified_files[SIGNATURE] = hashlib.sha256(src.read(SIGNATURE, 4096)).hexdigest()
        except (ExchangeError, zipfile.BadZipFile, OSError) as e:
            report.add("signature", FAIL, f"{SIGNATURE}: unreadable ({e})")

    # metadata
    metadata = None
    if METADATA in names:
        metadata, error = _json_of(src, METADATA)
        if error:
            report.add("metadata schema", FAIL, error)
    if metadata is None:
        if METADATA not in names:
            report.add("metadata schema", FAIL, f"no {METADATA}")
        report.add("metadata", SKIPPED, "no readable metadata")
    else:
        status, detail = validate_metadata_schema(metadata, schema)
        report.schema_file = str(Path(schema) if schema is not None else _default_schema())
        report.add("metadata schema", status, detail)
        problems = metadata_problems(metadata)
        if isinstance(metadata, dict):
            listed_snaps = {s.get("file"): s.get("sha256") for s in metadata.get("snapshots", []) if isinstance(s, dict)}
            present_snaps = {n for n in names if SNAPSHOT_PATTERN.fullmatch(n)}
            if set(listed_snaps) != present_snaps:
                problems.append(f"snapshots listed {sorted(listed_snaps)} but present {sorted(present_snaps)}")
            for name, sha in listed_snaps.items():
                if name in report.verified_files and report.verified_files[name] != sha:
                    problems.append(f"{name}: SHA-256 in the metadata differs from the file's")
        report.add("metadata", FAIL if problems else OK, "; ".join(problems) if problems else "version in changelog, generator I/O described")

    # configs
    config_names = sorted(n for n in names if n.startswith("configs/") and n.endswith(".json"))
    configs: dict[str, Any] = {}
    problems = []
    for name in config_names:
        parsed, error = _json_of(src, name)
        if error:
            problems.append(error)
            continue
        configs[name] = parsed
        problems += check_config(parsed, name)
    if not config_names:
        report.add(CONFIG_CHECK, FAIL, "no JSON config to check")
    elif problems:
        report.add(CONFIG_CHECK, FAIL, f"{len(problems)} disallowed item(s): " + "; ".join(problems[:8]))
    else:
        report.add(CONFIG_CHECK, OK, f"every expression and _target_ of {', '.join(config_names)} is allow-listed")

    # weights
    weight_names = [n for n in sorted(names) if n == MODEL or SNAPSHOT_PATTERN.fullmatch(n)]
    tensors: dict[str, dict] = {}
    problems = []
    for name in weight_names:
        try:
            tensors[name] = load_generator_tensors(src.read(name), name)
        except (ExchangeError, zipfile.BadZipFile, OSError) as e:
            problems.append(str(e))
    note = f"; {TORCHSCRIPT} present: hashed, never loaded (TorchScript is code; the packed inference does not use it)" if TORCHSCRIPT in names else ""
    if not weight_names:
        report.add("weights", FAIL, f"no {MODEL}")
    elif problems:
        report.add("weights", FAIL, "; ".join(problems[:6]))
    else:
        report.add("weights", OK, f"{len(weight_names)} file(s) of plain generator tensors (weights_only=True){note}")

    # network
    if report.status(CONFIG_CHECK) != OK:
        report.add("network", SKIPPED, "not built: the config allow-list check did not pass")
    elif MODEL not in tensors or INFERENCE not in configs or not isinstance(metadata, dict):
        report.add("network", SKIPPED, f"not built: needs readable {MODEL}, {INFERENCE} and {METADATA}")
    else:
        status, detail = _check_network(configs[INFERENCE], tensors, metadata)
        report.add("network", status, detail)


def _check_network(config: Any, tensors: dict[str, dict], metadata: dict) -> tuple[str, str]:
    import torch

    from .selfcontained import SEQUENTIAL_EXPRESSION, build_network

    if not isinstance(config, dict) or config.get("network_def") != SEQUENTIAL_EXPRESSION:
        return FAIL, f"network_def is not the packed form {SEQUENTIAL_EXPRESSION!r}; the network cannot be rebuilt safely"
    try:
        network = build_network(config.get("network_layers"), "network_layers")
    except (ValueError, TypeError) as e:
        return FAIL, str(e)
    problems = []
    for name, state in tensors.items():
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as e:
            problems.append(f"{name}: does not load strictly ({str(e).splitlines()[0]} ...)")
    if problems:
        return FAIL, "; ".join(problems[:4])
    network.load_state_dict(tensors[MODEL], strict=True)
    first = network[0]
    latent = int(getattr(first, "in_channels", 0))
    fmt = metadata.get("network_data_format", {})
    image = fmt.get("inputs", {}).get("image", {}) if isinstance(fmt, dict) else {}
    pred = fmt.get("outputs", {}).get("pred", {}) if isinstance(fmt, dict) else {}
    if image.get("num_channels") != latent or list(image.get("spatial_shape", [])) != [1, 1]:
        problems.append(f"input 'image' is {image.get('num_channels')} x {image.get('spatial_shape')}, the network takes {latent} x [1, 1]")
    if config.get("latent_size") != latent:
        problems.append(f"inference.json latent_size {config.get('latent_size')!r}, the network takes {latent}")
    try:
        with torch.no_grad():
            out = network.eval()(torch.zeros(1, latent, 1, 1))
    except RuntimeError as e:
        return FAIL, f"the network does not run on a (1, {latent}, 1, 1) latent ({e})"
    if pred.get("num_channels") != out.shape[1] or list(pred.get("spatial_shape", [])) != list(out.shape[2:]):
        problems.append(f"output 'pred' is {pred.get('num_channels')} x {pred.get('spatial_shape')}, the network makes {out.shape[1]} x {list(out.shape[2:])}")
    if problems:
        return FAIL, "; ".join(problems)
    return OK, (
        f"{len(network)} allow-listed torch layers load {', '.join(sorted(tensors))} strictly; "
        f"latent {latent} x [1, 1] -> {out.shape[1]} x {list(out.shape[2:])} as in network_data_format"
    )


# --- command line -----------------------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        report = verify_bundle(args.source, schema=args.schema, expect_sha256=args.expect_sha256, trusted_key=args.trusted_key)
    except (ExchangeError, OSError) as e:
        print(f"verify failed: {e}", file=sys.stderr)
        return 1
    print(report.text())
    return 0 if report.passed() else 1


def add_verify_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare verify FILE.zip|DIR [--schema FILE] [--expect-sha256 HASH] [--trusted-key PUB]``."""
    p = subparsers.add_parser(
        "verify",
        help="check a generator bundle archive (or unpacked folder) without running anything from it",
        description="Check hashes, signature, zip safety, allow-lists, metadata schema, weights and network; "
        "exit 0 only when every check passes.",
    )
    p.add_argument("source", type=Path, help="the archive (.zip) or an unpacked bundle folder")
    _add_verify_options(p)
    p.set_defaults(func=_cmd_verify)
    return p
