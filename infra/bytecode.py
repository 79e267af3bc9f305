"""The Lambda deployment package as it ships, for `chalice deploy` and `chalice package` alike:
exactly the locked versions, only what runs (infra.lean), and bytecode.

Chalice ships sources only, and Lambda's code directory is read-only, so every cold start
compiles every module it imports (`import app` 0.7 s instead of 0.3 s). Both `chalice deploy`
and `chalice package` build the package through the same step, which first looks for its cache,
`.chalice/deployments/<hash of requirements, app code and vendor/>-<runtime>.zip`, and reuses it
as is when it exists. So this step builds that very file with Chalice's own packager (same
dependency builder, same name), checks that it vendors exactly the versions of requirements.txt
(the lock), removes what the functions never import, read or call (infra.lean: botocore's models
of services no function calls, test suites, C sources...), adds `__pycache__/*.cpython-3XX.pyc`
compiled with `--invalidation-mode unchecked-hash` (Lambda never looks at mtimes, which zips do
not keep anyway), and then runs the Chalice command, which picks the finished package up. A
later code change gives another hash: Chalice would build a fresh package, neither lean nor
compiled, which is why `make deploy` / `make package` always run this step first (and `package`
checks the result).

Bytecode is only valid for the Python minor that wrote it, and Chalice deploys the runtime of the
Python it runs on, so the compiling interpreter is the runtime's by construction; the step still
refuses to run if the two ever differ.

    python -m infra.bytecode --stage dev                     # build the cached package
    python -m infra.bytecode --stage dev -- deploy           # ... then `chalice deploy --stage dev`
    python -m infra.bytecode --stage dev -- package OUT/ ... # ... then `chalice package --stage dev OUT/ ...`
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import py_compile
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from infra import lean, locks

MARKER = ".bytecode-compiled"
"""An entry of the zip saying it was finished here: what was removed, how many pycs were added
(the step is idempotent on a cached package)."""


def runtime_tag() -> str:
    """The cache tag of pycs this interpreter writes, e.g. cpython-313."""
    return sys.implementation.cache_tag


def chalice_config(project_dir: Path, stage: str):  # -> chalice.config.Config
    from chalice.cli.factory import CLIFactory

    return CLIFactory(str(project_dir)).create_config_obj(chalice_stage_name=stage)


def cached_package(project_dir: Path, stage: str) -> Path:
    """Build (or find) the deployment zip exactly where `chalice deploy`/`package` will look."""
    from chalice.deploy.packager import LambdaDeploymentPackager, PipRunner, SubprocessPip
    from chalice.deploy.packager import DependencyBuilder as PipDependencyBuilder
    from chalice.utils import UI, OSUtils

    config = chalice_config(project_dir, stage)
    if config.automatic_layer:
        raise SystemExit("automatic_layer is set: this step compiles the function package only; unset it")
    expected = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if config.lambda_python_version != expected:
        raise SystemExit(f"the runtime is {config.lambda_python_version} but this is {expected}: "
                         "bytecode would not load there")
    osutils = OSUtils()
    builder = PipDependencyBuilder(osutils=osutils, pip_runner=PipRunner(pip=SubprocessPip(osutils=osutils), osutils=osutils),
                                   architecture=config.lambda_architecture)
    packager = LambdaDeploymentPackager(osutils=osutils, dependency_builder=builder, ui=UI(),
                                        architecture=config.lambda_architecture)
    return Path(packager.create_deployment_package(str(project_dir), config.lambda_python_version))


# What a Lambda of this app imports: `import app`, every chalicelib module (each route's lazy
# imports), every route's request model built (pydantic builds them on first use) and the OpenAPI
# document, a signature recovered, an ECIES round trip, a JWT, the chain stack and a client of each
# AWS service the provider calls. Run with only the unzipped package and the standard library on
# the path, it also proves the finished package imports on its own and builds those clients.
IMPORTS = r"""
import importlib, json, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import app
import chalicelib
for found in pkgutil.walk_packages(chalicelib.__path__, "chalicelib."):
    importlib.import_module(found.name)
from chalicelib import http
for operation in app.api.operations:
    if operation.model is not None:
        try:
            http.validate(operation.model, {})
        except Exception:
            pass
app.spec(None)
import time
from chalicelib.auth import signatures, tokens
from chalicelib.assets import ecies as provider_ecies
key = "0x" + "2a" * 32
signatures.recover_address("m", "0x" + "11" * 65)
provider_ecies.decrypt(key, provider_ecies.encrypt(provider_ecies.public_key_of(key), b"x"))
secret = "a-secret-that-is-long-enough-for-the-probe-0123"
token = tokens.TokenService(secret, 600).create(signatures.address_of_key(key), int(time.time()) + 60)
tokens.jwt.decode(token, secret, algorithms=[tokens.ALGORITHM])
import chalicelib.chain.web3access, web3, eth_account
from eth_account.messages import encode_defunct
eth_account.Account.from_key(key).sign_message(encode_defunct(text="m"))
import boto3
for service in json.loads(sys.argv[2]):
    boto3.session.Session().client(service, region_name="us-east-1")
