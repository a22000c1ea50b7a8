"""Ask a Ray cluster's GCS, from a process of its own, which Ray and Python it runs:
``python -m runtime.ray_probe HOST:PORT`` prints one JSON line.

A process of its own, because Ray's GCS client blocks for tens of seconds on an address
that does not answer and prints its own C++ warnings meanwhile: the caller
(:func:`runtime.ray_cluster.probe`) bounds it with a timeout and keeps its noise.
"""

from __future__ import annotations

import json
import sys


def main(address: str) -> dict:
    """``{"metadata": {...}}`` (the cluster's Ray and Python versions), or ``{"error":
    "auth" | "no answer", "detail": ...}``."""
    import ray
    from ray._raylet import GcsClient

    try:
        client = GcsClient(address=address)
        raw = client.internal_kv_get(b"CLUSTER_METADATA", namespace=b"cluster", timeout=10)
    except ray.exceptions.AuthenticationError as exc:
        return {"error": "auth", "detail": str(exc).splitlines()[0][:300]}
    except Exception as exc:  # Ray's RpcError and its relatives: the GCS did not answer
        text = str(exc)
        kind = "auth" if "auth" in text.lower() and "token" in text.lower() else "no answer"
        return {"error": kind, "detail": text.splitlines()[0][:300] if text else repr(exc)}
    return {"metadata": json.loads(raw) if raw else {}}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
