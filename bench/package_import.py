"""Cold `import app` from the built deployment package, as Lambda runs it: only the unzipped
package and the standard library on the path (-I -S), no bytecode written (-B; /var/task is
read-only). The package is built on a copy of the project by the same step `make deploy` and
`make package` use (infra.bytecode, then `chalice package`); `--plain` builds it with
`chalice package` alone, as before that step existed."""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
PROBE = ("import sys, time; sys.path.insert(0, sys.argv[1]); t = time.perf_counter(); import app; "
         "print(time.perf_counter() - t)")
IGNORES = shutil.ignore_patterns(".git", ".venv", "node_modules", ".local", ".hypothesis", ".benchmarks",
                                 ".pytest_cache", "__pycache__", "deployments", "deployed", "build")


def _credential_free_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"})
    return env


def build(work: Path, plain: bool = False) -> tuple[Path, float]:
    """The dev stage's deployment.zip built in a copy of the project, and how long that took."""
    project = work / "project"
    shutil.copytree(ROOT, project, ignore=IGNORES)
    out = work / "out"
    chalice = ["package", "--merge-template", "infra/chalice-merge.json", str(out)]
    if plain:
        command = [sys.executable, "-c", "from chalice.cli import main; main()", chalice[0], "--stage", "dev", *chalice[1:]]
    else:
        command = [sys.executable, "-m", "infra.bytecode", "--stage", "dev", "--", *chalice]
    started = time.monotonic()
    subprocess.run(command, cwd=project, env=_credential_free_env(), check=True, capture_output=True, timeout=600)
    return out / "deployment.zip", time.monotonic() - started


def import_seconds(package: Path, work: Path) -> float:
    folder = work / "task"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    samples = []
    for _ in range(RUNS):
        done = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", PROBE, str(folder)], capture_output=True, text=True,
                              check=True, env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}, cwd=work)
        samples.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def measure(plain: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        package, seconds = build(work, plain)
        with zipfile.ZipFile(package) as archive:
            infos = archive.infolist()
        return {"import_s": import_seconds(package, work), "build_s": seconds, "zip_mb": package.stat().st_size / 1e6,
                "unzipped_mb": sum(i.file_size for i in infos) / 1e6,
                "pycs": sum(i.filename.endswith(".pyc") for i in infos)}


def run() -> tuple[str, float, str, float]:
    from bench.baseline import today

    result = measure()
    before = today("package_import")
    print(f"  package: zip {result['zip_mb']:.1f} MB (today {before['zip_mb']:.1f}), unzipped {result['unzipped_mb']:.1f} MB "
          f"(today {before['unzipped_mb']:.1f}), {result['pycs']} pycs, built in {result['build_s']:.0f} s")
    print(f"  cold import app from the package, -B: {result['import_s']:.3f} s (today {before['import_s']:.3f} s)")
    return ("cold import app from the package / today's", result["import_s"] / before["import_s"], "x", 0.5)


if __name__ == "__main__":
    print(json.dumps(measure(plain="--plain" in sys.argv[1:])))
