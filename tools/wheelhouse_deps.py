"""
The dependency walk of ``tools/make_wheelhouse.py``: wheels for another interpreter and platform,
without what that machine already has.

pip cannot resolve against another machine's installed packages, and ``pip download`` of a
package fetches all its dependencies (for detpre: torch and the CUDA wheels, gigabytes). So each
package's ``Requires-Dist`` (markers evaluated for the target, extras followed) is downloaded with
``--no-deps``, skipping what the target has; requirements on one name are intersected, and a
download that no longer fits them is redone. A pure-Python package the registry has as sources
only is built here into a ``py3-none-any`` wheel.
"""

import email.parser
import fnmatch
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pip vendors packaging
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version

# Files of an sdist that a compiler would build: such a package has no pure-Python wheel.
COMPILED_SOURCES = (
    ".c",
    ".cc",
    ".cpp",
    ".cxx",
    ".cu",
    ".pyx",
    ".rs",
    ".f",
    ".f90",
    "CMakeLists.txt",
)

__all__ = ["Skip", "Target", "collect", "expand_platforms", "run_pip", "run_pip_build"]


def expand_platforms(platforms):
    """
    Every platform tag a pip on the target accepts, as pip does not expand ``--platform`` itself.

    Args:
        platforms (list[str]): e.g. ``["manylinux_2_28_x86_64"]`` or ``["manylinux2014_x86_64"]``.

    Returns:
        list[str]: ``manylinux_2_N`` also gives each older ``manylinux_2_k`` and the legacy aliases
        (``manylinux2014`` = 2_17, ``manylinux2010`` = 2_12, ``manylinux1`` = 2_5).
    """
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    aliases = {v: k for k, v in legacy.items()}
    out = []
    for plat in platforms:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", plat)
        prefix, _, arch = plat.partition("_")
        glibc = int(m.group(1)) if m else legacy.get(prefix)
        arch = m.group(2) if m else arch
        tags = [plat]
        if glibc is not None:
            for minor in range(glibc, 4, -1):
                tags.append(f"manylinux_2_{minor}_{arch}")
                if minor in aliases:
                    tags.append(f"{aliases[minor]}_{arch}")
        out += [t for t in tags if t not in out]
    return out


class Target:
    """
    The target interpreter and platform: pip's options and the markers' environment.

    Args:
        python_version (str): e.g. ``"3.12"``.
        platforms (list[str]): platform tags (expanded with :func:`expand_platforms`).
    """

    def __init__(self, python_version, platforms):
        self.python_version = python_version
        self.platforms = expand_platforms(platforms)
        plat = platforms[0]
        system = {"macosx": "Darwin", "win": "Windows"}.get(re.split(r"[_\d]", plat)[0], "Linux")
        machine = re.sub(r"^(many|musl)?linux(_\d+_\d+|\d+)?_|^macosx_\d+_\d+_|^win_?", "", plat)
        self.env = dict(default_environment())
        full = python_version if python_version.count(".") >= 2 else python_version + ".0"
        self.env.update(
            python_version=".".join(python_version.split(".")[:2]),
            python_full_version=full,
            implementation_name="cpython",
            implementation_version=full,
            platform_python_implementation="CPython",
            sys_platform={"Linux": "linux", "Darwin": "darwin", "Windows": "win32"}[system],
            platform_system=system,
            os_name="nt" if system == "Windows" else "posix",
            platform_machine={"amd64": "AMD64"}.get(machine, machine),
        )

    def pip_args(self):
        """``pip download`` options that select wheels for the target."""
        args = ["--only-binary=:all:", "--implementation", "cp"]
        args += ["--python-version", self.python_version]
        for plat in self.platforms:
            args += ["--platform", plat]
        return args

    def wanted(self, requires, extras=()):
        """The requirements (``Requires-Dist`` lines) that apply on the target with ``extras``."""
        out = []
        for line in requires:
            req = Requirement(line)
            envs = [dict(self.env, extra=e) for e in ("", *extras)]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                out.append(req)
        return out


