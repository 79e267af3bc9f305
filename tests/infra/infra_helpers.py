"""Helpers of the deployment checks: templates as data, cfn-lint, the stages of .chalice/,
`make package`'s two steps without credentials, and the files the Batch instances' user data
installs."""
from __future__ import annotations

import base64
import email
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHALICE_DIR = ROOT / ".chalice"
TEMPLATE = ROOT / "infra" / "resources.yaml"
MERGE_TEMPLATE = ROOT / "infra" / "chalice-merge.json"
PACKAGED_STAGE = "dev"
DEPLOYED_STAGES = ("dev", "prod")


def load_cfn(path: Path) -> dict[str, Any]:
    """A template as plain data, short-form tags (!Ref, !Sub...) turned into their long form."""
    from cfnlint.api import decode_str

    template, matches = decode_str(path.read_text())
    assert not matches, [str(m) for m in matches]
    return json.loads(json.dumps(template))


def lint(path: Path) -> list[str]:
    """cfn-lint's findings (errors, warnings and informational) for a template file."""
    from cfnlint.api import ManualArgs, lint_file

    return [str(match) for match in lint_file(path, ManualArgs(regions=["us-east-1", "eu-west-1"]))]


def chalice_config() -> dict[str, Any]:
    return json.loads((CHALICE_DIR / "config.json").read_text())


def stage_env(stage: str) -> dict[str, str]:
    return dict(chalice_config()["stages"][stage]["environment_variables"])


def credential_free_env(**extra: str) -> dict[str, str]:
    """The test environment without any AWS credential or endpoint, with a region."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    missing = str(ROOT / ".chalice" / "no-such-aws-file")
    env.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": missing,
                "AWS_SHARED_CREDENTIALS_FILE": missing, "AWS_EC2_METADATA_DISABLED": "true"}, **extra)
    return env


@dataclass(frozen=True)
class Package:
    """What `chalice package --merge-template` produced for a stage."""

    stage: str
    out: Path
    template: dict[str, Any]
    zip_path: Path
    seconds: float
    step_output: str = ""
    package_output: str = ""

    @property
    def zip_bytes(self) -> int:
        return self.zip_path.stat().st_size

    @property
    def unzipped_bytes(self) -> int:
        with zipfile.ZipFile(self.zip_path) as archive:
            return sum(info.file_size for info in archive.infolist())

    def names(self) -> list[str]:
        with zipfile.ZipFile(self.zip_path) as archive:
            return archive.namelist()


# What a copy of the project leaves out: local state, caches, and what Chalice would never read.
COPY_IGNORES = shutil.ignore_patterns(".git", ".venv", "node_modules", ".local", ".hypothesis", ".benchmarks",
                                      ".pytest_cache", "__pycache__", "deployments", "deployed")


def project_copy(target: Path) -> Path:
    """The project as a fresh clone has it. Chalice caches dependencies per hash of requirements
    and app code, so in a tree that others keep editing the cache would rarely hit; packaging a
    copy leaves no 35 MB cache behind and never races another run over it."""
    shutil.copytree(ROOT, target, ignore=COPY_IGNORES)
    return target


def run_package(project: Path, out: Path, stage: str = PACKAGED_STAGE) -> Package:
    """What `make package` does, in a project folder, without credentials: `python -m
    infra.bytecode --stage <stage>` finishes the package where Chalice caches it (the locked
    versions checked, what never runs removed, bytecode added), then a plain `chalice package
    --stage <stage> --merge-template infra/chalice-merge.json <out>` reuses it."""
    started = time.monotonic()
    step = subprocess.run([sys.executable, "-m", "infra.bytecode", "--stage", stage], cwd=project,
                          env=credential_free_env(), capture_output=True, text=True, timeout=280)
    assert step.returncode == 0, (step.stdout + step.stderr)[-4000:]
    command = [sys.executable, "-c", "from chalice.cli import main; main()", "package", "--stage", stage,
               "--merge-template", str(project / "infra" / MERGE_TEMPLATE.name), str(out)]
    done = subprocess.run(command, cwd=project, env=credential_free_env(), capture_output=True, text=True, timeout=280)
    seconds = time.monotonic() - started
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    template = json.loads((out / "sam.json").read_text())
    return Package(stage=stage, out=out, template=template, zip_path=out / "deployment.zip", seconds=seconds,
                   step_output=step.stdout, package_output=done.stdout)


def launch_template_user_data(template: dict[str, Any], resource: str) -> str:
    """A launch template's user data as the template holds it (literal text, base64-encoded by
    CloudFormation)."""
    data = template["Resources"][resource]["Properties"]["LaunchTemplateData"]["UserData"]
    assert set(data) == {"Fn::Base64"}, "the user data is literal text, base64-encoded by CloudFormation"
    return data["Fn::Base64"]


def boot_script(user_data: str) -> str:
    """The one shell part of the user data's MIME multi-part archive."""
    message = email.message_from_string(user_data)
    assert message.is_multipart()
    shells = [part.get_payload() for part in message.walk() if part.get_content_type() == "text/x-shellscript"]
    assert len(shells) == 1
    return shells[0]


_PLAIN = re.compile(r"^cat > (\S+) <<'(\w+)'\n(.*?)^\2$", re.S | re.M)
_COMPRESSED = re.compile(r"^base64 -d <<'(\w+)' \| gunzip > (\S+)\n(.*?)^\1$", re.S | re.M)


def installed_files(user_data: str) -> dict[str, str]:
    """{path: content} of every file the boot script writes: `cat > PATH <<'TAG' ... TAG`, and
    `base64 -d <<'TAG' | gunzip > PATH ... TAG` decoded as the instance decodes it."""
    script = boot_script(user_data)
    files = {path: body for path, _, body in _PLAIN.findall(script)}
    for _, path, blob in _COMPRESSED.findall(script):
        files[path] = gzip.decompress(base64.b64decode(blob)).decode()
    return files


def readable(user_data: str) -> str:
    """The user data with every compressed file shown as the text it decodes to: two zlib builds
    may compress the same text to different bytes, and the text is what an instance installs."""
    def decode(found: re.Match[str]) -> str:
        tag, path, blob = found.groups()
        return f"base64 -d <<'{tag}' | gunzip > {path}\n{gzip.decompress(base64.b64decode(blob)).decode()}{tag}"
    return _COMPRESSED.sub(decode, user_data)
