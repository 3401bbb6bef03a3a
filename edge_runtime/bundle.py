"""`edgecxr bundle`: one archive that installs the edge runtime and a model on a clinic's machine
with no network.

Built on the build machine (no TensorFlow needed): every wheel the edge install needs for the
target platform is downloaded once (`pip download --only-binary=:all: --platform ...`), next to
the edgecxr wheel built from this source, the model(s) with their metadata, a sha256 manifest of
every file, `install.sh` (offline pip install, manifest check, `edgecxr doctor`), a systemd unit
for the clinic station and a one-page README (bundle_files.py). The requirements are read from
the installed edgecxr's own metadata, extras included, so a new edge dependency or extra needs no
change here.
"""

from __future__ import annotations

import json
import platform as host_platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

from .atomic import atomic_path
from .errors import EdgecxrError
from .formats import EDGE_SUFFIXES, EXPORT_FORMATS, format_of_file
from .metadata import metadata_path, read_metadata, sha256_file
from .run_folder import EXPORT_DIR

# Extras for the build machine (training, the Lite weight imports, tests, benchmark films): never
# shipped. Every other extra the package declares (a clinic station, DICOM input, ...) is part of
# the edge install.
BUILD_MACHINE_EXTRAS = frozenset({"train", "lite0", "lite2", "dev", "films"})

# glibc of the oldest target each platform must run on: Raspberry Pi OS Bookworm has 2.36, so any
# manylinux wheel up to manylinux_2_36 installs there.
TARGET_GLIBC = {"aarch64": 36, "x86_64": 36}
PLATFORM_REFUSED = {
    "armv7l": "32-bit ARM (armv7l) is not offered: LiteRT and onnxruntime publish no armv7l wheels on PyPI "
              "(numpy neither); use Raspberry Pi OS 64-bit",
}
TFLITE_RUNTIMES = ("litert", "tflite-runtime")
# tflite-runtime 2.14 is the last release, built against NumPy 1 (docs/edge-runtime.md).
LEGACY_TFLITE = ("tflite-runtime==2.14.*", "numpy<2")
DEFAULT_FORMATS = ("tflite-int8",)


@dataclass
class BundleOptions:
    source: Path  # a model file, an export folder or a run folder
    platform: str = "aarch64"
    python: str = "3.11"
    out: Path = Path(".")
    formats: tuple[str, ...] = DEFAULT_FORMATS
    tflite_runtime: str = "litert"
    # Where the wheels come from: None is pip's own configuration (PyPI); a folder is used alone
    # (--no-index), e.g. a mirror already on disk.
    find_links: Path | None = None


@dataclass
class Bundle:
    archive: Path
    models: list[str]
    wheels: list[str]
    requirements: list[str]
    extras: list[str] = field(default_factory=list)


def check_platform(name: str) -> str:
    if name in PLATFORM_REFUSED:
        raise EdgecxrError(PLATFORM_REFUSED[name])
    if name not in TARGET_GLIBC:
        raise EdgecxrError(f"unsupported platform {name!r}: choose one of {', '.join(TARGET_GLIBC)}")
    return name


def check_python(version: str) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in version.split("."))
    except ValueError:
        raise EdgecxrError(f"--python must look like 3.11, not {version!r}") from None
    if (major, minor) < (3, 10):
        raise EdgecxrError(f"edgecxr needs Python 3.10 or newer, not {version}")
    return major, minor


def platform_tags(name: str) -> list[str]:
    """Every manylinux tag a target with glibc TARGET_GLIBC accepts (pip takes them as --platform)."""
    top = TARGET_GLIBC[name]
    return [f"manylinux_2_{minor}_{name}" for minor in range(top, 16, -1)] + [f"manylinux2014_{name}", f"linux_{name}"]


def target_environment(name: str, python: tuple[int, int]) -> dict[str, str]:
    """The PEP 508 marker values of a CPython on Linux `name`, for choosing the requirements."""
    version = f"{python[0]}.{python[1]}"
    return {"platform_machine": name, "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "python_version": version, "python_full_version": f"{version}.0", "implementation_name": "cpython",
            "platform_python_implementation": "CPython"}


def edge_requirements(environment: dict[str, str], distribution: str = "edgecxr") -> tuple[list[str], list[str]]:
    """(requirements, extras): the installed package's base requirements and those of its edge extras
    that apply on the target, without their markers (they were evaluated here, for the target)."""
    from packaging.requirements import Requirement

    try:
        declared = importlib_metadata.requires(distribution) or []
        extras = importlib_metadata.metadata(distribution).get_all("Provides-Extra") or []
    except importlib_metadata.PackageNotFoundError:
        raise EdgecxrError(f"{distribution} is not installed (pip install -e .)") from None
    edge_extras = sorted(set(extras) - BUILD_MACHINE_EXTRAS)
    chosen: list[str] = []
    for line in declared:
        requirement = Requirement(line)
        if requirement.name == distribution:
            # An extra that names another (station = ["edgecxr[dicom]"]): that one's requirements are
            # chosen on their own lines, and edgecxr itself is the wheel built from this checkout.
            continue
        marker = requirement.marker
        wanted = marker is None or any(marker.evaluate({**environment, "extra": extra}) for extra in ["", *edge_extras])
        if wanted:
            requirement.marker = None
            if str(requirement) not in chosen:
                chosen.append(str(requirement))
    return chosen, edge_extras