def run_pip(*args, quiet=True):
    """``python -m pip ARGS`` with the running interpreter; its output in ``.stdout``."""
    cmd = [sys.executable, "-m", "pip", *args] + (["-q"] if quiet else [])
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_pip_build(*args):
    """:func:`run_pip` of a command that builds sources: first with this interpreter's setuptools
    (no build isolation: fast), then, if that fails or there is none, in pip's isolated build."""
    if importlib.util.find_spec("setuptools") is not None:
        res = run_pip(*args, "--no-build-isolation")
        if res.returncode == 0:
            return res
    return run_pip(*args)


def wheel_requires(path):
    """``Requires-Dist`` lines of a wheel's METADATA."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        meta = email.parser.BytesParser().parsebytes(z.read(name))
    return meta.get_all("Requires-Dist") or []


def fetch(requirements, target, out_dir):
    """
    Download each requirement (``name<specifier>``) as a wheel for the target into ``out_dir``;
    a source-only pure-Python package is built here instead.

    Returns:
        dict: canonical name -> wheel path.
    """
    with tempfile.TemporaryDirectory() as tmp:
        if run_pip(
            "download", "--no-deps", "-d", tmp, *target.pip_args(), *requirements
        ).returncode:
            for req in requirements:  # one at a time: which has no wheel for the target?
                res = run_pip("download", "--no-deps", "-d", tmp, *target.pip_args(), req)
                if res.returncode:
                    build_pure_wheel(req, target, tmp, res.stdout)
        found = {}
        for path in glob.glob(os.path.join(tmp, "*.whl")):
            dest = os.path.join(out_dir, os.path.basename(path))
            shutil.move(path, dest)
            found[canonicalize_name(parse_wheel_filename(os.path.basename(path))[0])] = dest
    return found


def build_pure_wheel(req, target, out_dir, download_log=""):
    """
    Build ``req`` here from its sources into a ``py3-none-any`` wheel (the only kind that serves
    the target), refusing sources with compiled code before any compiler runs.

    Args:
        req (str): ``name<specifier>``.
        target (Target): the target interpreter and platform.
        out_dir (str): where the wheel goes.
        download_log (str): pip's output of the failed download, for the error message.
    """
    where = f"Python {target.python_version} on {target.platforms[0]}"
    with tempfile.TemporaryDirectory() as tmp:
        res = run_pip_build("download", "--no-deps", "--no-binary", ":all:", "-d", tmp, req)
        sdists = glob.glob(os.path.join(tmp, "*.tar.gz")) + glob.glob(os.path.join(tmp, "*.zip"))
        if res.returncode or not sdists:
            raise SystemExit(
                f"{req}: no wheel for {where}, nor sources that build here:\n{download_log}\n"
                f"pip download --no-binary :all::\n{res.stdout}"
            )
        if sdists[0].endswith(".zip"):
            with zipfile.ZipFile(sdists[0]) as z:
                members = z.namelist()
        else:
            with tarfile.open(sdists[0]) as t:
                members = t.getnames()
        compiled = [m for m in members if m.endswith(COMPILED_SOURCES)]
        if compiled:
            raise SystemExit(
                f"{req}: no wheel for {where} in the registry, and its sources hold compiled code "
                f"({compiled[0]}, ...): build it on a machine like the target, or --skip it if "
                f"the target has it.\n{download_log}"
            )
        res = run_pip_build("wheel", "--no-deps", "-w", tmp, sdists[0])
        pure = glob.glob(os.path.join(tmp, "*-none-any.whl"))
        if res.returncode or not pure:
            raise SystemExit(f"{req}: building a pure-Python wheel failed:\n{res.stdout}")
        shutil.move(pure[0], out_dir)


class Skip:
    """
    What the target already has: canonical names or fnmatch patterns, with versions where known.

    Args:
        names (list[str]): ``NAME`` or ``NAME==VERSION`` entries.
    """

    def __init__(self, names):
        self.versions = {}
        for entry in names:
            name, _, version = entry.partition("==")
            self.versions[canonicalize_name(name)] = version.strip() or None

    @classmethod
    def from_freeze(cls, path):
        """Entries of a ``pip freeze`` (``name==version``, ``name @ url``; ``-e`` lines skipped)."""
        entries = []
        with open(path) as f:
            for line in f:
                line = line.split("#")[0].strip()
                if line and not line.startswith("-"):
                    req = Requirement(line)
                    pins = [s.version for s in req.specifier if s.operator in ("==", "===")]
                    entries.append(req.name + (f"=={pins[0]}" if pins else ""))
        return cls(entries)

    def match(self, name):
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.versions)

    def misses(self, name, req):
        """The target's known version of ``name`` if it does not satisfy ``req``, else None."""
        version = self.versions.get(name)
        if version and not req.specifier.contains(Version(version), True):
            return version
        return None


