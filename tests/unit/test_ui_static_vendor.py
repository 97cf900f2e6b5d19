"""The web UI's vendored npm files (kudig/ui/static/vendor) are the pinned packages' bytes.

preact and htm are committed, like moment.js (docs/packaging.md): SOURCES pins each file's sha256
(checked here, offline), package.json/package-lock.json pin the versions, and hack/verify-moment
checks the files against the tarballs whose sha512 the lock records (needs the npm registry).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import tomllib
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "kudig" / "ui" / "static"
VENDOR = STATIC / "vendor"


class Source(NamedTuple):
    file: str
    package: str
    version: str
    member: str
    sha256: str


def sources() -> list[Source]:
    out = []
    for line in (VENDOR / "SOURCES").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            file, spec, member, digest = line.split()
            package, version = spec.rsplit("@", 1)
            out.append(Source(file, package, version, member, digest.removeprefix("sha256:")))
    return out


def test_vendored_ui_files_have_the_pinned_sha256() -> None:
    entries = sources()
    assert {e.file for e in entries} == {"preact.module.js", "preact.LICENSE", "htm.module.js", "htm.LICENSE"}
    for e in entries:
        digest = hashlib.sha256((VENDOR / e.file).read_bytes()).hexdigest()
        assert digest == e.sha256, (
            f"kudig/ui/static/vendor/{e.file} is not {e.package}@{e.version}'s {e.member} as SOURCES "
            "records; restore it (git restore kudig/ui/static/vendor) or run hack/verify-moment --update"
        )


def test_vendored_ui_packages_are_the_locked_versions() -> None:
    package_json = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    for package in ("preact", "htm"):
        versions = {e.version for e in sources() if e.package == package}
        assert versions == {package_json["dependencies"][package]}, package
        assert versions == {lock["packages"][f"node_modules/{package}"]["version"]}, package


def test_ui_static_files_are_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["kudig"]
    files = [p.relative_to(ROOT / "kudig").as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert "ui/static/index.html" in files and "ui/static/vendor/preact.module.js" in files
    for rel in files:
        # setuptools' globs do not cross directories: ui/static/* is not ui/static/vendor/x
        matching = [g for g in globs if fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/")]
        assert matching, f"{rel} is not shipped in the wheel (pyproject.toml package-data {globs})"


def test_the_app_imports_only_vendored_or_own_modules() -> None:
    # No CDN, no bare specifier (a browser needs an import map for those, and the CSP forbids inline ones).
    for js in STATIC.glob("*.js"):
        for line in js.read_text(encoding="utf-8").splitlines():
            if line.startswith("import ") and " from " in line:
                spec = line.rsplit(" from ", 1)[1].strip().rstrip(";").strip("'\"")
                assert spec.startswith("./"), f"{js.name}: import from {spec!r}"
                assert (STATIC / spec).is_file(), f"{js.name}: {spec} does not exist"
