"""Where objects live in the bucket: sources under ``downloads/``, results under ``bundles/``."""


def source_key(file_id: int) -> str:
    return f"downloads/{file_id}.zip"


def bundle_key(job_id: str) -> str:
    return f"bundles/{job_id}.zip"
