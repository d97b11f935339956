"""Stand-ins for the public base images docker-compose.ha.yml and the services' Dockerfiles
name, built from Debian packages on a machine that reaches no image registry."""

# A minimal Debian bookworm made with debootstrap (from the mirror this machine's apt already
# uses) is imported as a base; each stand-in is a small Dockerfile on top of it that installs
# Debian's package and mimics the official image's interface, then is tagged with the official
# name, so compose and the real Dockerfiles build unchanged and nothing is ever pulled. Images
# carry the label `org.sessionlib.standin=true`. Docker's layer cache in the engine's data root
# makes every build after the first one a cache hit.
#
#     python -m deploy.images.standins          # on the engine DOCKER_HOST points at

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("deploy.images")

HERE = Path(__file__).resolve().parent
DOCKERFILES = HERE / "standins"
# bookworm because its python3 is the 3.11 that python:3.11-slim promises.
SUITE = "bookworm"
BASE_TAG = f"sessionlib-standin/debian:{SUITE}"
STANDIN_LABEL = "org.sessionlib.standin=true"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


@dataclass(frozen=True)
class Standin:
    """An official image name and the Dockerfile (in deploy/images/standins/) replacing it."""

    tag: str
    dockerfile: str


# Versions match Debian bookworm's packages, so the stand-in is what the tag says it is.
STANDINS = (
    Standin("python:3.11-slim", "python.Dockerfile"),
    Standin("redis:7.0.15-bookworm", "redis.Dockerfile"),
    Standin("oliver006/redis_exporter:v1.45.0", "redis-exporter.Dockerfile"),
    Standin("prom/prometheus:v2.42.0", "prometheus.Dockerfile"),
)

# Runs `docker ARGS` on the target engine and raises on failure.
DockerRunner = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class AptSource:
    """One deb822 stanza of the host's apt configuration."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    signed_by: str | None

    def render(self) -> str:
        lines = [
            "Types: deb",
            f"URIs: {' '.join(self.uris)}",
            f"Suites: {' '.join(self.suites)}",
            "Components: main",
        ]
        if self.signed_by:
            lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


def _deb822_stanzas(text: str) -> Iterable[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields:
            yield fields


def _one_line_entries(text: str) -> Iterable[dict[str, str]]:
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 4 and words[0] == "deb":
            yield {
                "types": "deb",
                "uris": words[1],
                "suites": words[2],
                "components": " ".join(words[3:]),
            }


def host_debian_sources(
    suite: str = SUITE, places: Sequence[Path] = APT_SOURCES
) -> list[AptSource]:
    """The host's apt entries for Debian `suite` and its -updates/-security companions: the
    mirror the stand-ins install from, so they get the packages the host's apt would."""
    entries: list[dict[str, str]] = []
    for place in places:
        files = sorted(place.iterdir()) if place.is_dir() else [place]
        for path in files:
            if not path.is_file():
                continue
            text = path.read_text(errors="replace")
            if path.suffix == ".sources":
                entries.extend(_deb822_stanzas(text))
            elif path.suffix == ".list":
                entries.extend(_one_line_entries(text))
    # Debian's own suites only: a third-party repository for the same release (suite
    # "bookworm-pgdg", component "stable") has no business in a stand-in.
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    sources = []
    for entry in entries:
        if (
            entry.get("enabled", "yes").lower() == "no"
            or "deb" not in entry.get("types", "").split()
            or "main" not in entry.get("components", "").split()
        ):
            continue
        suites = tuple(s for s in entry.get("suites", "").split() if s in wanted)
        if suites:
            sources.append(AptSource(tuple(entry["uris"].split()), suites, entry.get("signed-by")))
    if not any(suite in s.suites for s in sources):
        where = ", ".join(map(str, places))
        raise RuntimeError(f"no Debian {suite} mirror in the host's apt sources ({where})")
    return sources


def debootstrap_rootfs(target: Path, sources: list[AptSource], suite: str = SUITE) -> None:
    """A minimal Debian `suite` in `target`, with apt pointed at the host's mirrors."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: apt-get install debootstrap")
    mirror = next(s.uris[0] for s in sources if suite in s.suites)
    subprocess.run(
        ["debootstrap", "--variant=minbase", suite, str(target), mirror],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (target / "etc/apt/sources.list").unlink(missing_ok=True)
    (target / "etc/apt/sources.list.d/debian.sources").write_text(
        "\n".join(s.render() for s in sources)
    )
    # As in Debian's official images: package scripts must not start services in a build, and
    # downloaded .debs and package lists do not belong in layers.
    policy = target / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    (target / "etc/apt/apt.conf.d/docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n'
        'APT::Install-Recommends "false";\n'
    )
    # Local CAs the host trusts (a TLS-intercepting proxy in front of PyPI, say) are trusted in
    # the stand-ins too: images that install ca-certificates pick them up from here.
    if LOCAL_CA_DIR.is_dir():
        shutil.copytree(LOCAL_CA_DIR, target / LOCAL_CA_DIR.relative_to("/"), dirs_exist_ok=True)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (target / leftover).glob("*"):
            if item.is_file():
                item.unlink()


def import_rootfs(rootfs: Path, tag: str, env: dict[str, str]) -> None:
    """`tar -C rootfs -c . | docker import - tag`, with the official images' defaults."""
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
    )
    try:
        subprocess.run(
            [
                "docker", "import",
                "--change", 'CMD ["bash"]',
                "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change", "LABEL " + STANDIN_LABEL,
                "-", tag,
            ],
            stdin=tar.stdout,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if tar.returncode != 0:
        raise RuntimeError(f"tar of {rootfs} failed with {tar.returncode}")


def image_exists(docker: DockerRunner, tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def ensure_base(docker: DockerRunner, env: dict[str, str], work_dir: Path) -> float:
    """Import the debootstrapped base unless the engine has it; seconds spent."""
    if image_exists(docker, BASE_TAG):
        return 0.0
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log.info("debootstrap %s into %s (first run only)", SUITE, rootfs)
        debootstrap_rootfs(rootfs, host_debian_sources())
        import_rootfs(rootfs, BASE_TAG, env)
    return time.monotonic() - started


def build_standins(docker: DockerRunner, env: dict[str, str], work_dir: Path) -> dict[str, float]:
    """Make sure every stand-in exists on the engine; seconds spent per image."""
    timings = {BASE_TAG: ensure_base(docker, env, work_dir)}
    for standin in STANDINS:
        started = time.monotonic()
        # --network host: the engine has no bridge, and apt reaches the mirror from the host.
        docker(
            "build", "--network", "host",
            "--build-arg", f"BASE={BASE_TAG}",
            "--label", STANDIN_LABEL,
            "-f", str(DOCKERFILES / standin.dockerfile),
            "-t", standin.tag,
            str(DOCKERFILES),
            timeout=900,
        )  # fmt: skip
        timings[standin.tag] = time.monotonic() - started
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work-dir", type=Path, default=Path(".run/images"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = dict(os.environ)

    def docker(
        *cmd: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *cmd], env=env, capture_output=True, text=True, check=check, timeout=timeout
        )

    for tag, seconds in build_standins(docker, env, args.work_dir).items():
        print(f"{tag:40} {seconds:6.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
