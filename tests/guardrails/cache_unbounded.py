# expect: mypy call-arg
# mypy: ignore-errors
"""A cache with no size bound grows until the pod is OOM-killed; keel's Cache needs one."""

from app.core.cache import Cache

SESSIONS: Cache[str] = Cache("sessions", ttl=60)