print(json.dumps(sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())})))
"""


def imported_modules(folder: Path) -> list[Path]:
    """The package's own .py files that the provider imports (see IMPORTS), relative to `folder`."""
    done = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", IMPORTS, str(folder), json.dumps(sorted(lean.AWS_SERVICES))],
                          capture_output=True, text=True, timeout=300, cwd=folder.parent,
                          env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "probe",
                               "AWS_SECRET_ACCESS_KEY": "probe", "AWS_CONFIG_FILE": "/nonexistent",
                               "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"})
    if done.returncode != 0:
        raise SystemExit("the package does not import on its own:\n" + done.stderr[-3000:])
    files = [Path(name) for name in json.loads(done.stdout.strip().splitlines()[-1]) if name.endswith(".py")]
    return sorted(path.relative_to(folder) for path in files if path.is_relative_to(folder))


def finish(package: Path) -> dict:
    """Check the versions, remove what never runs, add an unchecked-hash pyc for every module the
    provider imports; return what was done ({} when the package was finished before).

    Only those modules get bytecode: all of the package (botocore, pydantic's unused parts...)
    would add megabytes for modules a Lambda never loads. A module outside the list still works;
    Python compiles it in memory if it is ever imported."""
    with zipfile.ZipFile(package) as archive:
        names = archive.namelist()
        if MARKER in names:
            return {}
        differences = locks.vendoring_differences(names)
        if differences:
            raise SystemExit("the package does not vendor the locked versions (requirements.txt):\n  "
                             + "\n  ".join(differences))
        plan = lean.plan(names, archive.read)
        with tempfile.TemporaryDirectory() as temporary_folder:
            root = Path(temporary_folder) / "task"
            kept = [info for info in archive.infolist() if not plan.drops(info.filename)]
            archive.extractall(root, members=kept)
            for name, data in plan.rewritten.items():
                (root / name).write_bytes(data)
            names_kept = {info.filename for info in kept}
            added: list[tuple[Path, str]] = []
            for module in imported_modules(root):
                cached = Path(importlib.util.cache_from_source(str(module)))
                if cached.as_posix() in names_kept:
                    continue
                py_compile.compile(str(root / module), cfile=str(root / cached), dfile=f"/var/task/{module.as_posix()}",
                                   doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                added.append((root / cached, cached.as_posix()))
            summary = {"runtime": runtime_tag(), "pycs": len(added),
                       "removed": {rule: {"files": len(dropped), "zipped_bytes": sum(archive.getinfo(n).compress_size
                                                                                      for n in dropped)}
                                   for rule, dropped in sorted(plan.dropped.items())},
                       "rewritten": sorted(plan.rewritten)}
            temporary = package.with_suffix(".finishing.tmp")
            with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as out:
                for info in kept:
                    data = plan.rewritten.get(info.filename)
                    out.writestr(info, data if data is not None else archive.read(info.filename))
                for path, name in added:
                    out.write(path, name)
                out.writestr(MARKER, json.dumps(summary, indent=1) + "\n")
    temporary.replace(package)
    return summary


def pyc_count(package: Path) -> int:
    tag = f".{runtime_tag()}.pyc"
    with zipfile.ZipFile(package) as archive:
        return sum(name.endswith(tag) for name in archive.namelist())


def _run_chalice(arguments: list[str], stage: str, project_dir: Path) -> int:
    from chalice.cli import main as chalice_main

    command, rest = arguments[0], arguments[1:]
    sys.argv = ["chalice", "--project-dir", str(project_dir), command, "--stage", stage, *rest]
    try:
        chalice_main()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bytecode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--project-dir", type=Path, default=Path("."))
    parser.add_argument("chalice", nargs=argparse.REMAINDER, help="-- deploy|package [chalice options]")
    args = parser.parse_args(argv)
    chalice_args = args.chalice[1:] if args.chalice[:1] == ["--"] else args.chalice
    project_dir = args.project_dir.resolve()
    package = cached_package(project_dir, args.stage)
    summary = finish(package)
    for rule, removed in summary.get("removed", {}).items():
        print(f"  removed {removed['files']} files, {removed['zipped_bytes'] / 1e6:.2f} MB zipped: {rule}")
    print(f"{package.name}: {package.stat().st_size / 1e6:.1f} MB, {pyc_count(package)} modules with {runtime_tag()} "
          f"bytecode ({summary.get('pycs', 0)} added now)")
    if not chalice_args:
        return 0
    if chalice_args[0] not in ("deploy", "package"):
        parser.error("after --: deploy or package")
    code = _run_chalice(chalice_args, args.stage, project_dir)
    if code == 0 and chalice_args[0] == "package":
        outputs = [arg for arg in chalice_args[1:] if not arg.startswith("-")]
        shipped = Path(outputs[-1]) / "deployment.zip" if outputs else None
        if shipped is not None and shipped.exists() and pyc_count(shipped) == 0:
            print(f"error: {shipped} has no bytecode (the app changed while packaging?)", file=sys.stderr)
            return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
