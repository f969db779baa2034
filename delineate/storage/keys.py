"""Where objects live in the bucket: sources under ``downloads/``, results under ``bundles/``."""


def source_key(file_id: int) -> str:
    return f"downloads/{file_id}.zip"


def bundle_key(job_id: str) -> str:
    return f"bundles/{job_id}.zip"


def parts_prefix(job_id: str) -> str:
    """A bundle written in parts: its result key, the folder of ``part-0001.zip``, …"""
    return f"bundles/{job_id}/"


def part_key(prefix: str, index: int) -> str:
    """Part ``index`` (from 1) of the parted bundle whose result key is ``prefix``."""
    return f"{prefix}part-{index:04d}.zip"