def with_tflite_runtime(requirements: list[str], runtime: str) -> list[str]:
    """LiteRT (the default), or the legacy tflite-runtime 2.14 with numpy<2 in its place."""
    if runtime not in TFLITE_RUNTIMES:
        raise EdgecxrError(f"unknown TFLite runtime {runtime!r}: choose one of {', '.join(TFLITE_RUNTIMES)}")
    if runtime == "litert":
        return list(requirements)
    return [r for r in requirements if not r.startswith("ai-edge-litert")] + list(LEGACY_TFLITE)


def find_models(source: Path, formats: tuple[str, ...]) -> list[Path]:
    """The model files to ship: `source` itself, or the requested formats from an export or run folder."""
    source = Path(source)
    if source.is_file():
        if format_of_file(source) is None and source.suffix not in EDGE_SUFFIXES:
            raise EdgecxrError(f"{source} is not a {' or '.join(EDGE_SUFFIXES)} model")
        return [source]
    if not source.is_dir():
        raise EdgecxrError(f"model or run folder not found: {source}")
    folder = source / EXPORT_DIR if (source / EXPORT_DIR).is_dir() else source
    known = {f.tag: f for f in EXPORT_FORMATS}
    unknown = [tag for tag in formats if tag not in known]
    if unknown:
        raise EdgecxrError(f"unknown format {', '.join(unknown)}: choose from {', '.join(known)}")
    models = [folder / known[tag].filename for tag in formats]
    missing = [m.name for m in models if not m.is_file()]
    if missing:
        raise EdgecxrError(f"{folder} has no {', '.join(missing)} (export it with edgecxr convert)")
    return models


def source_tree() -> Path:
    """The checkout this edgecxr runs from: the edgecxr wheel is built from it."""
    # An editable install runs from the checkout: edge_runtime/ sits next to pyproject.toml.
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise EdgecxrError("edgecxr bundle builds the edgecxr wheel from its source: run it from a checkout "
                           "installed with pip install -e .")
    return root


def _pip(*args: str, what: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or result.stderr.splitlines()
        raise EdgecxrError(f"{what}: {errors[-1].removeprefix('ERROR: ') if errors else 'pip failed'}")


def download_wheels(requirements: list[str], options: BundleOptions, into: Path) -> None:
    where = ["--no-index", "--find-links", str(options.find_links)] if options.find_links else []
    platforms = [arg for tag in platform_tags(options.platform) for arg in ("--platform", tag)]
    version = "".join(str(part) for part in check_python(options.python))
    _pip("download", "--quiet", "--only-binary=:all:", *platforms, "--python-version", options.python,
         "--implementation", "cp", "--abi", f"cp{version}", "--dest", str(into), *where, *requirements,
         what=f"cannot download the {options.platform} wheels for Python {options.python} "
              f"(no network to PyPI, or a package has no wheel for it)")


def build_edgecxr_wheel(into: Path) -> None:
    # No build isolation: the build backend already installed here is used, with no network.
    _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(into), str(source_tree()),
         what="cannot build the edgecxr wheel")


def write_manifest(folder: Path, name: str = "MANIFEST.sha256") -> Path:
    """`sha256sum --check` format, so install.sh checks it with coreutils alone."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != name)
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}" for p in files]
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / name


def archive_name(options: BundleOptions, models: list[Path]) -> str:
    version = importlib_metadata.version("edgecxr")
    runtime = "" if options.tflite_runtime == "litert" else "-tflite-runtime"
    return f"edgecxr-{version}-{models[0].stem}-{options.platform}-py{options.python}{runtime}"


def build_bundle(options: BundleOptions) -> Bundle:
    from . import bundle_files

    check_platform(options.platform)
    python = check_python(options.python)
    models = find_models(options.source, tuple(options.formats))
    for model in models:
        read_metadata(model)  # a model without metadata, or that does not match it, is not shipped
    requirements, extras = edge_requirements(target_environment(options.platform, python))
    requirements = with_tflite_runtime(requirements, options.tflite_runtime)
    name = archive_name(options, models)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgecxr-bundle-", dir=out) as tmp:
        root = Path(tmp) / name
        (root / "wheels").mkdir(parents=True)
        (root / "models").mkdir()
        download_wheels(requirements, options, root / "wheels")
        build_edgecxr_wheel(root / "wheels")
        for model in models:
            shutil.copy2(model, root / "models" / model.name)
            shutil.copy2(metadata_path(model), root / "models" / metadata_path(model).name)
        wheels = sorted(p.name for p in (root / "wheels").glob("*.whl"))
        (root / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
        info = {"edgecxr": importlib_metadata.version("edgecxr"), "platform": options.platform,
                "python": options.python, "tflite_runtime": options.tflite_runtime, "extras": extras,
                "models": [m.name for m in models], "requirements": requirements, "wheels": wheels,
                "built": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "built_on": f"{host_platform.system()} {host_platform.machine()}"}
        (root / "bundle.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        bundle_files.write_files(root, info)
        write_manifest(root)
        archive = out / f"{name}.tar.gz"
        with atomic_path(archive) as partial:
            with tarfile.open(partial, "w:gz") as tar:
                tar.add(root, arcname=name)
    return Bundle(archive=archive, models=[m.name for m in models], wheels=wheels, requirements=requirements,
                  extras=extras)
