"""keel's benchmark harness (a maintainer tool; never rendered into services)."""