def collect(roots, extra_requirements, target, skip, never, out_dir):
    """
    Walk the requirements of the local wheels ``roots`` (and ``extra_requirements``), downloading
    what the target lacks into ``out_dir``. A package the target has in a version (known from its
    freeze) that misses a requirement is shipped too, so that pip replaces it there; for one in
    ``never`` that is an error.

    Args:
        roots (dict): canonical name -> path of a wheel built here (detpre, detectron2).
        extra_requirements (list[str]): more top-level requirements (``--extra``).
        target (Target): the target interpreter and platform.
        skip (Skip): what the target already has.
        never (Skip): what is never shipped, whatever its version.
        out_dir (str): the wheelhouse being filled.

    Returns:
        tuple(dict, dict): skipped canonical name -> (SpecifierSet: what is asked of it, list of who
        asks); replaced canonical name -> the target's version.
    """
    chosen = dict(roots)  # name -> wheel path
    specs, extras_done, asked, on_target, replaced = {}, {}, {}, {}, {}
    pending = [(req, "--extra") for req in target.wanted(extra_requirements)]
    for name, path in roots.items():
        pending += [(req, name) for req in target.wanted(wheel_requires(path))]
        extras_done[name] = set()
    while pending:
        wanted = {}
        for req, parent in pending:  # may grow: requirements on a replaced package come back
            name = canonicalize_name(req.name)
            if skip.match(name) and name not in replaced:
                version = skip.misses(name, req)
                if not version:
                    on_target.setdefault(name, []).append((req, parent))
                    continue
                if never.match(name):
                    raise SystemExit(
                        f"the target's {name} {version} misses {req} (asked by {parent}), and "
                        f"{name} is never shipped: upgrade it there"
                    )
                replaced[name] = version
                pending += on_target.pop(name, [])
            specs[name] = specs.get(name, SpecifierSet()) & req.specifier
            asked.setdefault(name, []).append(f"{req.name}{req.specifier} ({parent})")
            wanted.setdefault(name, set()).update(req.extras)
        version = {n: parse_wheel_filename(os.path.basename(p))[1] for n, p in chosen.items()}
        stale = [n for n in wanted if n in chosen and not specs[n].contains(version[n], True)]
        for name in stale:
            if name in roots:
                raise SystemExit(f"{os.path.basename(roots[name])} does not satisfy {asked[name]}")
            os.remove(chosen.pop(name))
            extras_done.pop(name)
        missing = [n for n in wanted if n not in chosen]
        if missing:
            found = fetch([f"{n}{specs[n]}" for n in missing], target, out_dir)
            for name in missing:
                if name not in found:
                    raise SystemExit(f"no wheel found for {name}{specs[name]}: {asked[name]}")
                chosen[name] = found[name]
                extras_done[name] = None
        pending = []
        for name, extras in wanted.items():
            done = extras_done[name]
            if done is None or not extras <= done:
                all_extras = extras | (done or set())
                requires = target.wanted(wheel_requires(chosen[name]), sorted(all_extras))
                pending += [(req, name) for req in requires]
                extras_done[name] = all_extras
    needs = {}
    for name, reqs in on_target.items():
        spec = SpecifierSet()
        for req, _ in reqs:
            spec &= req.specifier
        needs[name] = (spec, sorted({parent for _, parent in reqs}))
    return needs, replaced
