"""The machine a benchmark ran on: figures mean little without CPU, cores, OS and versions."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from edgecxr.edge_runtime.versions import package_versions


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields = {}
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
        # x86 names the CPU in "model name"; Raspberry Pi kernels name the board in "Model".
        for key in ("model name", "hardware", "model", "cpu model", "processor"):
            value = fields.get(key, "")
            if value and not value.isdigit():
                return value
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def physical_cores() -> int | None:
    """Distinct (socket, core) pairs in /proc/cpuinfo; None where the kernel does not say."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    cores, socket = set(), "0"
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            socket = value.strip()
        elif key == "core id":
            cores.add((socket, value.strip()))
    return len(cores) or None


def memory_total_mb() -> float | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    return {
        "cpu_model": cpu_model(),
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cores": usable_cores(),
        "memory_total_mb": memory_total_mb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(),
        "load_average_at_start": load_average(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def describe(machine: dict) -> str:
    """One line for tables and the README: CPU, cores, OS, Python."""
    cores = f"{machine['usable_cores']} usable of {machine['logical_cores']} logical cores"
    return f"{machine['cpu_model']} ({machine['architecture']}, {cores}), {machine['os']}, Python {machine['python']}"
